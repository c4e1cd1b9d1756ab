"""Scoring heat maps against ground-truth masks: a stated threshold rule, IoU and mIoU.

Threshold rules (``binarize``):
    ``"max"`` (default, the DAAM paper's rule): a pixel is in the mask when its value is at least
        ``threshold`` times the map's maximum. Scale-free; ``threshold=0.4`` as in that paper.
    ``"minmax"``: when ``(value - min) / (max - min) >= threshold`` (the rule in FIELD-NOTES' trials).
    ``"absolute"``: when ``value >= threshold``.
A constant map is empty under ``"max"``/``"minmax"`` unless it is all positive and threshold <= 1
(``"max"``); IoU of two empty masks is NaN (undefined), so mIoU skips it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .heatmaps import WordMaps

RULES = ("max", "minmax", "absolute")


def _np(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}")


def binarize(heat, threshold: float = 0.4, rule: str = "max") -> np.ndarray:
    """Threshold a (H, W) heat map into a bool mask by ``rule`` (see the module docstring).

    Example:
        >>> binarize(wm.get("circle"), 0.4)  # doctest: +SKIP
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    h = _np(heat, "heat").astype(np.float64)
    if rule == "absolute":
        return h >= threshold
    if rule == "max":
        peak = h.max()
        return h >= threshold * peak if peak > 0 else np.zeros(h.shape, dtype=bool)
    lo, hi = h.min(), h.max()
    if hi <= lo:
        return np.zeros(h.shape, dtype=bool)
    return (h - lo) / (hi - lo) >= threshold


def iou(pred, truth) -> float:
    """Intersection over union of two same-shape bool masks; NaN when both are empty.

    Example:
        >>> iou(binarize(m), scene.objects[0].mask)  # doctest: +SKIP
    """
    a, b = _np(pred, "pred").astype(bool), _np(truth, "truth").astype(bool)
    if a.shape != b.shape:
        raise ValueError(f"masks differ in shape: pred {a.shape} vs truth {b.shape}; resize one to the other")
    union = np.logical_or(a, b).sum()
    if union == 0:
        return float("nan")
    return float(np.logical_and(a, b).sum() / union)


def miou(preds, truths) -> float:
    """Mean IoU over pairs of masks (pairs with an undefined IoU are skipped; NaN if all are).

    Example:
        >>> miou([m1, m2], [t1, t2])  # doctest: +SKIP
    """
    preds, truths = list(preds), list(truths)
    if len(preds) != len(truths):
        raise ValueError(f"miou needs as many predictions as truths, got {len(preds)} and {len(truths)}")
    scores = [iou(p, t) for p, t in zip(preds, truths)]
    finite = [s for s in scores if not np.isnan(s)]
    return float(np.mean(finite)) if finite else float("nan")


def score_maps(
    maps: WordMaps, masks: dict[str, np.ndarray], *, threshold: float = 0.4, rule: str = "max"
) -> pd.DataFrame:
    """IoU of each named word's thresholded map against its ground-truth mask.

    Args:
        maps: from ``word_maps`` at the mask's size.
        masks: word (or label like ``a#2``) -> (H, W) bool mask.
        threshold, rule: see ``binarize``.

    Returns:
        DataFrame per word: ``word``, ``iou``, ``pred_pixels``, ``true_pixels``, ``threshold``, ``rule``;
        ``df.attrs["miou"]`` is their mean, ``df.attrs["aggregation"]`` the map recipe.

    Example:
        >>> score_maps(word_maps(run), {"circle": scene.objects[0].mask})  # doctest: +SKIP
    """
    rows = []
    for word, mask in masks.items():
        m = maps.get(word)
        truth = _np(mask, f"masks[{word!r}]").astype(bool)
        if tuple(truth.shape) != tuple(m.shape):
            raise ValueError(
                f"mask for {word!r} is {tuple(truth.shape)} but the maps are {tuple(m.shape)}; "
                "make the maps at the mask's size (word_maps(..., size=mask.shape))"
            )
        pred = binarize(m, threshold, rule)
        rows.append(
            {
                "word": word,
                "iou": iou(pred, truth),
                "pred_pixels": int(pred.sum()),
                "true_pixels": int(truth.sum()),
                "threshold": threshold,
                "rule": rule,
            }
        )
    df = pd.DataFrame(rows)
    df.attrs["miou"] = float(np.nanmean(df.iou)) if len(df) and df.iou.notna().any() else float("nan")
    df.attrs["aggregation"] = maps.aggregation.describe()
    return df
