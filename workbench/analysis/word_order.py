"""Word order: which orders to compare, and how runs that differ only in word order differ.

Words are aligned across prompts by identity (lowercased); a repeated word is matched by occurrence
order (the first "a" of one prompt with the first "a" of the other, and so on).
"""

from __future__ import annotations

import itertools
import math
import random
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from workbench.core.request import Request
from workbench.core.run import Run
from workbench.core.tokens import occurrence_keys

from .aggregate import Aggregation, make_aggregation
from .checks import check_complete, check_same
from .heatmaps import WordMaps, attention_mass, prompt_words, token_mass, word_maps
from .scoring import binarize, iou
from .trajectory import decode_latents

KINDS = ("all", "swap", "of", "relation")

# Relation words for kind="relation", tried in this order; the first the prompt holds splits it.
RELATIONS = ("left of", "right of", "above", "below", "of", "and", "with", "on", "under", "beside")
_STYLE_PREFIX = re.compile(r"^(an? (?:painting|sketch|photo|drawing) of)\s+(.*)$")


def permutations(
    prompt: str,
    *,
    kind: str = "all",
    words: tuple[str, str] | None = None,
    max_orders: int = 24,
    seed: int = 0,
) -> list[str]:
    """Word orders of ``prompt`` to compare; the prompt itself always comes first.

    Args:
        prompt: the prompt; words are split on white space.
        kind: ``"all"``: every distinct order when there are at most ``max_orders`` of them, else
            ``max_orders`` distinct orders drawn with ``random.Random(seed)``; ``"swap"``: the two
            ``words`` exchanged (first occurrences); ``"of"``: ``"X of Y"`` -> ``"Y of X"`` around the
            first ``of``, for prompts whose relation word is that ``of`` (``"a painting of a horse"``,
            not ``"a red circle left of a blue square"``, whose ``of`` belongs to ``"left of"``);
            ``"relation"``: the two phrases around a relation word trade places (see
            ``relation_swap``), or the prompt alone when it holds none of ``RELATIONS``.
        words: the two words for ``kind="swap"``.
        max_orders: the most orders returned for ``kind="all"`` (the prompt included).
        seed: for sampling orders of long prompts.

    Raises:
        ValueError: a kind that does not fit the prompt (``"of"`` without ``of`` as its relation word,
            ``"swap"`` without both words); the message names the kinds that do fit it.

    Example:
        >>> permutations("a painting of a horse", kind="of")
        ['a painting of a horse', 'a horse of a painting']
        >>> permutations("a red circle left of a blue square", kind="relation")
        ['a red circle left of a blue square', 'a blue square left of a red circle']
    """
    if not isinstance(prompt, str) or not prompt.split():
        raise ValueError(f"prompt must be a non-empty str, got {prompt!r}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    tokens = prompt.split()
    if kind == "swap":
        if words is None or len(words) != 2:
            raise ValueError("kind='swap' needs words=(word_a, word_b)")
        lower = [t.lower() for t in tokens]
        missing = [w for w in words if w.lower() not in lower]
        if missing:
            raise ValueError(f"words {missing} are not in the prompt {prompt!r}; its words are {tokens}")
        i, j = lower.index(words[0].lower()), lower.index(words[1].lower())
        if i == j:
            raise ValueError(f"swap needs two different words, got {words!r}")
        tokens[i], tokens[j] = tokens[j], tokens[i]
        return [prompt, " ".join(tokens)]
    if kind == "of":
        lower = [t.lower() for t in tokens]
        relation = _relation_word(prompt)
        if relation != "of":
            held = "" if relation is None else f" (its relation word is {relation!r})"
            raise ValueError(
                f"kind='of' needs a prompt of the form 'X of Y' with 'of' as its relation word, got "
                f"{prompt!r}{held}; kinds that fit this prompt: {list(fitting_kinds(prompt)) or 'none'}"
            )
        k = lower.index("of", 1)
        return [prompt, " ".join(tokens[k + 1 :] + [tokens[k]] + tokens[:k])]
    if kind == "relation":
        swapped = relation_swap(prompt)
        return [prompt] if swapped is None else [prompt, swapped]
    if not isinstance(max_orders, int) or max_orders < 1:
        raise ValueError(f"max_orders must be a positive int, got {max_orders!r}")
    out = {prompt: None}
    if math.factorial(len(tokens)) <= 40320:  # up to 8 words: enumerate, then keep the first distinct ones
        distinct = list(dict.fromkeys(" ".join(p) for p in itertools.permutations(tokens)))
        if len(distinct) <= max_orders:
            out.update(dict.fromkeys(distinct))
            return list(out)
    rng = random.Random(seed)
    for _ in range(100 * max_orders):
        if len(out) >= max_orders:
            break
        shuffled = tokens[:]
        rng.shuffle(shuffled)
        out.setdefault(" ".join(shuffled), None)
    return list(out)


def _relation_word(prompt: str) -> str | None:
    """The relation word that splits ``prompt`` as ``relation_swap`` splits it (the first of
    ``RELATIONS`` it holds between two words, case ignored), or None."""
    text = " ".join(prompt.split()).lower()
    for rel in RELATIONS:
        if re.search(rf"\S\s+{re.escape(rel)}\s+\S", text):
            return rel
    return None


def fitting_kinds(prompt: str) -> tuple[str, ...]:
    """The ``permutations`` kinds that give ``prompt`` another word order, in ``KINDS`` order.

    ``"all"`` and ``"swap"`` need two different words, ``"of"`` needs ``of`` as the prompt's relation
    word, ``"relation"`` any relation word that ``relation_swap`` can swap around.

    Example:
        >>> fitting_kinds("a red circle left of a blue square")
        ('all', 'swap', 'relation')
        >>> fitting_kinds("a painting of a horse")
        ('all', 'swap', 'of', 'relation')
    """
    distinct = len({w.lower() for w in prompt.split()}) >= 2
    fits = {
        "all": distinct,
        "swap": distinct,
        "of": _relation_word(prompt) == "of",
        "relation": relation_swap(prompt) is not None,
    }
    return tuple(k for k in KINDS if fits[k])


def relation_swap(prompt: str) -> str | None:
    """The prompt with the phrases around its relation word swapped; None when there is none to swap.

    The first of ``RELATIONS`` that the prompt holds (at its last occurrence) splits it in two phrases
    that trade places; white space is collapsed. A leading "a painting of" / "a sketch of" (or photo,
    drawing) stays in front unless the relation is that "of" itself.

    Example:
        >>> relation_swap("a sketch of a red circle left of a blue square")
        'a sketch of a blue square left of a red circle'
        >>> relation_swap("a painting of a horse")
        'a horse of a painting'
    """
    text = " ".join(prompt.split())
    for rel in RELATIONS:
        m = re.search(rf"^(.*\S)\s+({re.escape(rel)})\s+(\S.*)$", text)
        if m is None:
            continue
        left, right, prefix = m.group(1), m.group(3), ""
        style = _STYLE_PREFIX.match(left)
        if style and rel != "of":
            prefix, left = style.group(1) + " ", style.group(2)
        swapped = f"{prefix}{right} {rel} {left}"
        return None if swapped == text else swapped
    return None


def word_order_requests(prompts: list[str], *, seed: int, **settings) -> list[Request]:
    """The plan of a word-order comparison: one ``Request`` per prompt, all from the same seed (so from
    the same initial noise). What ``word_order_runs`` runs, and what any sweep executor can run as it is.

    Example:
        >>> [r.prompt for r in word_order_requests(["a painting of a horse", "a horse of a painting"], seed=3)]
        ['a painting of a horse', 'a horse of a painting']
    """
    return [Request(p, seed=seed, **settings) for p in prompts]


def word_order_runs(pipe, prompts: list[str], *, seed: int, **generate_kwargs) -> list[Run]:
    """One run per prompt, all from the same seed: the plan of ``word_order_requests`` run on ``pipe``.

    Example:
        >>> runs = word_order_runs(pipe, permutations("a red circle left of a blue square", kind="of"), seed=3)  # doctest: +SKIP
    """
    from workbench.core.generate import generate

    from .seeds import split_settings

    settings, options = split_settings(generate_kwargs)
    options.setdefault("progress", False)
    return [generate(pipe, r, **options) for r in word_order_requests(prompts, seed=seed, **settings)]


def align_words(run_a: Run, run_b: Run) -> pd.DataFrame:
    """Align the words of two runs by identity (lowercased), repeats by occurrence order.

    Returns:
        DataFrame: ``word`` (lowercased), ``occurrence`` (0, 1, ...), ``index_a``, ``index_b`` (word
        indices; <NA> where the word is missing from one prompt).

    Example:
        >>> align_words(run_ab, run_ba)  # doctest: +SKIP
    """

    def keyed(run: Run) -> dict[tuple[str, int], int]:
        pairs = prompt_words(run)
        return dict(zip(occurrence_keys([w for w, _ in pairs]), [i for _, i in pairs]))

    a, b = keyed(run_a), keyed(run_b)
    keys = list(a) + [k for k in b if k not in a]
    df = pd.DataFrame(
        {
            "word": [k[0] for k in keys],
            "occurrence": [k[1] for k in keys],
            "index_a": pd.array([a.get(k) for k in keys], dtype="Int64"),
            "index_b": pd.array([b.get(k) for k in keys], dtype="Int64"),
        }
    )
    return df


@dataclass(frozen=True)
class WordOrderComparison:
    """Two runs that differ only in word order, compared.

    Attributes:
        prompts: (prompt a, prompt b).
        words: per aligned word: ``word``, ``occurrence``, ``index_a``, ``index_b``, ``label_a``,
            ``label_b``, ``mass_a``, ``mass_b``, ``mass_diff`` (b - a), ``map_corr`` (Pearson
            correlation of the two maps' pixels), ``map_iou`` (IoU of the thresholded maps).
        positions: per encoder position: ``position``, ``token_a``, ``token_b``, ``mass_a``, ``mass_b``.
        steps: per step: ``step``, ``x0_latent_rms`` and ``latent_rms`` between the two trajectories,
            and ``x0_pixel_rms`` ([0, 1] intensity) when decoded with ``pipe``.
        images: final images: ``pixel_rms``, ``latent_rms``, ``identical``.
        maps_a, maps_b: the word maps compared.
        aggregation: the recipe of the maps and masses.
        threshold, rule: how maps were thresholded for IoU (see ``scoring.binarize``).
        divergence_step: the first step at which ``x0_latent_rms`` reaches half its largest value.
    """

    prompts: tuple[str, str]
    words: pd.DataFrame
    positions: pd.DataFrame
    steps: pd.DataFrame
    images: dict
    maps_a: WordMaps
    maps_b: WordMaps
    aggregation: Aggregation
    threshold: float
    rule: str
    divergence_step: int
    image_a: np.ndarray
    image_b: np.ndarray


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    x, y = a.flatten().double(), b.flatten().double()
    x, y = x - x.mean(), y - y.mean()
    den = float(x.norm() * y.norm())
    return float((x * y).sum()) / den if den > 0 else float("nan")


def compare_word_order(
    run_a: Run,
    run_b: Run,
    pipe=None,
    aggregation: Aggregation | str | None = None,
    *,
    threshold: float = 0.4,
    rule: str = "minmax",
    **overrides,
) -> WordOrderComparison:
    """Compare two runs whose prompts hold the same words in a different order, from the same seed.

    Args:
        run_a, run_b: the runs (same model, seed, steps, size, guidance and scheduler; same words).
        pipe: when given, x0 at every step is decoded to measure pixel divergence too.
        aggregation, overrides: the heat-map recipe (see ``word_maps``), used for maps and masses.
        threshold, rule: for the IoU of the two maps of a word (see ``scoring.binarize``); the default
            min-max rule keeps the IoU informative for flat maps, where ``"max"`` would keep every pixel.

    Example:
        >>> cmp = compare_word_order(*word_order_runs(pipe, permutations(p, kind="of"), seed=1))  # doctest: +SKIP
    """
    check_same([run_a, run_b], ("model", "seed", "steps", "size", "guidance", "scheduler"), "word-order runs")
    check_complete([run_a, run_b])
    align = align_words(run_a, run_b)
    only_a = align[align.index_b.isna()].word.tolist()
    only_b = align[align.index_a.isna()].word.tolist()
    if only_a or only_b:
        raise ValueError(
            f"the prompts must hold the same words in another order; only in {run_a.prompt!r}: {only_a}, "
            f"only in {run_b.prompt!r}: {only_b}"
        )
    # words are aligned occurrence by occurrence, so each occurrence keeps its own map here
    agg = make_aggregation(aggregation, **{"repeats": "each", **overrides})
    maps_a, maps_b = word_maps(run_a, agg), word_maps(run_b, agg)
    mass_a = attention_mass(run_a, agg, by=None).set_index("word_index").mass
    mass_b = attention_mass(run_b, agg, by=None).set_index("word_index").mass
    rows = []
    for r in align.itertuples():
        ia, ib = int(r.index_a), int(r.index_b)
        ma, mb = maps_a.maps[maps_a.word_indices.index(ia)], maps_b.maps[maps_b.word_indices.index(ib)]
        rows.append(
            {
                "word": r.word,
                "occurrence": r.occurrence,
                "index_a": ia,
                "index_b": ib,
                "label_a": maps_a.labels[maps_a.word_indices.index(ia)],
                "label_b": maps_b.labels[maps_b.word_indices.index(ib)],
                "mass_a": float(mass_a[ia]),
                "mass_b": float(mass_b[ib]),
                "mass_diff": float(mass_b[ib] - mass_a[ia]),
                "map_corr": _corr(ma, mb),
                "map_iou": iou(binarize(ma, threshold, rule), binarize(mb, threshold, rule)),
            }
        )
    words = pd.DataFrame(rows)
    ta, tb = token_mass(run_a, agg), token_mass(run_b, agg)
    positions = pd.DataFrame(
        {
            "position": ta.position,
            "token_a": ta.token,
            "token_b": tb.token,
            "kind_a": ta.kind,
            "kind_b": tb.kind,
            "mass_a": ta.mass,
            "mass_b": tb.mass,
        }
    )
    steps = trajectory_divergence(run_a, run_b, pipe)
    img_a, img_b = np.asarray(run_a.image), np.asarray(run_b.image)
    images = {
        "pixel_rms": float(np.sqrt((((img_a.astype(float) - img_b.astype(float)) / 255) ** 2).mean())),
        "latent_rms": float((run_a.latents[-1] - run_b.latents[-1]).pow(2).mean().sqrt()),
        "identical": bool(np.array_equal(img_a, img_b)),
    }
    d = steps.x0_latent_rms.to_numpy()
    div = (
        int(steps.step.iloc[int(np.argmax(d >= 0.5 * d.max()))]) if d.max() > 0 else int(steps.step.iloc[-1])
    )
    for df in (words, positions, steps):
        df.attrs["aggregation"] = agg.describe()
        df.attrs["prompts"] = (run_a.prompt, run_b.prompt)
    return WordOrderComparison(
        prompts=(run_a.prompt, run_b.prompt),
        words=words,
        positions=positions,
        steps=steps,
        images=images,
        maps_a=maps_a,
        maps_b=maps_b,
        aggregation=agg,
        threshold=threshold,
        rule=rule,
        divergence_step=div,
        image_a=img_a,
        image_b=img_b,
    )


def trajectory_divergence(run_a: Run, run_b: Run, pipe=None) -> pd.DataFrame:
    """Per-step RMS distance between two runs' x0 and latents (and decoded x0 with ``pipe``).

    Example:
        >>> trajectory_divergence(run_a, run_b).plot(x="step", y="x0_latent_rms")  # doctest: +SKIP
    """
    check_same([run_a, run_b], ("model", "steps", "size"), "runs whose trajectories are compared")
    n = min(run_a.steps_done, run_b.steps_done)
    xa, xb = run_a.x0[:n], run_b.x0[:n]  # (n, C, h, w)
    df = pd.DataFrame({"step": range(n)})
    df["x0_latent_rms"] = (xa - xb).pow(2).flatten(1).mean(1).sqrt().numpy()
    df["latent_rms"] = (
        (run_a.latents[1 : n + 1] - run_b.latents[1 : n + 1]).pow(2).flatten(1).mean(1).sqrt().numpy()
    )
    if pipe is not None:
        da = decode_latents(pipe, xa).astype(np.float64) / 255  # (n, H, W, 3)
        db = decode_latents(pipe, xb).astype(np.float64) / 255  # (n, H, W, 3)
        df["x0_pixel_rms"] = np.sqrt(((da - db) ** 2).reshape(n, -1).mean(axis=1))
    return df


def compare_to_first(
    runs: list[Run], pipe=None, aggregation: Aggregation | str | None = None, **kwargs
) -> list[WordOrderComparison]:
    """``compare_word_order(runs[0], run, ...)`` for every later run (empty for a single run).

    Example:
        >>> compare_to_first(word_order_runs(pipe, orders, seed=0), pipe, normalize="max")  # doctest: +SKIP
    """
    runs = list(runs)
    return [compare_word_order(runs[0], r, pipe, aggregation, **kwargs) for r in runs[1:]]


def compare_orders(
    runs: list[Run], pipe=None, aggregation: Aggregation | str | None = None, **kwargs
) -> pd.DataFrame:
    """Compare every run with the first (e.g. the runs of ``permutations``): one row per other order.

    Returns:
        DataFrame: ``prompt``, ``image_pixel_rms``, ``final_latent_rms``, ``identical``,
        ``divergence_step``, ``mean_map_corr``, ``mean_map_iou``, ``max_abs_mass_diff``;
        ``attrs["comparisons"]`` holds the ``WordOrderComparison`` of each row.

    Example:
        >>> compare_orders(word_order_runs(pipe, permutations("a red circle left of a blue square"), seed=0))  # doctest: +SKIP
    """
    runs = list(runs)
    if len(runs) < 2:
        raise ValueError("compare_orders needs at least two runs (the first is the reference)")
    comparisons = compare_to_first(runs, pipe, aggregation, **kwargs)
    df = pd.DataFrame(
        [
            {
                "prompt": c.prompts[1],
                "image_pixel_rms": c.images["pixel_rms"],
                "final_latent_rms": c.images["latent_rms"],
                "identical": c.images["identical"],
                "divergence_step": c.divergence_step,
                "mean_map_corr": float(c.words.map_corr.mean()),
                "mean_map_iou": float(c.words.map_iou.mean()),
                "max_abs_mass_diff": float(c.words.mass_diff.abs().max()),
            }
            for c in comparisons
        ]
    )
    df.attrs["reference"] = runs[0].prompt
    df.attrs["comparisons"] = comparisons
    df.attrs["aggregation"] = comparisons[0].aggregation.describe()
    return df
