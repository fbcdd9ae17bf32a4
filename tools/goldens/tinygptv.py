"""TinyGPT-V goldens: the tiny random model in the original formats and the PyTorch reference's
outputs (see tools/tinygptv/README.md)."""
from tinygptv import make_goldens


def main(out):
    make_goldens.main(out)
