"""Sweeps, analysed from their index alone: the seed-vs-prompt variance split and word-order effects.

Every finished run of a sweep leaves a row in the sweep's index (``index.parquet``) that carries the
few numbers these analyses need, so hundreds of runs are analysed without loading one run folder:

* ``thumb``: the final image reduced to 16×16 by area averaging (``PIL.Image.BOX``), RGB uint8 bytes;
* ``words`` and ``word_mass``: the prompt's words and the attention mass each receives (the
  ``"all-mean"`` recipe: every step, layer and head averaged; ``heatmaps.attention_mass``).

``run_summary`` computes them from a ``Run`` (the sweep's workers call it as each run finishes).
The variance split is therefore of the 16×16 images: it keeps the layout and colour of the
picture and drops detail finer than 1/16 of the side. Confidence intervals are percentile bootstrap
intervals over seeds: the seeds are drawn with replacement ``n_boot`` times (``numpy``'s generator
seeded with ``seed``, so a figure is reproducible) and the statistic is recomputed on each draw.

Runs are grouped by their settings (``SETTINGS``); within a group, prompts are the rows and the seeds
that finished for every prompt are the columns. Word orders are prompts that hold the same words
(lowercased); the one listed first in the sweep (lowest ``prompt_index``) is the reference.

Example:
    index = pd.read_parquet("runs/sweep/index.parquet")
    sweep_variance(index)              # share of prompt, seed and interaction, with 95% intervals
    word_order_distances(index)        # how far each order's image moves from the reference's
    word_order_effects(index)          # how each word's attention mass moves
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
import pandas as pd
from PIL import Image

from workbench.core.run import Run

from .heatmaps import attention_mass
from .seeds import variance_split

THUMB = 16  # side of the thumbnails the index keeps
SETTINGS = ["steps", "guidance", "scheduler", "height", "width", "negative_prompt", "edits"]
COMPONENTS = ("prompt", "seed", "interaction")


def run_summary(run: Run, *, size: int = THUMB) -> dict:
    """What the sweep index keeps of a run for analysis: a thumbnail and per-word attention mass.

    Returns:
        ``{"thumb": bytes (size × size × 3 uint8, RGB, row-major) or None, "words": [str],
        "word_mass": [float]}``; words and masses are empty when no attention was recorded.

    Example:
        >>> np.frombuffer(run_summary(run)["thumb"], np.uint8).reshape(16, 16, 3)  # doctest: +SKIP
    """
    thumb = None
    if run.image is not None:
        small = run.image.convert("RGB").resize((size, size), Image.BOX)
        thumb = np.asarray(small, dtype=np.uint8).tobytes()
    words, mass = [], []
    if run.attention.probs:
        df = attention_mass(run, by=None)
        words, mass = df.word.tolist(), [float(m) for m in df.mass]
    return {"thumb": thumb, "words": words, "word_mass": mass}


# ------------------------------------------------------------------ reading the index


def with_settings(index: pd.DataFrame) -> pd.DataFrame:
    """``index`` with every ``SETTINGS`` column: an index written before edits were an axis has no
    ``edits`` column (or a NaN one, once a newer sweep added rows to it), and its runs were unedited."""
    if "edits" not in index.columns:
        return index.assign(edits="")
    return index.assign(edits=index["edits"].fillna("")) if index["edits"].isna().any() else index


def done_runs(index: pd.DataFrame, sweep_id: str | None = None) -> pd.DataFrame:
    """The finished runs of an index (of one sweep when ``sweep_id`` is given), one row per run."""
    index = with_settings(index)
    need = {"status", "request_id", "prompt", "prompt_index", "seed", "thumb"} | set(SETTINGS)
    missing = sorted(need - set(index.columns))
    if missing:
        raise ValueError(f"index lacks the columns {missing}; pass the index of a sweep (index.parquet)")
    df = index[index.status == "done"]
    if sweep_id is not None:
        if sweep_id not in set(index.sweep_id):
            raise ValueError(
                f"sweep {sweep_id!r} is not in the index; it holds {sorted(set(index.sweep_id))}"
            )
        df = df[df.sweep_id == sweep_id]
    return df.drop_duplicates("request_id").reset_index(drop=True)


def thumbnails(df: pd.DataFrame) -> np.ndarray:
    """The rows' thumbnails as (rows, size, size, 3) float64 in [0, 1]."""
    arrays = [np.frombuffer(b, dtype=np.uint8) for b in df.thumb]
    if not arrays:
        return np.zeros((0, THUMB, THUMB, 3))
    size = int(round((arrays[0].size / 3) ** 0.5))
    return np.stack(arrays).reshape(len(arrays), size, size, 3).astype(np.float64) / 255


def settings_label(settings: dict) -> str:
    """``steps 6 · guidance 4.0 · ddim · 32×32`` (and the negative prompt and the edits when there are)."""
    parts = [f"steps {settings['steps']}", f"guidance {settings['guidance']}", str(settings["scheduler"])]
    parts.append(f"{settings['height']}×{settings['width']}")
    if settings.get("negative_prompt"):
        parts.append(f"negative “{settings['negative_prompt']}”")
    if settings.get("edits"):
        parts.append(f"edited: {settings['edits']}")
    return " · ".join(parts)


