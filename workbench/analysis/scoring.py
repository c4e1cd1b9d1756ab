"""Scoring heat maps against ground-truth masks: a stated threshold rule, IoU and mIoU.

Threshold rules (``binarize``), named by what they do; each preset names its own
(``Aggregation.threshold_rule`` and ``threshold``, used by ``score_maps`` unless overridden):
    ``"fraction-of-max"``: a pixel is in the mask when ``value >= threshold * max``. Scale-free, not
        shift-free: on a map whose floor is 60% of its peak, 0.4 keeps every pixel.
    ``"fraction-of-max-strict"``: when ``value / max > threshold`` (prompt-to-prompt's
        ``LocalBlend.get_mask``; the ``"p2p"`` preset, 0.3).
    ``"fraction-of-range"``: when ``(value - min) / (max - min) >= threshold`` (the toy evaluation's rule).
    ``"fraction-of-range-strict"``: when ``(value - min) / (max - min + 1e-8) > threshold``, computed in
        float32: DAAM's code (``WordHeatMap.expand_as`` with a threshold; the ``"daam"`` preset, 0.4).
    ``"above-mean"``: when ``value > threshold * mean`` (ConceptAttention's ``segmentation.py`` with 1.0;
        the ``"dit-word-share"`` preset).
    ``"absolute"``: when ``value >= threshold``.
``"max"`` and ``"minmax"`` are accepted as the earlier names of ``"fraction-of-max"`` and
``"fraction-of-range"``. A constant map is empty under every rule but ``"fraction-of-max"`` (all of it
when positive and threshold <= 1) and ``"absolute"``; IoU of two empty masks is NaN (undefined), so
mIoU skips it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .heatmaps import WordMaps
from .recipe import THRESHOLD_RULES, threshold_rule

RULES = THRESHOLD_RULES


def _np(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}")


def binarize(heat, threshold: float = 0.4, rule: str = "fraction-of-max") -> np.ndarray:
    """Threshold a (H, W) heat map into a bool mask by ``rule`` (see the module docstring).

    Example:
        >>> binarize(wm.get("circle"), 0.4, "fraction-of-range-strict")  # doctest: +SKIP
    """
    rule = threshold_rule(rule)
    raw = _np(heat, "heat")
    if rule == "fraction-of-range-strict":  # DAAM: (im - min) / (max - min + 1e-8) > threshold, float32
        h32 = raw.astype(np.float32)
        lo, hi = h32.min(), h32.max()
        return (h32 - lo) / (hi - lo + np.float32(1e-8)) > threshold
    h = raw.astype(np.float64)
    if rule == "absolute":
        return h >= threshold
    if rule == "above-mean":
        return h > threshold * h.mean()
    if rule in ("fraction-of-max", "fraction-of-max-strict"):
        peak = h.max()
        if peak <= 0:
            return np.zeros(h.shape, dtype=bool)
        return h >= threshold * peak if rule == "fraction-of-max" else h / peak > threshold
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


def _at_size(maps: WordMaps, shape: tuple[int, int], word: str) -> WordMaps:
    """The maps at a mask's size: as they are, or expanded by the recipe's own expansion step."""
    have = tuple(maps.maps.shape[-2:])
    if have == shape:
        return maps
    agg = maps.aggregation
    if agg.expand is not None and agg.expanded_to is None and shape[0] >= have[0] and shape[1] >= have[1]:
        return maps.expand(shape)
    raise ValueError(
        f"mask for {word!r} is {shape} but the maps are {have}; make the maps at the mask's size "
        "(word_maps(..., size=mask.shape)) or expand them (maps.expand(mask.shape, mode='bicubic'))"
    )


def score_maps(
    maps: WordMaps,
    masks: dict[str, np.ndarray],
    *,
    threshold: float | None = None,
    rule: str | None = None,
) -> pd.DataFrame:
    """IoU of each named word's thresholded map against its ground-truth mask.

    Maps smaller than a mask are expanded first when their recipe names an expansion
    (``Aggregation.expand``: the ``"daam"`` preset expands bicubically, as DAAM's ``expand_as``);
    otherwise they must be at the mask's size.

    Args:
        maps: from ``word_maps``.
        masks: word (or label like ``a#2``) -> (H, W) bool mask.
        threshold, rule: see ``binarize``; ``None``: the recipe's own (``threshold_rule``, ``threshold``).

    Returns:
        DataFrame per word: ``word``, ``iou``, ``pred_pixels``, ``true_pixels``, ``threshold``, ``rule``;
        ``df.attrs["miou"]`` is their mean, ``df.attrs["aggregation"]`` the map recipe (with its
        expansion, when one was applied).

    Example:
        >>> score_maps(word_maps(run, "daam"), {"circle": scene.objects[0].mask})  # doctest: +SKIP
    """
    rule = threshold_rule(maps.aggregation.threshold_rule if rule is None else rule)
    threshold = maps.aggregation.threshold if threshold is None else threshold
    rows, used, sized = [], maps, {}
    for word, mask in masks.items():
        index = maps.index(word)  # unknown words fail first, naming the words
        truth = _np(mask, f"masks[{word!r}]").astype(bool)
        shape = tuple(truth.shape)
        used = sized[shape] = sized[shape] if shape in sized else _at_size(maps, shape, word)
        pred = binarize(used.maps[index], threshold, rule)
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
    df.attrs["aggregation"] = used.aggregation.describe()
    return df
