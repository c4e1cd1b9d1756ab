"""Seeds: grids of prompts × seeds, distances between trajectories, and a seed-vs-prompt variance split.

The variance split is a two-way analysis of variance without replication. For values ``y[p, s, ...]``
over ``P`` prompts and ``S`` seeds (each remaining axis, e.g. a pixel and channel, is a feature):

    total       = sum over p, s, f of (y[p, s, f] - mean[f])**2
    prompt      = S * sum over p, f of (mean_p[p, f] - mean[f])**2       (prompt main effect)
    seed        = P * sum over s, f of (mean_s[s, f] - mean[f])**2       (seed main effect)
    interaction = sum of (y - mean_p - mean_s + mean)**2 = total - prompt - seed

``mean`` is the grand mean, ``mean_p`` the mean over seeds of prompt p, ``mean_s`` the mean over prompts
of seed s. With one run per (prompt, seed) the interaction cannot be told apart from noise: it is
what neither the prompt nor the seed explains on its own (e.g. a seed that matters for one prompt only).
Shares are fractions of the total; the three add up to 1.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from workbench.core.request import Request, parse_seeds
from workbench.core.run import Run

from .aggregate import Aggregation, make_aggregation
from .checks import check_same
from .heatmaps import word_maps
from .trajectory import COMMIT_THRESHOLD, commit_steps


@dataclass(frozen=True)
class SeedGrid:
    """Runs over prompts × seeds: ``runs[i][j]`` is prompt ``prompts[i]`` with seed ``seeds[j]``."""

    prompts: list[str]
    seeds: list[int]
    runs: list[list[Run]]

    def run(self, prompt: str, seed: int) -> Run:
        if prompt not in self.prompts:
            raise ValueError(f"prompt {prompt!r} is not in the grid; prompts are {self.prompts}")
        if seed not in self.seeds:
            raise ValueError(f"seed {seed!r} is not in the grid; seeds are {self.seeds}")
        return self.runs[self.prompts.index(prompt)][self.seeds.index(seed)]

    def flat(self) -> list[Run]:
        return [r for row in self.runs for r in row]

    @classmethod
    def from_runs(cls, runs: Sequence[Run]) -> SeedGrid:
        """Runs already made, arranged as prompts × seeds (in order of first appearance).

        Every (prompt, seed) pair must be there; a repeated pair keeps its last run.

        Example:
            >>> SeedGrid.from_runs(lab.runs).seeds  # doctest: +SKIP
        """
        runs = list(runs)
        if not runs:
            raise ValueError("a seed grid needs at least one run")
        prompts = list(dict.fromkeys(r.prompt for r in runs))
        seeds = list(dict.fromkeys(r.seed for r in runs))
        by_key = {(r.prompt, r.seed): r for r in runs}
        missing = [(p, s) for p in prompts for s in seeds if (p, s) not in by_key]
        if missing:
            raise ValueError(f"the runs do not fill a prompts × seeds grid; missing {missing}")
        return cls(prompts=prompts, seeds=seeds, runs=[[by_key[(p, s)] for s in seeds] for p in prompts])


def seed_grid_requests(prompts: list[str], seeds: list[int], **settings) -> list[Request]:
    """The plan of a seed grid: one ``Request`` per prompt and seed, prompt by prompt.

    What ``seed_grid`` runs, and what any sweep executor can run as it is (``SeedGrid.from_runs`` puts
    the runs back in their grid).

    Args:
        prompts: distinct prompts.
        seeds: distinct seeds (``core.request.parse_seeds``: ints, or text such as ``"0-3"``).
        settings: the other ``Request`` fields (``steps``, ``guidance_scale``, ...), the same for every run.

    Example:
        >>> [(r.prompt, r.seed) for r in seed_grid_requests(["a red circle", "a blue square"], [0, 1], steps=4)]
        [('a red circle', 0), ('a red circle', 1), ('a blue square', 0), ('a blue square', 1)]
    """
    prompts = list(prompts) if isinstance(prompts, (list, tuple)) else prompts
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"prompts must be a non-empty list of str, got {prompts!r}")
    repeated = [p for p, n in Counter(prompts).items() if n > 1]
    if repeated:
        raise ValueError(f"prompts must be distinct; repeated: {repeated}")
    seeds = parse_seeds(seeds)
    return [Request(p, seed=s, **settings) for p in prompts for s in seeds]


def split_settings(kwargs: dict) -> tuple[dict, dict]:
    """``generate``'s keywords as (``Request`` fields, the call's own options such as ``policy``)."""
    fields = {f.name for f in dataclasses.fields(Request)}
    return {k: v for k, v in kwargs.items() if k in fields}, {
        k: v for k, v in kwargs.items() if k not in fields
    }


def seed_grid(pipe, prompts: list[str], seeds: list[int], **generate_kwargs) -> SeedGrid:
    """Generate every prompt with every seed (same settings otherwise): the plan of ``seed_grid_requests``
    run one request after another on ``pipe``.

    Args:
        pipe: the pipeline.
        prompts: distinct prompts.
        seeds: distinct seeds.
        generate_kwargs: passed to ``generate`` (steps, guidance_scale, policy, ...).

    Example:
        >>> grid = seed_grid(pipe, ["a red circle", "a blue square"], seeds=[0, 1, 2], steps=20)  # doctest: +SKIP
    """
    from workbench.core.generate import generate

    settings, options = split_settings(generate_kwargs)
    options.setdefault("progress", False)
    runs = [generate(pipe, r, **options) for r in seed_grid_requests(prompts, seeds, **settings)]
    return SeedGrid.from_runs(runs)


def trajectory_distances(runs: list[Run] | SeedGrid) -> pd.DataFrame:
    """Per step, the RMS distance between the x0 (and latents) of every pair of runs.

    For a ``SeedGrid``, pairs are the seeds of each prompt (how much the seed alone moves the trajectory).

    Returns:
        Long DataFrame: ``step``, ``prompt_a``, ``seed_a``, ``prompt_b``, ``seed_b``, ``x0_latent_rms``,
        ``latent_rms``.

    Example:
        >>> trajectory_distances(grid).groupby("step").x0_latent_rms.mean()  # doctest: +SKIP
    """
    if isinstance(runs, SeedGrid):
        pairs = [pair for row in runs.runs for pair in itertools.combinations(row, 2)]
        flat = runs.flat()
    else:
        flat = list(runs)
        pairs = list(itertools.combinations(flat, 2))
    if len(flat) < 2:
        raise ValueError("trajectory distances need at least two runs")
    check_same(flat, ("model", "steps", "size"), "runs whose trajectories are compared")
    frames = []
    for a, b in pairs:
        n = min(a.steps_done, b.steps_done)
        frames.append(
            pd.DataFrame(
                {
                    "step": range(n),
                    "prompt_a": a.prompt,
                    "seed_a": a.seed,
                    "prompt_b": b.prompt,
                    "seed_b": b.seed,
                    "x0_latent_rms": (a.x0[:n] - b.x0[:n]).pow(2).flatten(1).mean(1).sqrt().numpy(),
                    "latent_rms": (a.latents[1 : n + 1] - b.latents[1 : n + 1])
                    .pow(2)
                    .flatten(1)
                    .mean(1)
                    .sqrt()
                    .numpy(),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def variance_split(values) -> pd.DataFrame:
    """Split the variance of ``values[prompt, seed, ...]`` into prompt, seed and interaction parts.

    See the module docstring for the method. Trailing axes are features, summed over.

    Returns:
        DataFrame indexed by ``component`` (``prompt``, ``seed``, ``interaction``, ``total``) with
        ``sum_sq``, ``dof`` (degrees of freedom), ``mean_sq`` and ``share`` (of the total).

    Example:
        >>> variance_split(np.random.rand(3, 4, 32, 32, 3))  # doctest: +SKIP
    """
    y = (
        values.detach().cpu().double().numpy()
        if isinstance(values, torch.Tensor)
        else np.asarray(values, float)
    )
    if y.ndim < 2:
        raise ValueError(f"values must be (prompts, seeds, ...), got shape {y.shape}")
    p, s = y.shape[:2]
    if p < 2 or s < 2:
        raise ValueError(f"a variance split needs at least 2 prompts and 2 seeds, got {p} × {s}")
    y = y.reshape(p, s, -1)  # (P, S, F)
    grand = y.mean(axis=(0, 1))  # (F,)
    mp = y.mean(axis=1)  # (P, F)
    ms = y.mean(axis=0)  # (S, F)
    total = float(((y - grand) ** 2).sum())
    ss_p = float(s * ((mp - grand) ** 2).sum())
    ss_s = float(p * ((ms - grand) ** 2).sum())
    ss_i = float(((y - mp[:, None] - ms[None] + grand) ** 2).sum())
    f = y.shape[-1]
    dof = {
        "prompt": (p - 1) * f,
        "seed": (s - 1) * f,
        "interaction": (p - 1) * (s - 1) * f,
        "total": (p * s - 1) * f,
    }
    ss = {"prompt": ss_p, "seed": ss_s, "interaction": ss_i, "total": total}
    df = pd.DataFrame(
        {
            "sum_sq": ss,
            "dof": dof,
            "mean_sq": {k: ss[k] / dof[k] if dof[k] else float("nan") for k in ss},
            "share": {k: ss[k] / total if total > 0 else float("nan") for k in ss},
        }
    )
    df.index.name = "component"
    return df


def _grid_check(grid: SeedGrid) -> None:
    if not isinstance(grid, SeedGrid):
        raise TypeError(f"grid must be a SeedGrid from seed_grid, got {type(grid).__name__}")
    check_same(grid.flat(), ("model", "steps", "size", "guidance", "scheduler"), "runs of a seed grid")


def image_variance(grid: SeedGrid, *, what: str = "image") -> pd.DataFrame:
    """Seed-vs-prompt split of the final images (``what="image"``, [0, 1] intensities) or latents.

    Example:
        >>> image_variance(grid).share  # doctest: +SKIP
    """
    _grid_check(grid)
    if what == "image":
        for r in grid.flat():
            if r.image is None:
                raise ValueError(f"run {r.prompt!r} seed {r.seed} has no final image (interrupted)")
        values = np.stack([[np.asarray(r.image, dtype=np.float64) / 255 for r in row] for row in grid.runs])
    elif what == "latent":
        values = torch.stack([torch.stack([r.latents[-1] for r in row]) for row in grid.runs])
    else:
        raise ValueError(f"what must be 'image' or 'latent', got {what!r}")
    df = variance_split(values)
    df.attrs["what"] = what
    return df


def step_variance(grid: SeedGrid) -> pd.DataFrame:
    """The split of x0 (latent) at every step: when does the seed stop and the prompt start to matter?

    Returns:
        Long DataFrame: ``step``, ``component``, ``share``, ``sum_sq``.

    Example:
        >>> step_variance(grid).pivot(index="step", columns="component", values="share")  # doctest: +SKIP
    """
    _grid_check(grid)
    n = min(r.steps_done for r in grid.flat())
    frames = []
    for t in range(n):
        values = torch.stack([torch.stack([r.x0[t] for r in row]) for row in grid.runs])  # (P, S, C, h, w)
        split = variance_split(values).reset_index()
        split.insert(0, "step", t)
        frames.append(split[["step", "component", "share", "sum_sq"]])
    return pd.concat(frames, ignore_index=True)


def map_variance(
    grid: SeedGrid,
    aggregation: Aggregation | str | None = None,
    *,
    words: list[str] | None = None,
    **overrides,
) -> pd.DataFrame:
    """Seed-vs-prompt split of each word's heat map, for words every prompt of the grid holds.

    A word is matched by identity (lowercased, first occurrence) in every prompt.

    Returns:
        Long DataFrame: ``word``, ``component``, ``share``, ``sum_sq``; ``attrs["aggregation"]``.

    Example:
        >>> map_variance(grid, "daam", words=["circle"])  # doctest: +SKIP
    """
    _grid_check(grid)
    agg = make_aggregation(aggregation, **overrides)
    maps = [[word_maps(r, agg) for r in row] for row in grid.runs]
    common = [w.lower() for w in maps[0][0].words]
    for row in maps:
        lower = {w.lower() for w in row[0].words}
        common = [w for w in common if w in lower]
    common = list(dict.fromkeys(common))
    if words is not None:
        missing = [w for w in words if w.lower() not in common]
        if missing:
            raise ValueError(
                f"words {missing} are not in every prompt of the grid; shared words are {common}"
            )
        common = [w.lower() for w in words]
    frames = []
    for w in common:
        values = torch.stack([torch.stack([m.get(w) for m in row]) for row in maps])  # (P, S, H, W)
        split = variance_split(values).reset_index()
        split.insert(0, "word", w)
        frames.append(split[["word", "component", "share", "sum_sq"]])
    df = pd.concat(frames, ignore_index=True)
    df.attrs["aggregation"] = agg.describe()
    return df


@dataclass(frozen=True)
class SeedStudy:
    """What a seed study of some runs shows, as far as the grid's shape allows.

    Attributes:
        grid: the runs as prompts × seeds.
        commit_steps: the commitment step of every run (``trajectory.commit_steps``).
        threshold: the commitment threshold used.
        distances: ``trajectory_distances(grid)``; None with a single seed.
        step_variance: ``step_variance(grid)``; None unless there are 2 or more prompts and seeds.
    """

    grid: SeedGrid
    commit_steps: pd.DataFrame
    threshold: float
    distances: pd.DataFrame | None
    step_variance: pd.DataFrame | None


def seed_study(runs: Sequence[Run] | SeedGrid, *, threshold: float = COMMIT_THRESHOLD) -> SeedStudy:
    """The grid, commitment steps, trajectory distances and per-step variance split of some runs.

    Args:
        runs: runs that fill a prompts × seeds grid (or a ``SeedGrid``).
        threshold: for the commitment steps (see ``trajectory.commit_step``).

    Example:
        >>> seed_study(lab.runs).commit_steps  # doctest: +SKIP
    """
    flat = runs.flat() if isinstance(runs, SeedGrid) else list(runs)
    grid = runs if isinstance(runs, SeedGrid) else SeedGrid.from_runs(flat)
    several_seeds = len(grid.seeds) > 1
    return SeedStudy(
        grid=grid,
        commit_steps=commit_steps(flat, threshold),
        threshold=threshold,
        distances=trajectory_distances(grid) if several_seeds else None,
        step_variance=step_variance(grid) if several_seeds and len(grid.prompts) > 1 else None,
    )
