"""The main job: a small, real study on the embedded model — a prompt, its word-order swap, a few seeds.

For every seed it generates the prompt and its swap from the same initial noise, saves every run,
indexes them, and writes one HTML report with the side-by-side images, per-word maps, the divergence
of the two orders per step, the seed grid, x0 trajectories and commitment steps, and the full
provenance and re-run spec of every run.

Example:
    result = run_study("runs/study")
    result.report   # path of the HTML report
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from workbench import analysis, viz
from workbench.core.loading import model_source
from workbench.core.run import Run
from workbench.names import DEFAULT_PROMPT
from workbench.report import report
from workbench.store.index import save_index
from workbench.store.recipe import save_recipe
from workbench.sweeps.executors import LocalExecutor
from workbench.sweeps.record import save_finished
from workbench.sweeps.runner import SweepEvents, run_sweep
from workbench.sweeps.spec import SweepSpec

__all__ = ["DEFAULT_PROMPT", "StudyFailedError", "StudyResult", "relation_holds", "run_study"]


class StudyFailedError(RuntimeError):
    """Runs of the study failed (non-finite latents) or stopped: no report is written, and the runs that
    ran to a stop are kept for inspection.

    Attributes:
        problems: one line per run that failed or stopped.
    """

    def __init__(self, problems: list[str], planned: int, runs: Path):
        self.problems = problems
        super().__init__(
            f"{len(problems)} of {planned} runs failed or stopped (first: {problems[0]}); "
            f"their folders are in {runs}; no report was written"
        )


@dataclass
class StudyResult:
    out: Path
    runs: list[Run]
    run_dirs: list[Path]
    report: Path
    index: Path
    summary: pd.DataFrame


def run_study(
    out: str | os.PathLike,
    *,
    model="toy",
    prompt: str = DEFAULT_PROMPT,
    swapped: str | None = None,
    seeds: tuple[int, ...] = (0, 1, 2, 3),
    steps: int = 25,
    guidance_scale: float | None = None,
    device: str | None = "cpu",
    log=print,
) -> StudyResult:
    """Run the word-order × seed study and write runs, index and report under ``out``.

    Args:
        out: output folder (created; an existing study there is replaced run by run).
        model: a pipeline, or a source for ``load_pipeline`` (default the embedded model).
        prompt: the prompt; ``swapped`` its other word order (default: the suggested swap).
        seeds: the seeds; each order runs once per seed, from the same initial noise.
        steps, guidance_scale: generation settings (``guidance_scale`` None: the model's own).
        device: where to run when ``model`` is a source.
        log: where progress lines go (``print``; pass ``lambda *_: None`` for silence).

    Raises:
        StudyFailedError: runs failed (their latents turned non-finite) or stopped; no report.
    """
    out = Path(out)
    swapped = _swap_of(prompt, swapped)
    if not seeds:
        raise ValueError("seeds must name at least one seed")
    seeds = tuple(dict.fromkeys(seeds))
    started = time.perf_counter()
    pipe = _pipeline(model, device)
    shown = model if isinstance(model, (str, os.PathLike)) else type(model).__name__
    log(f"model: {shown} · prompt “{prompt}” · swap “{swapped}” · seeds {list(seeds)}")
    spec = SweepSpec(
        model=model_source(pipe),
        prompts=[prompt, swapped],
        seeds=seeds,
        steps=steps,
        guidance_scales=guidance_scale,
    )
    by_key, folders = _run_pairs(spec, pipe, out, started, log)
    order = [(text, seed) for text in (prompt, swapped) for seed in seeds]
    runs, dirs = [by_key[k] for k in order], [folders[k] for k in order]
    index = save_index(out / "runs")
    summary = _per_seed(by_key, prompt, swapped, seeds)
    figures, seed_result = _figures(pipe, by_key, prompt, swapped, seeds, runs)
    path = report(
        runs,
        out / "report.html",
        title=f"Word order and seeds: {prompt}",
        figures=figures,
        tables=_tables(summary, seed_result),
        notes=_notes(runs[0], prompt, swapped, seeds, summary, seed_result),
        quiet=True,
    )
    _tell(log, summary, out, len(runs), index, path, started)
    return StudyResult(out=out, runs=runs, run_dirs=dirs, report=path, index=index, summary=summary)


def _swap_of(prompt: str, swapped: str | None) -> str:
    """The prompt's other word order: ``swapped``, or the suggested swap of its relation."""
    if swapped is not None:
        return swapped
    orders = analysis.permutations(prompt, kind="relation")
    if len(orders) < 2:
        raise ValueError(f"no word-order swap found for {prompt!r}; pass swapped=...")
    return orders[1]


def _pipeline(model, device: str | None):
    from workbench.core.loading import load_pipeline

    return load_pipeline(model, device=device) if isinstance(model, (str, os.PathLike)) else model


def _run_pairs(spec: SweepSpec, pipe, out: Path, started: float, log) -> tuple[dict, dict]:
    """The study's runs, as a sweep on ``pipe`` kept in memory and saved run by run as it goes:
    ``({(prompt, seed): Run}, {(prompt, seed): folder})``. A failed or stopped run stops the study (its
    folder stays for inspection)."""
    prompt, swapped = spec.prompts
    saver = _SaveRuns(out, {prompt: "a", swapped: "b"}, started, log)
    result = run_sweep(spec, executor=LocalExecutor(pipe=pipe), events=saver, progress=False, log=None)
    runs = list(result.runs.values())
    problems = [f"seed {r.seed}, {r.failure or 'incomplete'}" for r in runs if r.failure or not r.complete]
    raised = result.index[
        (result.index.status == "failed") & ~result.index.request_id.isin(list(result.runs))
    ]
    problems += [f"seed {row.seed}, “{row.prompt}”: {row.error}" for row in raised.itertuples()]
    if problems:  # a failed run is kept on disk for inspection, never summarised as a finding
        raise StudyFailedError(problems, len(spec.plan()), out / "runs")
    return {(r.prompt, r.seed): r for r in runs}, saver.folders


def _per_seed(by_key: dict, prompt: str, swapped: str, seeds) -> pd.DataFrame:
    """One row per seed: the placement check, and how far the two orders end apart."""
    rows = []
    for seed in seeds:
        a, b = by_key[(prompt, seed)], by_key[(swapped, seed)]
        pixels = np.abs(np.asarray(a.image, dtype=float) - np.asarray(b.image, dtype=float)).mean() / 255
        rows.append(
            {
                "seed": seed,
                "relation as written (prompt)": relation_holds(a),
                "relation as written (swap)": relation_holds(b),
                "x0 divergence at the last step": float(
                    analysis.trajectory_divergence(a, b)["x0_latent_rms"].iloc[-1]
                ),
                "mean pixel difference": float(pixels),
                "commitment step (prompt)": analysis.commit_step(analysis.change_curves(a)),
                "commitment step (swap)": analysis.commit_step(analysis.change_curves(b)),
            }
        )
    return pd.DataFrame(rows)


def _figures(pipe, by_key: dict, prompt: str, swapped: str, seeds, runs: list[Run]):
    """The report's figures (the first seed's filmstrip, its two orders compared, the seed panels) and
    the seed study they come from."""
    first = [by_key[(prompt, seeds[0])], by_key[(swapped, seeds[0])]]
    strip = analysis.filmstrip(pipe, first[0])
    curves = analysis.change_curves(first[0], strip=strip)
    figures = _captioned(
        f"“{prompt}”, seed {seeds[0]}",
        [viz.Panel.of(viz.filmstrip_figure(strip)), viz.Panel.of(viz.change_curve_figure(curves))],
    )
    comparisons = analysis.compare_to_first(first, pipe, normalize="max")
    figures += _captioned(f"Word order (seed {seeds[0]})", viz.word_order_panels(first, comparisons))
    seed_result = analysis.seed_study(runs)
    figures += _captioned("Seeds", viz.seed_panels(seed_result))
    return figures, seed_result


def _tables(summary: pd.DataFrame, seed_result) -> list:
    return [
        ("Per seed: the prompt against its swap", summary),
        (
            "Commitment steps (x0 within a quarter of the noise's distance from the final latent)",
            seed_result.commit_steps,
        ),
    ]


def _notes(run: Run, prompt: str, swapped: str, seeds, summary: pd.DataFrame, seed_result) -> str:
    """The report's prose: what ran (the guidance the runs used), the variance split, the verdict."""
    split = analysis.image_variance(seed_result.grid).share if len(seeds) > 1 else None
    variance = (
        "Variance of the final images: "
        + ", ".join(f"{k} {split[k]:.0%}" for k in ("prompt", "seed", "interaction"))
        + ". "
        if split is not None
        else ""
    )
    return (
        f"Study: “{prompt}” against its word-order swap “{swapped}”, seeds {list(seeds)}, "
        f"{run.config.steps} steps, guidance {run.config.guidance_scale}. Each pair shares its initial noise. "
        + variance
        + _verdict(summary)
    )


def _tell(log, summary: pd.DataFrame, out: Path, runs: int, index: Path, path: Path, started: float) -> None:
    log(summary.to_string(index=False))
    log(_verdict(summary))
    log(f"runs:   {out / 'runs'} ({runs} run folders, each with spec.json)")
    log(f"index:  {index}")
    log(
        f"report: {path}  — open it in a web browser (JupyterLab opens HTML files untrusted: press 'Trust HTML' there)"
    )
    log(f"done in {time.perf_counter() - started:.1f} s")


class _SaveRuns(SweepEvents):
    """Saves each run of the study's sweep as it finishes, as ``OUT/runs/order-a_seed-3`` (the prompt) or
    ``order-b_seed-3`` (its swap), with its re-run spec; failed runs that ran are kept for inspection."""

    def __init__(self, out: Path, tags: dict[str, str], started: float, log):
        self.out, self.tags, self.t0, self.log = out, tags, started, log
        self.folders: dict[tuple[str, int], Path] = {}

    def finished(self, worker, outcome, row):
        run = outcome.run
        if run is None:
            return
        name = f"order-{self.tags[run.prompt]}_seed-{run.seed}"
        path = self.out / save_finished(run, self.out, name)["path"]
        save_recipe(run, path / "spec.json")
        self.folders[(run.prompt, run.seed)] = path
        self.log(f"  {path}  ({time.perf_counter() - self.t0:.1f} s)")


_RELATION = re.compile(
    r"(?:an? (?:painting|sketch) of )?an? (?:small |big )?(\w+) (\w+) (left of|right of|above|below) "
    r"an? (?:small |big )?(\w+) (\w+)"
)


def _verdict(summary: pd.DataFrame) -> str:
    a, b = summary["relation as written (prompt)"], summary["relation as written (swap)"]
    if a.isna().any() or b.isna().any():
        return "The prompt is not a two-object toy-world caption: no placement check."
    flips = int((a.astype(bool) & b.astype(bool)).sum())
    return (
        f"Placement as written: prompt {int(a.astype(bool).sum())}/{len(a)} seeds, swap {int(b.astype(bool).sum())}/{len(b)}; "
        f"swapping the object words moved the objects in {flips}/{len(a)} seeds."
    )


def relation_holds(run: Run) -> bool | None:
    """For a toy-world caption ("a red circle left of a blue square"): do the two coloured objects
    stand in the image as the caption says (the toy world's colour checker)? None when the prompt is
    not such a caption or the image has no final frame."""
    m = _RELATION.fullmatch(run.prompt.strip().lower())
    if m is None or run.image is None:
        return None
    from workbench.toy.checker import detect
    from workbench.toy.checker import relation_holds as holds

    first, _, relation, second, _ = m.groups()
    found = detect(np.asarray(run.image.convert("RGB")))
    if first not in found or second not in found:
        return False
    return bool(holds(found[first].center, found[second].center, relation))


def _captioned(prefix: str, panels: list[viz.Panel]) -> list:
    """(caption, figure) pairs of the figure panels; the caption is the prefix and the panel's own."""
    return [
        (f"{prefix}: {p.caption}" if p.caption else prefix, p.figure) for p in panels if p.figure is not None
    ]
