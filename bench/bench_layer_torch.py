#!/usr/bin/env python3
"""bench_layer_torch -- the ops of bench_layer.c (one EVA ViT-g block, f32, T tokens) in
PyTorch at the same thread count, each timed as the best of its repetitions: LN, the four
linears (F.linear, i.e. MKL/oneDNN), attention both ways HF runs it (fused
scaled_dot_product_attention, and the eager q.k^T, softmax, .v of TinyGPT-V's eva_vit.py),
exact-erf GELU, residual add. Side by side with bench_layer it shows where the encoders differ.

Usage: python3 bench/bench_layer_torch.py [--threads 2] [--tokens 1025] [--reps 3]
"""
import argparse
import time

WIDTH, HEADS, HEAD_DIM, MLP, LAYERS = 1408, 16, 88, 6144, 39


def best_ms(fn, reps):
    fn()  # warm-up: first-call allocations and library dispatch
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best * 1e3


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=1025)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(a.threads)
    T, W, M, H, D = a.tokens, WIDTH, MLP, HEADS, HEAD_DIM
    g = torch.Generator().manual_seed(0)

    def rnd(*shape, scale=1.0):
        return (torch.rand(*shape, generator=g) * 2 - 1) * scale

    x, h, mlp = rnd(T, W), rnd(T, W), rnd(T, M)
    wqkv, wproj = rnd(3 * W, W, scale=0.03), rnd(W, W, scale=0.03)
    w1, w2 = rnd(M, W, scale=0.03), rnd(W, M, scale=0.03)
    bqkv, bw, b1 = rnd(3 * W, scale=0.1), rnd(W, scale=0.1), rnd(M, scale=0.1)
    lnw, lnb = rnd(W), rnd(W)
    q, k, v = (rnd(1, H, T, D) for _ in range(3))
    ops = [
        ("ln", lambda: F.layer_norm(x, (W,), lnw, lnb, 1e-6), 2),
        ("qkv", lambda: F.linear(h, wqkv, bqkv), 1),
        ("attn-sdpa", lambda: F.scaled_dot_product_attention(q, k, v), 0),
        ("attn-eager", lambda: torch.softmax((q * D ** -0.5) @ k.transpose(-1, -2), -1) @ v, 0),
        ("proj", lambda: F.linear(h, wproj, bw), 1),
        ("add", lambda: x + h, 2),
        ("fc1", lambda: F.linear(h, w1, b1), 1),
        ("gelu", lambda: F.gelu(mlp), 1),
        ("fc2", lambda: F.linear(mlp, w2, bw), 1),
    ]
    print(f"bench_layer_torch: ViT-g block, T = {T}, f32, torch {torch.__version__}, "
          f"{a.threads} threads, best of {a.reps} per op")
    total = {"sdpa": 0.0, "eager": 0.0}
    with torch.no_grad():
        for name, fn, times in ops:
            ms = best_ms(fn, a.reps)
            print(f"{name:<11} {ms:8.2f} ms" + (f"  (x{times} per layer)" if times > 1 else ""))
            for path in total:
                if name.startswith("attn-"):
                    if name.endswith(path):
                        total[path] += ms
                else:
                    total[path] += ms * times
    for path, ms in total.items():
        print(f"layer, {path:<5} {ms:8.2f} ms  (x {LAYERS} layers = {ms * LAYERS / 1e3:.2f} s)")


if __name__ == "__main__":
    main()
