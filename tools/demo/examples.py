"""Writes the shipped sample images examples/{sample.png, sample.jpg, four-shapes.png, noisy.jpg}:
hand-picked demo scenes (tools/demo/scenes.py) whose true answers tests/cli/demo.sh checks.
sample.png / sample.jpg stay 320x240 (other tests rely on that size): the square scene is
stretched, and tinyvlm's preprocessing squeezes it back to 112x112.

    python3 tools/demo/examples.py [examples]
"""
import pathlib
import sys

from PIL import Image

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from scenes import Obj, Scene, caption, render  # noqa: E402

NOJIT = ((0, 0, 0),) * 4
EXAMPLES = {
    "sample.png": (Scene(1, (Obj("circle", "red", 0, 1, "big"), Obj("square", "blue", 2, 1, "big")),
                         "gray", NOJIT), (320, 240)),
    "sample.jpg": (Scene(2, (Obj("star", "yellow", 1, 0, "big"), Obj("triangle", "green", 3, 2, "big"),
                             Obj("cross", "purple", 0, 3, "small")), "black", NOJIT), (320, 240)),
    "four-shapes.png": (Scene(3, (Obj("circle", "orange", 1, 0, "small"), Obj("star", "cyan", 3, 0, "big"),
                                  Obj("circle", "white", 0, 2, "big"),
                                  Obj("triangle", "red", 2, 3, "small")), "noisy", NOJIT), (224, 224)),
    "noisy.jpg": (Scene(4, (Obj("cross", "blue", 1, 1, "big"), Obj("square", "yellow", 2, 2, "small")),
                        "noisy", NOJIT), (224, 224)),
}


def main(out: pathlib.Path):
    out.mkdir(parents=True, exist_ok=True)
    for name, (scene, size) in EXAMPLES.items():
        img = render(scene, 448).resize(size, Image.BICUBIC)
        img.save(out / name, **({"quality": 92} if name.endswith(".jpg") else {}))
        print(f"{name}: {caption(scene)}")


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "examples"))
