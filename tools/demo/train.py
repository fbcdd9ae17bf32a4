"""Trains the demo model (tools/demo/model.py) on synthetic scenes (tools/demo/scenes.py) and
writes it in TinyGPT-V's original formats, ready for `tinyvlm convert`.

Stages (as the TinyGPT-V paper's, with a stage 0 because no pretrained weights exist):
  0  "pretraining": ViT, ln_vision, Q-Former, projections and the Phi base weights, all trained
     together (q/k LayerNorm and post-attention RMSNorm weights held at 1: the base Phi folder
     has none, as Phi-2's has none). These become eva_vit_g.pth, blip2_pretrained_flant5xxl.pth
     and the Phi folder.
  1  the projections (llama_proj, llama_proj2) are initialised afresh and trained alone, with
     ViT, Q-Former and Phi frozen (TinyGPT-V stage 1).
  2  LoRA (query_key_value, dense; A random, B zero) + the norm weights (input, q/k, post,
     final) + the projections (TinyGPT-V stages 2-4). Saved as TinyGPT-V_for_Stage4.pth.

Seeded: on the CPU the same command gives the same files; on a GPU, reruns differ in the last
bits (cuDNN/cuBLAS reductions) and so land on slightly different weights of the same accuracy.

    python3 tools/demo/train.py --out build/demo --device cuda --workers 14   # H100: 4.5 minutes
    nice -n 10 python3 tools/demo/train.py --out build/demo                   # CPU: see README

The committed models/demo was made with the first line (tools/demo/train-h100.log). On the
shared 2-core development machine one step takes 7-14 s, so the 7600 steps take about a day:
this recipe needs a GPU (see tools/demo/README.md).
"""
from __future__ import annotations

import argparse
import math
import pathlib
import random
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tinygptv"))
import model as M  # noqa: E402
import scenes  # noqa: E402
import tokenizer as T  # noqa: E402
from reference import MEAN, STD  # noqa: E402

# ----------------------------------------------------------------------------------------------
# data


class Encoder:
    """Token ids for the pieces of a training sequence (cached: the texts repeat a lot)."""

    def __init__(self, tok):
        self.tok = tok
        self.cache = {}
        pre, post = T.TEMPLATE.split("<ImageHere>")
        self.prefix = self.ids(pre)
        self.post_fmt = post            # "</Img> {} [/INST]"
        self.stop = tok.token_to_id(T.STOP)

    def ids(self, text):
        r = self.cache.get(text)
        if r is None:
            r = self.tok.encode(text, add_special_tokens=False).ids
            self.cache[text] = r
        return r

    def prompt_mid(self, question):
        return self.ids(self.post_fmt.format(question))

    def target(self, answer):
        return self.ids(" " + answer) + [self.stop]


def pixels_of(images) -> torch.Tensor:
    """PIL images already at the model size -> normalised (N,3,S,S), as reference.preprocess."""
    x = torch.from_numpy(np.stack([np.asarray(im, dtype=np.uint8) for im in images]))
    x = x.permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std


def make_batch(enc: Encoder, first_scene: int, n_images: int, per_image: int):
    """Scenes first_scene .. +n_images of the train split, per_image questions each.
    Returns pixels (n,3,S,S), ids (n*k, T) (image slots hold 0), labels (n*k, T) (-100 = no loss)."""
    q = M.CFG["qformer"]["queries"]
    images, seqs = [], []
    for i in range(first_scene, first_scene + n_images):
        seed = scenes.scene_seed("train", i)
        sc = scenes.make_scene(seed)
        images.append(scenes.render(sc, scenes.MODEL_SIZE))
        rng = random.Random(seed * 7 + 3)
        for _ in range(per_image):
            _, question, answer = scenes.sample_qa(sc, rng)
            head = enc.prefix + [0] * q + enc.prompt_mid(question)
            seqs.append((head, enc.target(answer)))
    t = max(len(h) + len(a) for h, a in seqs) - 1
    ids = torch.zeros(len(seqs), t, dtype=torch.long)
    labels = torch.full((len(seqs), t), -100, dtype=torch.long)
    for j, (head, tgt) in enumerate(seqs):
        full = head + tgt
        ids[j, : len(full) - 1] = torch.tensor(full[:-1])
        labels[j, len(head) - 1: len(full) - 1] = torch.tensor(tgt)
    return pixels_of(images), ids, labels


def embed_with_image(model: M.Demo, ids, img_embeds, per_image, p0):
    """Token embeddings with the image slots [p0, p0+queries) replaced by the image embeddings."""
    e = model.phi.embed(ids)
    img = img_embeds.repeat_interleave(per_image, dim=0)
    return torch.cat([e[:, :p0], img, e[:, p0 + img.shape[1]:]], dim=1)


# ----------------------------------------------------------------------------------------------
# greedy decoding with the training modules (batched; right padding, full recomputation)

