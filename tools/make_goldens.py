#!/usr/bin/env python3
"""Writes the reference files under tests/data/ from the real Python libraries (HF tokenizers,
Pillow, safetensors, torch.save). Needed only to regenerate goldens, never to build or test.

    pip install torch transformers tokenizers safetensors pillow numpy
    python3 tools/make_goldens.py            # all
    python3 tools/make_goldens.py image pth  # some

Each tools/goldens/<name>.py has main(out_dir) writing into tests/data/<name>/; all are seeded,
so a rerun rewrites the same files."""
import importlib
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))


def main(argv):
    names = argv or sorted(p.stem for p in (ROOT / "tools" / "goldens").glob("*.py")
                           if not p.stem.startswith("_"))
    for name in names:
        out = ROOT / "tests" / "data" / name
        out.mkdir(parents=True, exist_ok=True)
        print(f"goldens: {name} -> {out.relative_to(ROOT)}", flush=True)
        importlib.import_module(f"goldens.{name}").main(out)


if __name__ == "__main__":
    main(sys.argv[1:])
