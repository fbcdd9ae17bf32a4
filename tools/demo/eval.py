"""Evaluates the demo model on held-out questions, twice:

  1. PyTorch: tools/tinygptv/reference.py loading the ORIGINAL files train.py wrote (eva_vit_g.pth,
     blip2_pretrained_flant5xxl.pth, TinyGPT-V_for_Stage4.pth, phi/), greedy decoding;
  2. tinyvlm: `tinyvlm ask --greedy --json` on the converted bundle, same images, same questions.

and prints exact-match accuracy for both (against the scenes' true answers) and their agreement
(same answer text; same token ids). Held-out items are scenes HELDOUT_BASE + 0..n-1 of
tools/demo/scenes.py, one question each; images are written as 112 px PNGs (the model's input
size, so the resize in the preprocessing is the identity on both sides).

    python3 tools/demo/eval.py --orig build/demo --bundle models/demo --tinyvlm build/tinyvlm
    python3 tools/demo/eval.py ... --testdata tests/data/demo --n-test 200
        # also writes 200 held-out questions (two per scene, 100 images) with PyTorch's greedy
        # answers for the end-to-end service test
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import torch
from PIL import Image
from tokenizers import Tokenizer

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tinygptv"))
import model as M  # noqa: E402
import reference as R  # noqa: E402
import scenes  # noqa: E402
import tokenizer as T  # noqa: E402

MAX_NEW = 64


def load_reference(orig: pathlib.Path):
    c = M.CFG
    ref = R.TinyGPTV(orig / "eva_vit_g.pth", orig / "blip2_pretrained_flant5xxl.pth",
                     orig / "TinyGPT-V_for_Stage4.pth", orig / "phi", R.VitCfg(**c["vit"]),
                     R.QfCfg(**c["qformer"]), c["lora"]["r"], c["lora"]["alpha"])
    # reference.py widens every fp16 weight to fp32 at each use; doing it once here (exactly,
    # fp16 -> fp32) changes no number and makes the token-by-token greedy loop ~10x faster
    for d in (ref.vit, ref.blip2, ref.proj, ref.lm):
        for k, v in d.items():
            if v.is_floating_point():
                d[k] = v.float()
    return ref


def cut(text: str) -> str:
    """The answer as tinyvlm prints it: cut at the stop strings, then blanks trimmed."""
    for s in ("###", "Assistant:", "[/INST]"):
        text = text.split(s)[0]
    return text.strip()


def pytorch_answer(ref, tok, path: pathlib.Path, question: str, stops):
    pix = R.preprocess(Image.open(path), M.CFG["vit"]["img_size"])
    segs = R.split_prompt(R.chat_prompt(question), tok)
    ids = ref.greedy(ref.context_embeds(segs, ref.encode_image(pix)), MAX_NEW, stop_ids=stops)
    body = [i for i in ids if i not in stops]
    return cut(tok.decode(body, skip_special_tokens=False)), ids


def tinyvlm_answer(binary, bundle, path, question):
    r = subprocess.run([binary, "ask", "--model", str(bundle), "--image", str(path), "--greedy",
                        "--json", "--max-tokens", str(MAX_NEW), "--threads", "2", question],
                       capture_output=True, text=True, env=dict(os.environ, TINYVLM_LOG="warn"))
    if r.returncode != 0:
        raise RuntimeError(f"tinyvlm ask failed on {path}: {r.stderr.strip()}")
    j = json.loads(r.stdout)
    return j["answer"].strip(), j["tokens"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--orig", default="build/demo", help="train.py's output folder")
    ap.add_argument("--bundle", default="models/demo")
    ap.add_argument("--tinyvlm", default="build/tinyvlm", help="the binary ('' to skip it)")
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--testdata", default="", help="also write --n-test questions (two per scene) with PyTorch's answers here")
    ap.add_argument("--n-test", type=int, default=200)
    args = ap.parse_args()
    torch.set_num_threads(2)

    orig = pathlib.Path(args.orig)
    ref = load_reference(orig)
    tok = Tokenizer.from_file(str(orig / "tokenizer.json"))
    stops = (tok.token_to_id(T.STOP), tok.token_to_id(T.EOT))
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="demo-eval-"))
    rows = run(ref, tok, stops, args, scenes.heldout_items(args.n), tmp)
    report(rows, args.tinyvlm, "held-out questions (one per scene)")
    if args.testdata:
        test_dir = pathlib.Path(args.testdata)
        (test_dir / "img").mkdir(parents=True, exist_ok=True)
        # two questions per scene: half the images, and the service test sees repeats (the
        # embedding cache's hits) as well as misses
        rows = run(ref, tok, stops, args, scenes.heldout_items(args.n_test, per_scene=2),
                   test_dir, per_scene=2)
        report(rows, args.tinyvlm, "test-data questions (two per scene)")
        keep = [{k: r[k] for k in ("file", "seed", "kind", "question", "answer", "pytorch",
                                   "pytorch_tokens")} for r in rows]
        summary = {"about": "held-out demo questions (tools/demo/eval.py), two per image: the "
                            "image file, the scene's true answer, and the PyTorch reference's "
                            "greedy answer and token ids (stop token included) on the original-"
                            "format files; models/demo is their conversion",
                   "bundle": str(args.bundle), "n": len(keep),
                   "pytorch_exact_match": sum(r["pytorch"] == r["answer"] for r in keep),
                   "max_new_tokens": MAX_NEW, "items": keep}
        head = json.dumps({k: v for k, v in summary.items() if k != "items"}, indent=1)[:-2]
        body = ",\n".join("  " + json.dumps(it) for it in keep)    # one item per line
        (test_dir / "items.json").write_text(head + ',\n "items": [\n' + body + "\n ]\n}\n")
        print(f"wrote {test_dir}/items.json and {len(keep) // 2} images")


def run(ref, tok, stops, args, items, img_dir: pathlib.Path, per_scene=1):
    """Renders each item's scene to img_dir/img/NNN.png (NNN = scene number) and answers it with
    PyTorch and, unless --tinyvlm is '', with tinyvlm."""
    (img_dir / "img").mkdir(parents=True, exist_ok=True)
    rows, t0 = [], time.time()
    for i, it in enumerate(items):
        name = f"img/{i // per_scene:03d}.png"
        path = img_dir / name
        if i % per_scene == 0:
            scenes.render(scenes.make_scene(it["seed"])).save(path, optimize=True)
        pa, pids = pytorch_answer(ref, tok, path, it["question"], stops)
        row = dict(it, file=name, pytorch=pa, pytorch_tokens=pids)
        if args.tinyvlm:
            row["tinyvlm"], row["tinyvlm_tokens"] = tinyvlm_answer(args.tinyvlm, args.bundle, path,
                                                                   it["question"])
        rows.append(row)
        if (i + 1) % 100 == 0:
            print(f"  {i + 1}/{len(items)} ({time.time() - t0:.0f}s)", flush=True)
    return rows


def report(rows, with_tinyvlm, title):
    n = len(rows)
    print(f"{title}: {n} (scenes {rows[0]['seed']}..{rows[-1]['seed']})")
    acc_pt = sum(r["pytorch"] == r["answer"] for r in rows) / n
    print(f"PyTorch reference greedy exact match: {acc_pt:.1%}")
    by_kind = {}
    for r in rows:
        k = by_kind.setdefault(r["kind"], [0, 0])
        k[0] += r["pytorch"] == r["answer"]
        k[1] += 1
    print("  per kind: " + ", ".join(f"{k} {a}/{b}" for k, (a, b) in sorted(by_kind.items())))
    for r in rows:
        if r["pytorch"] != r["answer"]:
            print(f"  miss {r['file']} {r['question']!r}: want {r['answer']!r}, got {r['pytorch']!r}")
    if with_tinyvlm:
        acc_tv = sum(r["tinyvlm"] == r["answer"] for r in rows) / n
        agree = sum(r["tinyvlm"] == r["pytorch"] for r in rows) / n
        agree_tok = sum(r["tinyvlm_tokens"] == r["pytorch_tokens"] for r in rows) / n
        print(f"tinyvlm ask --greedy exact match:      {acc_tv:.1%}")
        print(f"agreement tinyvlm vs PyTorch: answers {agree:.1%}, token ids {agree_tok:.1%}")
        for r in rows:
            if r["tinyvlm"] != r["pytorch"]:
                print(f"  differs {r['file']} {r['question']!r}: PyTorch {r['pytorch']!r}, "
                      f"tinyvlm {r['tinyvlm']!r}")


if __name__ == "__main__":
    main()
