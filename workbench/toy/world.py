"""The toy world: procedural scenes whose captions fully determine the layout.

A scene holds one or two objects on a 32x32 white canvas. Each object has a colour
(red, green, blue, yellow), a shape (circle, square, triangle) and a size (small, big,
or medium when the caption names no size). Two objects stand in the halves of the
canvas that their relation names (left of / right of / above / below), with +-2 px
jitter. A style prefix picks filled shapes ("a painting of ...", also the default when
no style is named) or outlined shapes ("a sketch of ...").

Word order carries meaning: "a red circle left of a blue square" and "a blue square
right of a red circle" describe the same picture, while swapping the object words
("a blue square left of a red circle") swaps their places.

Everything is pure numpy/PIL and deterministic given a seed.

Example:
    scene = sample_scene(np.random.default_rng(0))
    scene.caption, scene.image.shape, [o.words for o in scene.objects]
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

SIZE = 32
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (230, 200, 30),
}
SHAPES = ("circle", "square", "triangle")
SIZES: dict[str, int] = {"small": 8, "": 10, "big": 12}  # "" = no size word: medium
RELATIONS = ("left of", "right of", "above", "below")
STYLES: dict[str, str] = {"painting": "filled", "sketch": "outlined", "": "filled"}
JITTER = 2
OUTLINE_WIDTH = 2

# Canonical two-object layouts: (first colour, first shape, axis, second colour, second shape),
# where the first object is the left one ("h") or the top one ("v"). Held out of training in
# every phrasing; the list is closed under swapping the objects, so a word-order swap of a
# held-out caption is held out too.
HELD_OUT: tuple[tuple[str, str, str, str, str], ...] = (
    ("red", "circle", "h", "blue", "square"),
    ("blue", "square", "h", "red", "circle"),
    ("green", "triangle", "v", "yellow", "circle"),
    ("yellow", "circle", "v", "green", "triangle"),
    ("yellow", "square", "h", "green", "circle"),
    ("green", "circle", "h", "yellow", "square"),
    ("blue", "triangle", "v", "red", "square"),
    ("red", "square", "v", "blue", "triangle"),
    ("green", "square", "h", "red", "triangle"),
    ("red", "triangle", "h", "green", "square"),
    ("yellow", "triangle", "v", "blue", "circle"),
    ("blue", "circle", "v", "yellow", "triangle"),
)


@dataclass(frozen=True)
class ObjectSpec:
    """One object as the caption names it."""

    color: str
    shape: str
    size: str = ""  # "small", "big" or "" (medium, no size word)

    @property
    def phrase(self) -> str:
        """The noun phrase, e.g. 'a big red circle'."""
        size = f"{self.size} " if self.size else ""
        return f"a {size}{self.color} {self.shape}"


@dataclass(frozen=True)
class SceneSpec:
    """What a caption says: objects in caption order, a relation, a style word."""

    objects: tuple[ObjectSpec, ...]
    relation: str | None = None  # one of RELATIONS when there are two objects
    style: str = ""  # "painting", "sketch" or ""

    def caption(self) -> str:
        """The caption; the first object is the relation's subject."""
        prefix = f"a {self.style} of " if self.style else ""
        text = self.objects[0].phrase
        if len(self.objects) == 2:
            text = f"{text} {self.relation} {self.objects[1].phrase}"
        return prefix + text

    def swapped(self) -> SceneSpec:
        """The same words with the two objects exchanged (so their places swap)."""
        if len(self.objects) != 2:
            raise ValueError("swapped() needs a two-object scene")
        return SceneSpec(objects=self.objects[::-1], relation=self.relation, style=self.style)

    def canonical(self) -> tuple[str, str, str, str, str] | None:
        """(colour, shape, axis, colour, shape) with the left/top object first; None for one object."""
        if len(self.objects) != 2:
            return None
        a, b = self.objects
        axis = "h" if self.relation in ("left of", "right of") else "v"
        if self.relation in ("right of", "below"):
            a, b = b, a
        return (a.color, a.shape, axis, b.color, b.shape)

    def is_held_out(self) -> bool:
        """True when the scene's colour-shape-relation combination is held out of training."""
        return self.canonical() in HELD_OUT


@dataclass
class SceneObject:
    """A rendered object: its spec, its pixels and the caption words that name it."""

    spec: ObjectSpec
    mask: np.ndarray  # (32, 32) bool
    center: tuple[float, float]  # (x, y) in pixels
    word_indices: dict[str, int] = field(default_factory=dict)  # "color"/"shape"/"size" -> word index

    @property
    def words(self) -> dict[str, str]:
        """The object's words by role, e.g. {'color': 'red', 'shape': 'circle'}."""
        out = {"color": self.spec.color, "shape": self.spec.shape}
        if self.spec.size:
            out["size"] = self.spec.size
        return out


@dataclass
class Scene:
    """A rendered scene: RGB image, caption and per-object ground truth."""

    spec: SceneSpec
    image: np.ndarray  # (32, 32, 3) uint8, white background
    caption: str
    objects: list[SceneObject]


def word_indices(spec: SceneSpec) -> list[dict[str, int]]:
    """Word index (in caption.split()) of each object's colour, shape and size words."""
    words = spec.caption().split()
    out: list[dict[str, int]] = []
    start = 3 if spec.style else 0  # skip "a <style> of"
    for obj in spec.objects:
        i = start + 1  # skip the article
        idx: dict[str, int] = {}
        if obj.size:
            idx["size"] = i
            i += 1
        idx["color"], idx["shape"] = i, i + 1
        assert words[i] == obj.color and words[i + 1] == obj.shape
        out.append(idx)
        # next phrase starts after the shape and the relation words
        start = i + 2 + (len(spec.relation.split()) if spec.relation else 0)
    return out