@torch.no_grad()
def greedy_batch(model, enc, images, questions, device, max_new=60):
    q = M.CFG["qformer"]["queries"]
    p0 = len(enc.prefix)
    heads = [enc.prefix + [0] * q + enc.prompt_mid(x) for x in questions]
    n = len(heads)
    lens = torch.tensor([len(h) for h in heads])
    ids = torch.zeros(n, int(lens.max()) + max_new, dtype=torch.long)
    for j, h in enumerate(heads):
        ids[j, : len(h)] = torch.tensor(h)
    ids, lens = ids.to(device), lens.to(device)
    img = model.vision(pixels_of(images).to(device))
    out = [[] for _ in range(n)]
    done = torch.zeros(n, dtype=torch.bool, device=device)
    for _ in range(max_new):
        t = int(lens.max())
        logits = model.phi(embed_with_image(model, ids[:, :t], img, 1, p0))
        nxt = logits[torch.arange(n, device=device), lens - 1].argmax(-1)
        for j in range(n):
            if not done[j]:
                out[j].append(int(nxt[j]))
        done |= nxt == enc.stop
        if bool(done.all()):
            break
        ids[torch.arange(n, device=device), lens] = nxt
        lens = lens + (~done).long()
    return out


def answer_text(tok, stop, ids):
    if stop in ids:
        ids = ids[: ids.index(stop)]
    return tok.decode(ids).strip()


def evaluate(model, enc, tok, items, device, chunk=100):
    """Exact-match accuracy (and per kind) of greedy answers on held-out items."""
    model.eval()
    items = sorted(items, key=lambda it: it["kind"])     # similar lengths in one chunk
    right, per_kind = 0, {}
    for s in range(0, len(items), chunk):
        part = items[s: s + chunk]
        imgs = [scenes.render(scenes.make_scene(it["seed"])) for it in part]
        outs = greedy_batch(model, enc, imgs, [it["question"] for it in part], device)
        for it, o in zip(part, outs):
            ok = answer_text(tok, enc.stop, o) == it["answer"]
            right += ok
            k = per_kind.setdefault(it["kind"], [0, 0])
            k[0] += ok
            k[1] += 1
    model.train()
    return right / len(items), {k: f"{a}/{b}" for k, (a, b) in sorted(per_kind.items())}


# ----------------------------------------------------------------------------------------------
# training

def trainable(model: M.Demo, stage: int):
    for p in model.parameters():
        p.requires_grad_(False)
    params = []
    if stage == 0:
        for name, p in model.named_parameters():
            if not name.endswith(("q_norm", "k_norm", "post_norm")) and "lora_" not in name:
                params.append(p)
    else:
        params += list(model.vision.proj1.parameters()) + list(model.vision.proj2.parameters())
        if stage == 2:
            for layer in model.phi.layers:
                params += [layer.qkv.lora_A, layer.qkv.lora_B, layer.dense.lora_A,
                           layer.dense.lora_B, layer.q_norm, layer.k_norm, layer.post_norm,
                           layer.input_layernorm.weight]
            params.append(model.phi.final_layernorm.weight)
    for p in params:
        p.requires_grad_(True)
    return params


_WORKER_ENC = None


def _worker_init():
    global _WORKER_ENC
    torch.set_num_threads(1)
    _WORKER_ENC = Encoder(T.make_tokenizer())


def _worker_batch(job):
    return make_batch(_WORKER_ENC, *job)


def batches(enc, args, first_scene, steps):
    """The stage's batches in order; with --workers N they are made by N processes ahead of use
    (a batch depends only on its scene numbers, so the result is the same)."""
    jobs = [(first_scene + s * args.images, args.images, args.per_image) for s in range(steps)]
    if args.workers <= 0:
        for j in jobs:
            yield make_batch(enc, *j)
        return
    import multiprocessing as mp
    with mp.get_context("fork").Pool(args.workers, initializer=_worker_init) as pool:
        yield from pool.imap(_worker_batch, jobs, chunksize=4)


