"""Per-word heat maps from raw cross-attention probabilities, and their IoU with masks.

The threshold rule used throughout the toy evaluation: a word's map is the mean over the given
layers and heads (and steps) of its sub-word tokens' summed attention, each layer upsampled
bilinearly to the image size; the map is min-max normalised and thresholded at 0.5.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

THRESHOLD = 0.5


def word_maps_from_probs(
    probs: dict[str, torch.Tensor], groups: list[list[int]], size: int = 32
) -> torch.Tensor:
    """Word maps from per-layer probabilities of one image.

    Args:
        probs: layer -> (heads, queries, tokens) or (steps, heads, queries, tokens); square grids.
        groups: token positions of each word (sub-words are summed).
        size: output side in pixels.
    Returns:
        (words, size, size) float32, each map the layer mean of bilinearly upsampled maps.
    """
    total = torch.zeros(len(groups), size, size)
    for p in probs.values():
        p = p.float()
        if p.ndim == 4:
            p = p.mean(0)  # (heads, queries, tokens)
        p = p.mean(0)  # (queries, tokens)
        side = int(round(p.shape[0] ** 0.5))
        grid = p.T.reshape(-1, 1, side, side)  # (tokens, 1, side, side)
        up = F.interpolate(grid, size=(size, size), mode="bilinear", align_corners=False)[:, 0]
        total += torch.stack([up[g].sum(0) for g in groups])  # (words, size, size)
    return total / max(len(probs), 1)


def binarize(heat: np.ndarray | torch.Tensor, threshold: float = THRESHOLD) -> np.ndarray:
    """Min-max normalise a map and threshold it."""
    h = np.asarray(heat, dtype=np.float64)
    lo, hi = h.min(), h.max()
    if hi - lo < 1e-12:
        return np.zeros(h.shape, dtype=bool)
    return (h - lo) / (hi - lo) >= threshold


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks (0 when both are empty)."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0