def _draw(shape: str, center: tuple[int, int], extent: int, color: tuple[int, int, int], outlined: bool):
    """Draw one shape on a transparent 32x32 layer; returns (RGBA layer, mask)."""
    layer = Image.new("RGBA", (SIZE, SIZE), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    cx, cy = center
    x0, y0 = cx - extent // 2, cy - extent // 2
    x1, y1 = x0 + extent - 1, y0 + extent - 1  # PIL boxes are inclusive
    fill = None if outlined else color
    width = OUTLINE_WIDTH if outlined else 1
    if shape == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=fill, outline=color, width=width)
    elif shape == "square":
        draw.rectangle((x0, y0, x1, y1), fill=fill, outline=color, width=width)
    elif shape == "triangle":
        pts = [(x0, y1), (x1, y1), ((x0 + x1) / 2, y0)]
        draw.polygon(pts, fill=fill, outline=color, width=width)
    else:
        raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")
    mask = np.asarray(layer)[..., 3] > 0  # (32, 32)
    return layer, mask


def _centers(spec: SceneSpec, rng: np.random.Generator) -> list[tuple[int, int]]:
    """Object centres (x, y): the halves the relation names, plus jitter."""

    def jit() -> int:
        return int(rng.integers(-JITTER, JITTER + 1))

    if len(spec.objects) == 1:
        return [(SIZE // 2 + jit(), SIZE // 2 + jit())]
    lo, hi, mid = SIZE // 4, 3 * SIZE // 4, SIZE // 2
    first = {"left of": (lo, mid), "right of": (hi, mid), "above": (mid, lo), "below": (mid, hi)}
    second = {"left of": (hi, mid), "right of": (lo, mid), "above": (mid, hi), "below": (mid, lo)}
    a, b = first[spec.relation], second[spec.relation]
    return [(a[0] + jit(), a[1] + jit()), (b[0] + jit(), b[1] + jit())]


def render(spec: SceneSpec, rng: np.random.Generator) -> Scene:
    """Render a scene spec (jitter drawn from rng) into image, masks and word positions."""
    canvas = Image.new("RGBA", (SIZE, SIZE), (255, 255, 255, 255))
    outlined = STYLES[spec.style] == "outlined"
    objects: list[SceneObject] = []
    for obj, center, idx in zip(spec.objects, _centers(spec, rng), word_indices(spec)):
        layer, mask = _draw(obj.shape, center, SIZES[obj.size], COLORS[obj.color], outlined)
        canvas.alpha_composite(layer)
        ys, xs = np.nonzero(mask)
        objects.append(SceneObject(obj, mask, (float(xs.mean()), float(ys.mean())), idx))
    image = np.asarray(canvas.convert("RGB")).copy()  # (32, 32, 3) uint8
    return Scene(spec=spec, image=image, caption=spec.caption(), objects=objects)


def random_spec(
    rng: np.random.Generator,
    *,
    p_single: float = 0.2,
    p_style: float = 0.5,
    p_size: float = 0.5,
    relation: str | None = None,
    held_out: bool | None = False,
) -> SceneSpec:
    """Draw a scene spec. held_out=False excludes HELD_OUT layouts, True draws only them, None any."""
    style = str(rng.choice(["painting", "sketch"])) if rng.random() < p_style else ""

    def obj(exclude_color: str | None = None) -> ObjectSpec:
        colors = [c for c in COLORS if c != exclude_color]
        size = str(rng.choice(["small", "big"])) if rng.random() < p_size else ""
        return ObjectSpec(str(rng.choice(colors)), str(rng.choice(SHAPES)), size)

    if held_out is not True and relation is None and rng.random() < p_single:
        return SceneSpec(objects=(obj(),), style=style)
    rel = relation or str(rng.choice(RELATIONS))
    while True:
        a = obj()
        spec = SceneSpec(objects=(a, obj(exclude_color=a.color)), relation=rel, style=style)
        if held_out is None or spec.is_held_out() == held_out:
            return spec


def sample_scene(rng: np.random.Generator, **kwargs) -> Scene:
    """Draw and render one scene (see random_spec for the options)."""
    return render(random_spec(rng, **kwargs), rng)


def training_batch(rng: np.random.Generator, n: int, p_single: float = 0.2) -> list[Scene]:
    """n held-in scenes, relation-balanced: two-object scenes cycle through the four relations."""
    scenes = []
    offset = int(rng.integers(len(RELATIONS)))
    for i in range(n):
        if rng.random() < p_single:
            scenes.append(sample_scene(rng, p_single=1.0))
            continue
        rel = RELATIONS[(i + offset) % len(RELATIONS)]
        scenes.append(sample_scene(rng, relation=rel, held_out=False))
    return scenes


def all_words() -> list[str]:
    """Every word a caption can contain."""
    words = ["a", "of", "painting", "sketch", *COLORS, *SHAPES, "small", "big"]
    for rel in RELATIONS:
        words.extend(w for w in rel.split() if w not in words)
    return words


def caption_corpus(n: int, seed: int = 0) -> list[str]:
    """n random captions (held-in and held-out alike), e.g. for tokenizer training."""
    rng = np.random.default_rng(seed)
    return [random_spec(rng, held_out=None).caption() for _ in range(n)]