def _groups(df: pd.DataFrame) -> Iterator[tuple[dict, pd.DataFrame]]:
    keys = df[SETTINGS].astype(object).where(df[SETTINGS].notna(), None)
    for values, g in df.groupby([keys[c] for c in SETTINGS], sort=False, dropna=False):
        yield dict(zip(SETTINGS, values)), g


def _grid(g: pd.DataFrame, prompts: list[str]) -> tuple[list[int], np.ndarray]:
    """The seeds every prompt finished with, and the thumbnails as (prompts, seeds, features)."""
    by_prompt = {p: set(g.seed[g.prompt == p]) for p in prompts}
    seeds = sorted(set.intersection(*by_prompt.values())) if prompts else []
    cells = g.set_index(["prompt", "seed"])
    rows = [thumbnails(cells.loc[[(p, s) for s in seeds]].reset_index()) for p in prompts]
    return seeds, np.stack(rows).reshape(len(prompts), len(seeds), -1)


def _prompts(g: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(g.sort_values("prompt_index", kind="stable").prompt))


# ------------------------------------------------------------------ bootstrap


def _interval(samples: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1 - level) / 2
    low, high = np.quantile(samples, [tail, 1 - tail])
    return float(low), float(high)


def _check_boot(n_boot: int, level: float) -> None:
    if not isinstance(n_boot, int) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive int, got {n_boot!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1 (e.g. 0.95), got {level!r}")


def _shares(y: np.ndarray) -> np.ndarray:
    """(prompt, seed, interaction) shares of the variance of y (P, S, F); see ``seeds.variance_split``."""
    p, s = y.shape[:2]
    grand = y.mean(axis=(0, 1))
    mp, ms = y.mean(axis=1), y.mean(axis=0)
    total = ((y - grand) ** 2).sum()
    if total <= 0:
        return np.full(3, np.nan)
    ss_p = s * ((mp - grand) ** 2).sum()
    ss_s = p * ((ms - grand) ** 2).sum()
    return np.array([ss_p, ss_s, total - ss_p - ss_s]) / total


def mean_interval(values: np.ndarray, rng, n_boot: int, level: float) -> tuple[float, float]:
    """Bootstrap interval of the mean over the first axis (seeds)."""
    draws = rng.integers(0, len(values), size=(n_boot, len(values)))  # (n_boot, seeds)
    return _interval(values[draws].mean(axis=1), level)


# ------------------------------------------------------------------ the analyses


def sweep_variance(
    index: pd.DataFrame,
    *,
    sweep_id: str | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Seed-vs-prompt variance split of the final images (16×16 thumbnails), per settings group.

    Within each group the grid is every prompt × the seeds that finished for all of them; a group
    needs 2 or more prompts and seeds. Intervals: seeds drawn with replacement ``n_boot`` times.

    Returns:
        Long DataFrame: the ``SETTINGS`` columns, ``component`` (prompt / seed / interaction),
        ``share`` (of the total variance), ``ci_low``, ``ci_high``, ``n_prompts``, ``n_seeds``.

    Example:
        >>> sweep_variance(index).pivot(index="component", columns="guidance", values="share")  # doctest: +SKIP
    """
    _check_boot(n_boot, level)
    rng = np.random.default_rng(seed)
    rows = []
    for settings, g in _groups(done_runs(index, sweep_id)):
        prompts = _prompts(g)
        seeds, y = _grid(g, prompts)
        if len(prompts) < 2 or len(seeds) < 2:
            continue
        split = variance_split(y)
        boot = np.stack([_shares(y[:, rng.integers(0, len(seeds), len(seeds))]) for _ in range(n_boot)])
        for k, comp in enumerate(COMPONENTS):
            low, high = (
                _interval(boot[:, k][~np.isnan(boot[:, k])], level)
                if np.isfinite(boot[:, k]).any()
                else (np.nan, np.nan)
            )
            rows.append(
                {
                    **settings,
                    "component": comp,
                    "share": float(split.loc[comp, "share"]),
                    "ci_low": low,
                    "ci_high": high,
                    "n_prompts": len(prompts),
                    "n_seeds": len(seeds),
                }
            )
    if not rows:
        raise ValueError(
            "no settings group of this sweep has 2 or more prompts that finished with 2 or more common "
            "seeds; a variance split needs both"
        )
    df = pd.DataFrame(rows)
    df.attrs.update(what=f"final images as {THUMB}×{THUMB} area means", n_boot=n_boot, level=level)
    return df


def _order_groups(g: pd.DataFrame) -> Iterator[tuple[str, list[str]]]:
    """(reference prompt, the other orders) for every set of prompts holding the same words."""
    bags: dict[tuple, list[str]] = {}
    for p in _prompts(g):
        bags.setdefault(tuple(sorted(p.lower().split())), []).append(p)
    for prompts in bags.values():
        if len(prompts) > 1:
            yield prompts[0], prompts[1:]


def word_order_distances(
    index: pd.DataFrame,
    *,
    sweep_id: str | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """How far each word order's final image lies from the reference order's, same seed, over seeds.

    The distance of one seed is the RMS difference of the two thumbnails ([0, 1] intensities). For
    scale, ``seed_pixel_rms`` is the mean distance between the reference's images of two different
    seeds: an order effect well below it is small next to what the seed alone does.

    Returns:
        DataFrame, one row per (settings group, order): the ``SETTINGS`` columns, ``reference``,
        ``order``, ``n_seeds``, ``pixel_rms`` (mean over seeds), ``ci_low``, ``ci_high``,
        ``identical`` (share of seeds whose thumbnails are equal), ``seed_pixel_rms``.

    Example:
        >>> word_order_distances(index)[["order", "pixel_rms", "ci_low", "ci_high"]]  # doctest: +SKIP
    """
    _check_boot(n_boot, level)
    rng = np.random.default_rng(seed)
    rows = []
    for settings, g in _groups(done_runs(index, sweep_id)):
        for reference, orders in _order_groups(g):
            for order in orders:
                seeds, y = _grid(g, [reference, order])  # (2, seeds, features)
                if not seeds:
                    continue
                d = np.sqrt(((y[1] - y[0]) ** 2).mean(axis=1))  # (seeds,)
                pairs = list(itertools.combinations(range(len(seeds)), 2))
                baseline = (
                    float(np.mean([np.sqrt(((y[0, i] - y[0, j]) ** 2).mean()) for i, j in pairs]))
                    if pairs
                    else np.nan
                )
                low, high = mean_interval(d, rng, n_boot, level)
                rows.append(
                    {
                        **settings,
                        "reference": reference,
                        "order": order,
                        "n_seeds": len(seeds),
                        "pixel_rms": float(d.mean()),
                        "ci_low": low,
                        "ci_high": high,
                        "identical": float((d == 0).mean()),
                        "seed_pixel_rms": baseline,
                    }
                )
    df = pd.DataFrame(
        rows,
        columns=[
            *SETTINGS,
            "reference",
            "order",
            "n_seeds",
            "pixel_rms",
            "ci_low",
            "ci_high",
            "identical",
            "seed_pixel_rms",
        ],
    )
    df.attrs.update(what=f"final images as {THUMB}×{THUMB} area means", n_boot=n_boot, level=level)
    return df


def _keyed_mass(words, mass) -> dict[tuple[str, int], float]:
    """(lowercased word, occurrence) -> mass; a repeated word is matched by occurrence order."""
    seen: dict[str, int] = {}
    out = {}
    for w, m in zip(words, mass):
        k = str(w).lower()
        out[(k, seen.get(k, 0))] = float(m)
        seen[k] = seen.get(k, 0) + 1
    return out


def word_order_effects(
    index: pd.DataFrame,
    *,
    sweep_id: str | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """How much attention each word receives in each word order against the reference, over seeds.

    Words are matched by identity (lowercased, repeats by occurrence). ``mass_diff`` is the order's
    mass minus the reference's, averaged over the seeds both finished with.

    Returns:
        Long DataFrame: the ``SETTINGS`` columns, ``reference``, ``order``, ``word``, ``occurrence``,
        ``n_seeds``, ``mass_reference``, ``mass_order``, ``mass_diff``, ``ci_low``, ``ci_high``.

    Example:
        >>> word_order_effects(index).query("word == 'circle'")  # doctest: +SKIP
    """
    _check_boot(n_boot, level)
    if "word_mass" not in index.columns:
        raise ValueError("index lacks the column 'word_mass'; pass the index of a sweep (index.parquet)")
    rng = np.random.default_rng(seed)
    rows = []
    for settings, g in _groups(done_runs(index, sweep_id)):
        cells = g.set_index(["prompt", "seed"])
        for reference, orders in _order_groups(g):
            for order in orders:
                seeds, _ = _grid(g, [reference, order])
                ref = [_keyed_mass(*cells.loc[(reference, s), ["words", "word_mass"]]) for s in seeds]
                other = [_keyed_mass(*cells.loc[(order, s), ["words", "word_mass"]]) for s in seeds]
                if not seeds or not ref[0]:
                    continue
                for key in [k for k in ref[0] if k in other[0]]:
                    a = np.array([m[key] for m in ref])  # (seeds,)
                    b = np.array([m[key] for m in other])  # (seeds,)
                    low, high = mean_interval(b - a, rng, n_boot, level)
                    rows.append(
                        {
                            **settings,
                            "reference": reference,
                            "order": order,
                            "word": key[0],
                            "occurrence": key[1],
                            "n_seeds": len(seeds),
                            "mass_reference": float(a.mean()),
                            "mass_order": float(b.mean()),
                            "mass_diff": float((b - a).mean()),
                            "ci_low": low,
                            "ci_high": high,
                        }
                    )
    df = pd.DataFrame(
        rows,
        columns=[
            *SETTINGS,
            "reference",
            "order",
            "word",
            "occurrence",
            "n_seeds",
            "mass_reference",
            "mass_order",
            "mass_diff",
            "ci_low",
            "ci_high",
        ],
    )
    df.attrs.update(aggregation="all-mean", n_boot=n_boot, level=level)
    return df
