#!/usr/bin/env python3
"""bench_cuda_torch — PyTorch eager fp16 on the same shapes as bench/bench_cuda.c, for the
side-by-side figures of issue 5 (run by tests/gpu/run.sh --bench on a GPU machine).

  - memory bandwidth: a 1 GiB device-to-device copy (bytes read + written);
  - the TinyGPT-V image encoder as the original code runs it: EVA ViT-g/14 at 448 (attention as
    q@k^T, softmax, @v, as EVA's Attention does), ln_vision, a BERT-shaped Q-Former (12 layers,
    768, cross-attention every 2nd), projections 768 -> 4096 -> 2560; images/s at batch 1/8/32;
  - Phi-2 (HF transformers PhiForCausalLM, random weights, fp16, SDPA attention): decode tok/s
    at batch 1, 8, 32 after a 64-token prompt;
  - peak GPU memory of each side (vision batch 1; LM with 8 sequences of 2048).
Random weights, seeded; no files."""
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

torch.manual_seed(0)
dev = "cuda"
H = torch.float16


def sync_time(fn, reps):
    fn()
    torch.cuda.synchronize()
    best = 1e30
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best


def bandwidth():
    a = torch.empty(1 << 30, dtype=torch.uint8, device=dev)
    b = torch.empty_like(a)
    t = sync_time(lambda: b.copy_(a), 10)
    return 2 * a.numel() / t


class EvaBlock(nn.Module):
    def __init__(s, W=1408, heads=16, M=6144):
        super().__init__()
        s.h, s.dh = heads, W // heads
        s.norm1, s.norm2 = nn.LayerNorm(W, eps=1e-6), nn.LayerNorm(W, eps=1e-6)
        s.qkv = nn.Linear(W, 3 * W, bias=False)
        s.q_bias, s.v_bias = nn.Parameter(torch.randn(W) * .02), nn.Parameter(torch.randn(W) * .02)
        s.proj = nn.Linear(W, W)
        s.fc1, s.fc2 = nn.Linear(W, M), nn.Linear(M, W)

    def forward(s, x):
        B, T, W = x.shape
        bias = torch.cat((s.q_bias, torch.zeros_like(s.v_bias), s.v_bias))
        qkv = F.linear(s.norm1(x), s.qkv.weight, bias).reshape(B, T, 3, s.h, s.dh).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * s.dh ** -0.5, qkv[1], qkv[2]
        a = (q @ k.transpose(-2, -1)).softmax(dim=-1)
        x = x + s.proj((a @ v).transpose(1, 2).reshape(B, T, W))
        return x + s.fc2(F.gelu(s.fc1(s.norm2(x))))


