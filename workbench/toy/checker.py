"""An automatic checker for toy-world images: what objects are there, and where.

Objects are found by colour segmentation: each pixel gets a hue class (red, green, blue, yellow)
when it is saturated and not too dark, otherwise it is background. The largest 4-connected
component of each colour (with at least MIN_PIXELS pixels) is that colour's object. Its shape comes
from the hole-filled component: triangles are much narrower in their top third than in their bottom
third; squares fill their bounding box; circles are the rest. Style: a component covering less than
OUTLINE_FILL of its hole-filled area is outlined (a sketch), otherwise filled (a painting).

Example:
    found = detect(scene.image)            # {'red': Detection(...), ...}
    score_spec(found, scene.spec)          # {'objects': True, 'relation': True, ...}
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .world import COLORS, STYLES, SceneSpec

MIN_PIXELS = 6
OUTLINE_FILL = 0.95
HUE_RANGES: dict[str, tuple[tuple[float, float], ...]] = {  # degrees, [lo, hi)
    "red": ((0.0, 22.0), (330.0, 360.0)),
    "yellow": ((35.0, 75.0),),
    "green": ((85.0, 170.0),),
    "blue": ((190.0, 270.0),),
}


@dataclass(frozen=True)
class Detection:
    """One detected object."""

    color: str
    shape: str
    style: str  # "filled" or "outlined"
    mask: np.ndarray  # (H, W) bool, the colour component as drawn
    center: tuple[float, float]  # (x, y) in pixels
    pixels: int


def color_classes(image: np.ndarray) -> np.ndarray:
    """Per-pixel colour class: index into list(HUE_RANGES), or -1 for background.

    Args:
        image: (H, W, 3) uint8 RGB.
    Returns:
        (H, W) int array.
    """
    rgb = image.astype(np.float32) / 255.0  # (H, W, 3)
    mx, mn = rgb.max(-1), rgb.min(-1)  # (H, W)
    delta = mx - mn
    sat = np.where(mx > 0, delta / np.maximum(mx, 1e-6), 0.0)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    safe = np.maximum(delta, 1e-6)
    hue = np.where(
        mx == r, ((g - b) / safe) % 6.0, np.where(mx == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0)
    )
    hue = hue * 60.0  # (H, W) degrees
    out = np.full(image.shape[:2], -1, dtype=np.int64)
    colored = (sat > 0.45) & (mx > 0.35)
    for k, ranges in enumerate(HUE_RANGES.values()):
        for lo, hi in ranges:
            out[colored & (hue >= lo) & (hue < hi)] = k
    return out


def _components(mask: np.ndarray) -> list[np.ndarray]:
    """4-connected components of a boolean mask, largest first."""
    seen = np.zeros_like(mask, dtype=bool)
    h, w = mask.shape
    comps = []
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        comp = np.zeros_like(mask, dtype=bool)
        stack = [(y0, x0)]
        seen[y0, x0] = True
        while stack:
            y, x = stack.pop()
            comp[y, x] = True
            for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
        comps.append(comp)
    return sorted(comps, key=lambda c: -int(c.sum()))


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """The mask plus every background pixel not 4-connected to the image border."""
    padded = np.pad(~mask, 1, constant_values=True)
    outside = [c for c in _components(padded) if c[0, 0]][0]
    return ~outside[1:-1, 1:-1]


def classify_shape(filled: np.ndarray) -> str:
    """circle / square / triangle from a hole-filled object mask."""
    ys, xs = np.nonzero(filled)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    box = filled[y0:y1, x0:x1]
    h = box.shape[0]
    third = max(1, h // 3)
    top, bottom = box[:third].sum(1).mean(), box[-third:].sum(1).mean()
    if top < 0.6 * bottom:
        return "triangle"
    if box.mean() > 0.88:
        return "square"
    return "circle"


def detect(image: np.ndarray, min_pixels: int = MIN_PIXELS) -> dict[str, Detection]:
    """Detected objects by colour name (one per colour: its largest component)."""
    classes = color_classes(image)
    found: dict[str, Detection] = {}
    for k, color in enumerate(HUE_RANGES):
        comps = _components(classes == k)
        if not comps or comps[0].sum() < min_pixels:
            continue
        comp = comps[0]
        filled = fill_holes(comp)
        style = "outlined" if comp.sum() < OUTLINE_FILL * filled.sum() else "filled"
        ys, xs = np.nonzero(comp)
        center = (float(xs.mean()), float(ys.mean()))
        found[color] = Detection(color, classify_shape(filled), style, comp, center, int(comp.sum()))
    return found


def relation_holds(a: tuple[float, float], b: tuple[float, float], relation: str) -> bool:
    """Does centre a stand in `relation` to centre b (along the dominant axis)?"""
    dx, dy = a[0] - b[0], a[1] - b[1]
    if relation in ("left of", "right of"):
        return abs(dx) > abs(dy) and (dx < 0) == (relation == "left of")
    if relation in ("above", "below"):
        return abs(dy) > abs(dx) and (dy < 0) == (relation == "above")
    raise ValueError(f"unknown relation {relation!r}")


def score_spec(found: dict[str, Detection], spec: SceneSpec) -> dict[str, bool | None]:
    """Score detections against what a caption asked for.

    Returns:
        objects: exactly the named colours are present, each with the named shape;
        relation: both objects found and placed as the relation says (None for one object);
        style: every named object drawn in the caption's style (filled/outlined).
    """
    wanted = {o.color: o.shape for o in spec.objects}
    objects = set(found) == set(wanted) and all(found[c].shape == s for c, s in wanted.items())
    relation: bool | None = None
    if len(spec.objects) == 2:
        a, b = (found.get(o.color) for o in spec.objects)
        relation = a is not None and b is not None and relation_holds(a.center, b.center, spec.relation)
    style = all(c in found and found[c].style == STYLES[spec.style] for c in wanted)
    return {"objects": objects, "relation": relation, "style": style}


def palette() -> dict[str, tuple[int, int, int]]:
    """The world's RGB colours (for reports)."""
    return dict(COLORS)
