"""Seeded synthetic scenes and their questions for the demo model.

A scene is 1-4 shapes (circle, square, triangle, star, cross) of distinct colours (8 colours),
each in its own cell of a 4x4 grid, small or big, on a plain (black, gray) or noisy background.
Everything the questions ask is a function of those discrete choices, so exact-match answers are
learnable: colour, shape, count, position (left/right, top/bottom), yes/no, a `[caption]`
description, `[refer]` boxes and `[identify]` in TinyGPT-V / MiniGPT-v2's `{<x1><y1><x2><y2>}`
format (integers on a 0-100 grid of the image size).

Images are drawn at 4x the model's 112 px and shrunk with PIL's bicubic (antialiased edges);
`render(scene, size)` gives any size (the examples use 224 or more; tinyvlm's preprocessing
shrinks them to 112 exactly as training saw them).

Splits: scene i of split "train" comes from seed TRAIN_BASE + i, of "heldout" from
HELDOUT_BASE + i. The seed ranges never meet, so held-out scenes are never trained on.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

MODEL_SIZE = 112          # the demo model's input resolution
GRID = 4                  # 4x4 cells
DRAW = 448                # drawing canvas (4x supersampling of 112)
TRAIN_BASE = 1_000_000
HELDOUT_BASE = 900_000_000

COLOURS = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (50, 90, 235), "yellow": (240, 220, 40),
    "purple": (150, 60, 200), "orange": (250, 140, 30), "white": (245, 245, 245),
    "cyan": (40, 210, 220),
}
SHAPES = ["circle", "square", "triangle", "star", "cross"]
PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles", "star": "stars",
          "cross": "crosses"}
SIZES = {"small": 0.25, "big": 0.40}      # half-size as a fraction of the cell
BACKGROUNDS = ["black", "gray", "noisy"]
NUMBERS = ["zero", "one", "two", "three", "four"]


@dataclass(frozen=True)
class Obj:
    shape: str
    colour: str
    col: int      # 0..3 left to right
    row: int      # 0..3 top to bottom
    size: str

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"

    @property
    def horizontal(self) -> str:
        return "left" if self.col < GRID // 2 else "right"

    @property
    def vertical(self) -> str:
        return "top" if self.row < GRID // 2 else "bottom"

    @property
    def where(self) -> str:
        return f"{self.vertical} {self.horizontal}"


@dataclass(frozen=True)
class Scene:
    seed: int
    objects: tuple          # of Obj, in reading order (row, then column)
    background: str
    jitter: tuple           # per-object colour jitter (r,g,b) offsets, for rendering only


def make_scene(seed: int) -> Scene:
    rng = random.Random(seed)
    n = rng.randint(1, 4)
    cells = rng.sample(range(GRID * GRID), n)
    colours = rng.sample(sorted(COLOURS), n)
    objs = []
    for cell, colour in zip(cells, colours):
        objs.append(Obj(rng.choice(SHAPES), colour, cell % GRID, cell // GRID,
                        rng.choice(sorted(SIZES))))
    objs.sort(key=lambda o: (o.row, o.col))
    jitter = tuple(tuple(rng.randint(-15, 15) for _ in range(3)) for _ in objs)
    return Scene(seed, tuple(objs), rng.choice(BACKGROUNDS), jitter)


def scene_seed(split: str, i: int) -> int:
    return (TRAIN_BASE if split == "train" else HELDOUT_BASE) + i


# ----------------------------------------------------------------------------------------------
# geometry: every shape's outline in units of the canvas, and its box on the 0-100 grid

def _outline(o: Obj, canvas: int):
    """('ellipse', bbox) or ('polygon', points) in canvas pixels."""
    cell = canvas / GRID
    cx, cy = (o.col + 0.5) * cell, (o.row + 0.5) * cell
    h = SIZES[o.size] * cell
    if o.shape == "circle":
        return "ellipse", [(cx - h, cy - h), (cx + h, cy + h)]
    if o.shape == "square":
        return "polygon", [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if o.shape == "triangle":
        return "polygon", [(cx, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if o.shape == "star":
        pts = []
        for k in range(10):
            r = h if k % 2 == 0 else 0.45 * h
            a = -math.pi / 2 + k * math.pi / 5
            pts.append((cx + r * math.cos(a), cy + r * math.sin(a)))
        return "polygon", pts
    if o.shape == "cross":
        w = 0.35 * h
        pts = [(-w, -h), (w, -h), (w, -w), (h, -w), (h, w), (w, w), (w, h), (-w, h), (-w, w),
               (-h, w), (-h, -w), (-w, -w)]
        return "polygon", [(cx + x, cy + y) for x, y in pts]
    raise ValueError(o.shape)


def box(o: Obj) -> tuple:
    """Tight box (x1, y1, x2, y2) as integers 0..100 of the image size."""
    kind, pts = _outline(o, 1.0)
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    return tuple(int(round(100 * v)) for v in (min(xs), min(ys), max(xs), max(ys)))


def box_text(b) -> str:
    return "{" + "".join(f"<{v}>" for v in b) + "}"


# ----------------------------------------------------------------------------------------------
# rendering

def render(scene: Scene, size: int = MODEL_SIZE) -> Image.Image:
    """RGB image of `size` px: drawn on a 448 canvas, shrunk with PIL's bicubic (antialiased)."""
    rng = np.random.default_rng(scene.seed)
    if scene.background == "black":
        base = np.full((DRAW, DRAW, 3), rng.integers(5, 30), dtype=np.float32)
    elif scene.background == "gray":
        base = np.full((DRAW, DRAW, 3), rng.integers(95, 130), dtype=np.float32)
    else:   # noise at 1/4 resolution so that it survives the shrink to 112 px
        g = rng.integers(40, 100)
        small = rng.normal(g, 35.0, size=(DRAW // 4, DRAW // 4, 3))
        base = np.repeat(np.repeat(small, 4, axis=0), 4, axis=1)
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    for o, jit in zip(scene.objects, scene.jitter):
        fill = tuple(int(min(255, max(0, c + j))) for c, j in zip(COLOURS[o.colour], jit))
        kind, pts = _outline(o, DRAW)
        if kind == "ellipse":
            d.ellipse(pts, fill=fill)
        else:
            d.polygon(pts, fill=fill)
    return img.resize((size, size), Image.BICUBIC) if size != DRAW else img


# ----------------------------------------------------------------------------------------------
# questions and answers (answers are lower case; the model is trained to end them with '###')

def _join(parts):
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def caption(scene: Scene) -> str:
    parts = [f"a {o.size} {o.colour} {o.shape} at the {o.where}" for o in scene.objects]
    return f"{_join(parts)} on a {scene.background} background"


def _unique_shapes(scene):
    shapes = [o.shape for o in scene.objects]
    return [o for o in scene.objects if shapes.count(o.shape) == 1]


KINDS = {   # question kind -> sampling weight (the kinds that pick an object by its shape are
            # the hardest to learn, so they are asked more often)
    "caption": 0.14, "refer": 0.14, "identify": 0.05, "colour": 0.14, "shape": 0.08,
    "count": 0.05, "count_kind": 0.10, "where": 0.08, "leftright": 0.04, "topbottom": 0.04,
    "yesno": 0.10,
}


def question(scene: Scene, kind: str, rng: random.Random):
    """One (question, answer) of the given kind, or None when the scene cannot pose it."""
    objs = scene.objects
    o = rng.choice(objs)
    if kind == "caption":
        q = rng.choice(["[caption] Describe this image.", "[caption] Briefly describe the picture.",
                        "[caption] What does the image show?"])
        return q, caption(scene)
    if kind == "refer":
        q = rng.choice(["[refer] give me the location of the {}", "[refer] where is the {}?",
                        "[refer] the {}"]).format(o.name)
        return q, box_text(box(o))
    if kind == "identify":
        return f"[identify] what is this {box_text(box(o))}", o.name
    if kind == "colour":
        cands = _unique_shapes(scene)
        if not cands:
            return None
        o = rng.choice(cands)
        return rng.choice(["[vqa] What colour is the {}?", "[vqa] What is the colour of the {}?"]
                          ).format(o.shape), o.colour
    if kind == "shape":
        return rng.choice(["[vqa] What shape is the {} object?", "[vqa] Which shape is {}?"]
                          ).format(o.colour), o.shape
    if kind == "count":
        return rng.choice(["[vqa] How many shapes are there?", "[vqa] How many objects are in the image?"]
                          ), NUMBERS[len(objs)]
    if kind == "count_kind":
        s = rng.choice(SHAPES)
        return f"[vqa] How many {PLURAL[s]} are there?", NUMBERS[sum(x.shape == s for x in objs)]
    if kind == "where":
        return f"[vqa] Where is the {o.name}?", o.where
    if kind == "leftright":
        return f"[vqa] Is the {o.name} on the left or on the right?", o.horizontal
    if kind == "topbottom":
        return f"[vqa] Is the {o.name} at the top or at the bottom?", o.vertical
    if kind == "yesno":
        if rng.random() < 0.5:
            return f"[vqa] Is there a {o.name} in the image?", "yes"
        present = {x.name for x in objs}
        # half of the 'no' cases reuse a colour or shape that is there, so both must be checked
        while True:
            colour = o.colour if rng.random() < 0.4 else rng.choice(sorted(COLOURS))
            shape = rng.choice(SHAPES)
            if f"{colour} {shape}" not in present:
                return f"[vqa] Is there a {colour} {shape} in the image?", "no"
    raise ValueError(kind)


def sample_qa(scene: Scene, rng: random.Random):
    kinds, weights = zip(*KINDS.items())
    while True:
        kind = rng.choices(kinds, weights)[0]
        qa = question(scene, kind, rng)
        if qa is not None:
            return kind, qa[0], qa[1]


def heldout_items(n: int, first: int = 0, per_scene: int = 1):
    """Held-out questions: item i asks about scene HELDOUT_BASE + first + i // per_scene; its
    question is drawn from the scene seed too (the first question of a scene does not depend on
    per_scene). Returns dicts {seed, kind, question, answer}."""
    items = []
    for i in range(n):
        seed = scene_seed("heldout", first + i // per_scene)
        scene = make_scene(seed)
        j = i % per_scene
        kind, q, a = sample_qa(scene, random.Random(seed * 7 + 1 + 1_000_003 * j))
        items.append({"seed": seed, "kind": kind, "question": q, "answer": a})
    return items


def corpus(n_scenes: int, seed: int = 1):
    """Text for the tokenizer: prompts in the chat template and answers of n_scenes scenes."""
    rng = random.Random(seed)
    out = []
    for i in range(n_scenes):
        sc = make_scene(scene_seed("train", i))
        for kind in KINDS:
            qa = question(sc, kind, rng)
            if qa:
                # the answer and '###' are separate lines: the model emits '###' as its own
                # token (the stop id), never merged into the answer's last piece
                out.append(f"<s>[INST] <Img><ImageHere></Img> {qa[0]} [/INST] {qa[1]}")
                out.append("###")
    return out


if __name__ == "__main__":
    import sys
    for it in heldout_items(int(sys.argv[1]) if len(sys.argv) > 1 else 12):
        print(it)