def run_stage(model, enc, stage, steps, lr, args, first_scene, log):
    params = trainable(model, stage)
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.98), weight_decay=0.01 if stage == 0 else 0.0)
    warm = max(1, steps // 20)
    p0 = len(enc.prefix)
    t0 = time.time()
    for step, (pix, ids, labels) in enumerate(batches(enc, args, first_scene, steps)):
        f = (step + 1) / warm if step < warm else 0.5 * (1 + math.cos(math.pi * (step - warm) / (steps - warm)))
        for g in opt.param_groups:
            g["lr"] = lr * max(f, 0.02)
        pix, ids, labels = pix.to(args.device), ids.to(args.device), labels.to(args.device)
        logits = model.phi(embed_with_image(model, ids, model.vision(pix), args.per_image, p0))
        loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % 50 == 0 or step == steps - 1:
            log(f"stage {stage} step {step}/{steps} loss {loss.item():.4f} "
                f"lr {opt.param_groups[0]['lr']:.2e} {time.time() - t0:.0f}s")
    return opt, first_scene + steps * args.images


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="build/demo", help="folder for the original-format files")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=0, help="processes making batches (0: none)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--images", type=int, default=32, help="images per step")
    ap.add_argument("--per-image", type=int, default=8, help="questions per image per step")
    ap.add_argument("--steps", type=int, nargs=3, default=[6000, 400, 1200], metavar=("S0", "S1", "S2"))
    ap.add_argument("--lr", type=float, nargs=3, default=[5e-4, 1e-3, 1e-3])
    ap.add_argument("--eval", type=int, default=300, help="held-out questions checked after each stage")
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    logf = open(out / "train.log", "w")

    def log(msg):
        print(msg, flush=True)
        logf.write(msg + "\n")
        logf.flush()

    tok = T.make_tokenizer()
    tok.save(str(out / "tokenizer.json"))
    n_tok = tok.get_vocab_size(with_added_tokens=True)
    vocab = T.padded_vocab(n_tok)
    enc = Encoder(tok)
    model = M.Demo(vocab).to(args.device)
    with torch.no_grad():      # rows past the tokenizer are never chosen: zero row, bias -30
        model.phi.lm_head.weight[n_tok:] = 0
        model.phi.lm_head.bias[n_tok:] = -30
    items = scenes.heldout_items(args.eval, first=10_000)    # not the ones eval.py reports
    log(f"demo: vocab {n_tok} (padded {vocab}), params {sum(p.numel() for p in model.parameters())}, "
        f"device {args.device}, steps {args.steps}")

    t0 = time.time()
    _, nxt = run_stage(model, enc, 0, args.steps[0], args.lr[0], args, 0, log)
    pad_rows(model, n_tok)
    log(f"after stage 0: held-out accuracy {evaluate(model, enc, tok, items, args.device)}")
    gen = torch.Generator().manual_seed(args.seed + 1)
    with torch.no_grad():
        for lin in (model.vision.proj1, model.vision.proj2):
            lin.weight.copy_(torch.randn(lin.weight.shape, generator=gen) * lin.weight.shape[1] ** -0.5)
            lin.bias.zero_()
    _, nxt = run_stage(model, enc, 1, args.steps[1], args.lr[1], args, nxt, log)
    log(f"after stage 1: held-out accuracy {evaluate(model, enc, tok, items, args.device)}")
    model.add_lora(gen)
    model.to(args.device)
    opt, nxt = run_stage(model, enc, 2, args.steps[2], args.lr[2], args, nxt, log)
    acc = evaluate(model, enc, tok, items, args.device)
    log(f"after stage 2: held-out accuracy {acc}; {time.time() - t0:.0f}s in all")

    model.to("cpu")
    M.export(model, out, out / "tokenizer.json", tok.token_to_id(T.EOT), opt.state_dict(), epoch=3)
    check_export(model, out, enc, log)
    log(f"wrote {out}/{{eva_vit_g.pth, blip2_pretrained_flant5xxl.pth, TinyGPT-V_for_Stage4.pth, phi/}}")


def pad_rows(model, n_tok):
    with torch.no_grad():
        model.phi.embed.weight[n_tok:] = 0
        model.phi.lm_head.weight[n_tok:] = 0
        model.phi.lm_head.bias[n_tok:] = -30


def check_export(model, out, enc, log):
    """reference.py on the written files must give the training modules' logits (up to the fp16
    rounding of the ViT and Phi base files)."""
    import reference as R
    c = M.CFG
    ref = R.TinyGPTV(out / "eva_vit_g.pth", out / "blip2_pretrained_flant5xxl.pth",
                     out / "TinyGPT-V_for_Stage4.pth", out / "phi",
                     R.VitCfg(**{k: v for k, v in c["vit"].items()}),
                     R.QfCfg(**c["qformer"]), c["lora"]["r"], c["lora"]["alpha"])
    sc = scenes.make_scene(scenes.scene_seed("heldout", 5))
    pix = R.preprocess(scenes.render(sc), c["vit"]["img_size"])
    question = "[caption] Describe this image."
    segs = [enc.prefix, enc.prompt_mid(question)]
    with torch.no_grad():
        a = ref.logits(ref.context_embeds(segs, ref.encode_image(pix)))
        e = model.phi.embed(torch.tensor(segs[0] + [0] * c["qformer"]["queries"] + segs[1])[None])
        img = model.vision(pix)
        p0 = len(segs[0])
        b = model.phi(torch.cat([e[:, :p0], img, e[:, p0 + img.shape[1]:]], dim=1))
    diff = (a - b).abs().max().item()
    log(f"export check: reference.py vs training modules, max |logit diff| {diff:.4f} "
        f"(fp16 files), argmax agree {(a.argmax(-1) == b.argmax(-1)).float().mean().item():.3f}")
    if diff > 0.5:
        raise RuntimeError("exported files do not reproduce the model")


if __name__ == "__main__":
    main()
