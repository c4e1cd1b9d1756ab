"""The main job: a small, real study on the embedded model — a prompt, its word-order swap, a few seeds.

For every seed it generates the prompt and its swap from the same initial noise, saves every run,
indexes them, and writes one HTML report with the side-by-side images, per-word maps, the divergence
of the two orders per step, the seed grid, x0 trajectories and commitment steps, and the full
provenance and re-run spec of every run. With ``interventions=True`` it also runs the causal word-order
lab (``workbench.lab``) on the same pair and seeds and adds its four curves to the report.

Example:
    result = run_study("runs/study")
    result.report   # path of the HTML report
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from workbench import analysis, viz
from workbench.core.errors import FieldError
from workbench.core.loading import model_source
from workbench.core.run import Run
from workbench.lab.causal import Caption, LabResult, LabSettings, lab_size, relation_holds, run_lab
from workbench.names import DEFAULT_PROMPT
from workbench.report import report
from workbench.store.index import save_index
from workbench.store.recipe import save_recipe
from workbench.sweeps.executors import LocalExecutor
from workbench.sweeps.record import save_finished
from workbench.sweeps.runner import SweepEvents, run_sweep
from workbench.sweeps.spec import SweepSpec

__all__ = [
    "DEFAULT_PROMPT",
    "StudyFailedError",
    "StudyResult",
    "default_ks",
    "lab_lines",
    "relation_holds",
    "run_study",
]


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
    lab: LabResult | None = None  # the causal word-order lab, when the study ran it
    lab_table: Path | None = None  # its summary as CSV (rows beside it), when it ran


INTERVENTIONS = "Interventions: does attention cause the layout?"  # the report's section on the lab
LAB_TABLE = "Interventions: the curves' points (mean over (pair, seed) units, 95% bootstrap interval)"


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
    interventions: bool = False,
    lab_ks: tuple[int, ...] | None = None,
    log=print,
) -> StudyResult:
    """Run the word-order × seed study and write runs, index and report under ``out``.

    Args:
        out: output folder (created; an existing study there is replaced run by run).
        model: a pipeline, or a source for ``load_pipeline`` (default the embedded UNet model); a list
            of them runs the same study on each and writes one report comparing them side by side
            (``workbench.crossmodel.compare_models``: each model's runs in ``out/<model>/``).
        prompt: the prompt; ``swapped`` its other word order (default: the suggested swap).
        seeds: the seeds; each order runs once per seed, from the same initial noise.
        steps, guidance_scale: generation settings (``guidance_scale`` None: the model's own).
        device: where to run when ``model`` is a source.
        interventions: also run the causal word-order lab (``workbench.lab.run_lab``) on the prompt and
            its swap with the same seeds and settings, and add its four curves, their table and how
            placement was judged to the report (about 16 more generations per seed on the embedded model).
        lab_ks: the steps the lab's curves start their edit at (default ``default_ks(steps)``).
        log: where progress lines go (``print``; pass ``lambda *_: None`` for silence).

    Raises:
        StudyFailedError: runs failed (their latents turned non-finite) or stopped; no report.
        ValueError: bad settings, checked before the model loads.
    """
    out = Path(out)
    swapped = _swap_of(prompt, swapped)
    if not seeds:
        raise ValueError("seeds must name at least one seed")
    seeds = tuple(dict.fromkeys(seeds))
    lab = _lab_settings(prompt, swapped, seeds, steps, guidance_scale, lab_ks) if interventions else None
    if isinstance(model, (list, tuple)):  # several models: the same study on each, one report
        from workbench.crossmodel import compare_models

        return compare_models(
            out, list(model), (prompt, swapped), seeds, steps, guidance_scale, device, lab, log
        )
    started = time.perf_counter()
    pipe = _pipeline(model, device)
    shown = model if isinstance(model, (str, os.PathLike)) else type(model).__name__
    log(f"model: {shown} · prompt “{prompt}” · swap “{swapped}” · seeds {list(seeds)}")
    m = study_model(pipe, out, (prompt, swapped), seeds, steps, guidance_scale, lab, started, log)
    path = _write_report(pipe, out, m.by_key, (prompt, swapped), seeds, m.runs, m.summary, m.lab)
    lab_table = _save_lab(m.lab, out) if m.lab is not None else None
    _tell(log, m.summary, out, len(m.runs), m.index, path, started)
    return StudyResult(
        out=out,
        runs=m.runs,
        run_dirs=m.dirs,
        report=path,
        index=m.index,
        summary=m.summary,
        lab=m.lab,
        lab_table=lab_table,
    )


@dataclass
class ModelStudy:
    """One model's part of a study: its runs by (prompt, seed), in order, their folders, the index, the
    per-seed summary and, when asked for, the lab's result."""

    pipe: object
    by_key: dict
    runs: list[Run]
    dirs: list[Path]
    index: Path
    summary: pd.DataFrame
    lab: LabResult | None


def study_model(
    pipe, out: Path, orders: tuple[str, str], seeds, steps: int, guidance_scale, lab, started: float, log
) -> ModelStudy:
    """Run the prompt and its swap with every seed on ``pipe`` into ``out/runs``, index them, summarise
    each seed and, with ``lab`` settings, run the causal lab on the same pair."""
    prompt, swapped = orders
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
    lab_result = _run_lab(pipe, lab, log) if lab is not None else None
    return ModelStudy(pipe, by_key, runs, dirs, index, summary, lab_result)


def _write_report(pipe, out: Path, by_key: dict, orders, seeds, runs, summary, lab: LabResult | None) -> Path:
    """The study's HTML report; with the lab's result, its section too (the lab's figure comes last
    among the figures and its table first among the tables, so that the two stand together)."""
    prompt, swapped = orders
    figures, seed_result = _figures(pipe, by_key, prompt, swapped, seeds, runs)
    tables = _tables(summary, seed_result)
    notes = _notes(runs[0], prompt, swapped, seeds, summary, seed_result)
    if lab is not None:
        figure, table = lab_parts(lab)
        figures.append(figure)
        tables.insert(0, table)
        notes += " " + lab_note(lab)
    return report(
        runs,
        out / "report.html",
        title=f"Word order and seeds: {prompt}",
        figures=figures,
        tables=tables,
        notes=notes,
        quiet=True,
    )


def lab_parts(lab: LabResult) -> tuple[tuple[str, object], tuple[str, pd.DataFrame]]:
    """The lab's (caption, figure) of its four curves and (caption, table) of their points."""
    units = len(lab.settings.pairs) * len(lab.settings.seeds)
    figure = viz.lab_curves_figure(lab.summary, judge=lab.judge, units=units)
    return (INTERVENTIONS, figure), (LAB_TABLE, lab.summary.round({"mean": 3, "low": 3, "high": 3}))


def default_ks(steps: int) -> tuple[int, ...]:
    """The lab's default start steps for a study of ``steps`` steps: 0, half way, three quarters, three
    before the end and ``steps`` (no edit), those in 0..steps, without repeats, in order."""
    ks = (0, steps // 2, 3 * steps // 4, steps - 3, steps)
    return tuple(sorted({k for k in ks if 0 <= k <= steps}))


def _lab_settings(prompt: str, swapped: str, seeds, steps: int, guidance_scale, lab_ks) -> LabSettings:
    """The lab's settings for the study's pair and seeds, checked before anything generates."""
    if Caption.parse(prompt) is None or Caption.parse(swapped) is None:
        raise ValueError(
            f"interventions need the prompt and its swap to be two-object captions (like {DEFAULT_PROMPT!r}); "
            f"got {prompt!r} and {swapped!r}"
        )
    if lab_ks is None:
        ks = default_ks(steps)
    else:
        ks = tuple(sorted(set(lab_ks)))
        if not ks:
            raise FieldError("lab_ks", "must name at least one step")
        late = [k for k in ks if not 0 <= k <= steps]
        if late:
            raise FieldError("lab_ks", f"must lie in 0..steps ({steps}); got {late}")
    return LabSettings(
        pairs=((prompt, swapped),), seeds=seeds, steps=steps, guidance_scale=guidance_scale, ks=ks
    )


def _run_lab(pipe, settings: LabSettings, log) -> LabResult:
    """The lab on ``pipe``, with a progress line about every eighth of its generations (ten at most)."""
    started, total = time.perf_counter(), lab_size(pipe, settings)
    every = max(1, math.ceil(total / 8))
    log(f"interventions: the causal word-order lab, ks {list(settings.ks)}, {total} generations")

    def progress(done: int, _total: int) -> None:
        if done % every == 0:
            log(f"  lab: {done} generations ({time.perf_counter() - started:.1f} s)")

    result = run_lab(pipe, settings, progress=progress)
    log(f"  lab: done in {time.perf_counter() - started:.1f} s")
    return result


def lab_note(result: LabResult) -> str:
    """The sentence the report says about the lab: what judged placement and what each point averages."""
    settings = result.settings
    units = len(settings.pairs) * len(settings.seeds)
    unedited = f" ({settings.steps}: no edit)" if settings.steps in settings.ks else ""
    ablate = (
        ""
        if "ablate" in set(result.summary.curve)
        else " The ablation curve needs the toy world's checker: not judged on this model."
    )
    return (
        f"Interventions: placement was judged by {result.judge}; each point averages {units} (pair, seed) "
        f"units (the prompt and its swap × {len(settings.seeds)} seeds), with a 95% bootstrap interval over "
        f"them; edits start at steps {list(settings.ks)} of {settings.steps}{unedited}." + ablate
    )


def _save_lab(result: LabResult, out: Path) -> Path:
    """The lab's summary as ``OUT/interventions.csv`` and its rows as ``OUT/interventions-rows.csv``."""
    out.mkdir(parents=True, exist_ok=True)
    result.rows.to_csv(out / "interventions-rows.csv", index=False)
    path = out / "interventions.csv"
    result.summary.to_csv(path, index=False)
    return path


def lab_lines(summary: pd.DataFrame) -> list[str]:
    """The lab's summary in a line per curve: ``curve: x mean [low, high] · ...``."""
    lines = []
    for curve, g in summary.groupby("curve", sort=False):
        points = " · ".join(
            f"{x} {m:.2f} [{lo:.2f}, {hi:.2f}]" for x, m, lo, hi in zip(g.x, g["mean"], g.low, g.high)
        )
        lines.append(f"{curve}: {points}")
    return lines


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


def _verdict(summary: pd.DataFrame) -> str:
    a, b = summary["relation as written (prompt)"], summary["relation as written (swap)"]
    if a.isna().any() or b.isna().any():
        return "The prompt is not a two-object toy-world caption: no placement check."
    flips = int((a.astype(bool) & b.astype(bool)).sum())
    return (
        f"Placement as written: prompt {int(a.astype(bool).sum())}/{len(a)} seeds, swap {int(b.astype(bool).sum())}/{len(b)}; "
        f"swapping the object words moved the objects in {flips}/{len(a)} seeds."
    )


def _captioned(prefix: str, panels: list[viz.Panel]) -> list:
    """(caption, figure) pairs of the figure panels; the caption is the prefix and the panel's own."""
    return [
        (f"{prefix}: {p.caption}" if p.caption else prefix, p.figure) for p in panels if p.figure is not None
    ]