class QLayer(nn.Module):
    def __init__(s, D=768, W=1408, F_=3072, heads=12, cross=True):
        super().__init__()
        s.h = heads
        s.qkv, s.out, s.ln = nn.Linear(D, 3 * D), nn.Linear(D, D), nn.LayerNorm(D, eps=1e-12)
        s.cross = cross
        if cross:
            s.cq, s.ckv, s.cout = nn.Linear(D, D), nn.Linear(W, 2 * D), nn.Linear(D, D)
            s.cln = nn.LayerNorm(D, eps=1e-12)
        s.fc1, s.fc2, s.fln = nn.Linear(D, F_), nn.Linear(F_, D), nn.LayerNorm(D, eps=1e-12)

    def attn(s, q, k, v):
        B, Tq, D = q.shape
        sp = lambda t: t.reshape(B, t.shape[1], s.h, D // s.h).transpose(1, 2)
        a = (sp(q) @ sp(k).transpose(-2, -1) * (D // s.h) ** -0.5).softmax(-1) @ sp(v)
        return a.transpose(1, 2).reshape(B, Tq, D)

    def forward(s, q, img):
        a = s.qkv(q).chunk(3, -1)
        q = s.ln(q + s.out(s.attn(*a)))
        if s.cross:
            k, v = s.ckv(img).chunk(2, -1)
            q = s.cln(q + s.cout(s.attn(s.cq(q), k, v)))
        return s.fln(q + s.fc2(F.gelu(s.fc1(q))))


class Encoder(nn.Module):
    def __init__(s, S=448, P=14, W=1408, layers=39):
        super().__init__()
        G = S // P
        s.patch = nn.Conv2d(3, W, P, P)
        s.cls = nn.Parameter(torch.randn(1, 1, W) * .02)
        s.pos = nn.Parameter(torch.randn(1, 1 + G * G, W) * .02)
        s.blocks = nn.ModuleList(EvaBlock() for _ in range(layers))
        s.ln_vision = nn.LayerNorm(W)
        s.query = nn.Parameter(torch.randn(1, 32, 768) * .02)
        s.qln = nn.LayerNorm(768, eps=1e-12)
        s.qlayers = nn.ModuleList(QLayer(cross=i % 2 == 0) for i in range(12))
        s.p0, s.p1 = nn.Linear(768, 4096), nn.Linear(4096, 2560)

    def forward(s, px):
        x = s.patch(px).flatten(2).transpose(1, 2)
        x = torch.cat((s.cls.expand(x.shape[0], -1, -1), x), 1) + s.pos
        for b in s.blocks:
            x = b(x)
        img = s.ln_vision(x)
        q = s.qln(s.query.expand(x.shape[0], -1, -1))
        for l in s.qlayers:
            q = l(q, img)
        return s.p1(s.p0(q))


def bench_vision():
    enc = Encoder().to(dev, H).eval()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    with torch.no_grad():
        enc(torch.randn(1, 3, 448, 448, device=dev, dtype=H))
        torch.cuda.synchronize()
        print("torch vision f16 batch 1: peak GPU memory %.2f GB (weights %.2f GB)"
              % (torch.cuda.max_memory_allocated() / 1e9, base / 1e9))
        for B in (1, 8, 32):
            px = torch.randn(B, 3, 448, 448, device=dev, dtype=H)
            t = sync_time(lambda: enc(px), 6 if B < 32 else 3)
            print("torch vision ViT-g 448px f16 batch %2d: %.2f ms/batch, %.1f images/s" % (B, t * 1e3, B / t))
    del enc
    torch.cuda.empty_cache()


def bench_phi():
    from transformers import PhiConfig, PhiForCausalLM
    cfg = PhiConfig(vocab_size=51200, hidden_size=2560, intermediate_size=10240, num_hidden_layers=32,
                    num_attention_heads=32, partial_rotary_factor=0.4, max_position_embeddings=2048,
                    attn_implementation="sdpa")
    torch.set_default_dtype(H)
    with torch.device(dev):
        model = PhiForCausalLM(cfg).eval()
    torch.set_default_dtype(torch.float32)
    wbytes = sum(p.numel() * p.element_size() for p in model.parameters())
    print("torch Phi-2 f16: %.2f GB of weights" % (wbytes / 1e9))
    with torch.no_grad():
        for B in (1, 8, 32):
            ids = torch.randint(0, 51200, (B, 64), device=dev)
            out = model(input_ids=ids, use_cache=True)
            past, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
            steps = 32
            for _ in range(3):   # warm-up
                out = model(input_ids=tok, past_key_values=past, use_cache=True)
                past = out.past_key_values
            torch.cuda.synchronize()
            t = time.perf_counter()
            for _ in range(steps):
                out = model(input_ids=tok, past_key_values=past, use_cache=True)
                past = out.past_key_values
            torch.cuda.synchronize()
            r = B * steps / (time.perf_counter() - t)
            print("torch Phi-2 f16 decode batch %2d: %.1f tok/s" % (B, r))
            del past, out
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        ids = torch.randint(0, 51200, (8, 2048), device=dev)
        out = model.model(input_ids=ids, use_cache=True)   # KV cache of 8 x 2048, no logits
        torch.cuda.synchronize()
        print("torch LM f16 with 8 seqs x 2048 cached: peak GPU memory %.2f GB"
              % (torch.cuda.max_memory_allocated() / 1e9))


if __name__ == "__main__":
    print("torch %s on %s" % (torch.__version__, torch.cuda.get_device_name()))
    print("torch bandwidth (1 GiB copy, read + write): %.0f GB/s" % (bandwidth() / 1e9))
    bench_phi()
    bench_vision()
