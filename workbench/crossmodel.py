"""The same study on several models, compared side by side (``workbench study --model toy toy-dit``).

Each model runs the prompt and its word-order swap with the same seeds and settings (its runs, index
and lab table in ``OUT/<model>/``); one report at ``OUT/report.html`` sets them side by side: placement
as written and after the swap, the final images, each shared word's map, word-map IoU against the toy
world's masks per word and per block / resolution, and the commitment step of each model — every run,
figure and table labelled by its model.

Example:
    result = run_study("runs/study", model=["toy", "toy-dit"])
    result.ious.groupby(["model", "layers"]).iou.mean()
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from workbench import viz
from workbench.analysis.heatmaps import word_maps
from workbench.core.loading import check_source, model_source
from workbench.core.run import Run
from workbench.lab.causal import Caption
from workbench.report import compare_maps_figure, guidance_text, model_name, report
from workbench.study import (
    ModelStudy,
    _figures,
    _pipeline,
    _save_lab,
    _tables,
    _verdict,
    lab_note,
    lab_parts,
    study_model,
)
from workbench.toy.checker import detect
from workbench.toy.evaluate import MAPS, block_maps, mask_iou

IOU_COLUMNS = ["model", "prompt", "seed", "layers", "word", "role", "iou"]


@dataclass
class ComparisonResult:
    """What ``compare_models`` made: each model's study (by model name, in order), the report, the
    per-seed summaries with a ``model`` column, and every IoU measured (``mask_ious`` rows of every
    run, with ``model``, ``prompt`` and ``seed``)."""

    out: Path
    studies: dict[str, ModelStudy]
    report: Path
    summary: pd.DataFrame
    ious: pd.DataFrame  # a comparison's labs are per model: ``studies[name].lab``

    @property
    def runs(self) -> list[Run]:
        return [run for study in self.studies.values() for run in study.runs]


def mask_ious(run: Run) -> pd.DataFrame:
    """IoU of the run's colour- and shape-word maps with the segmented masks of the objects it drew.

    The toy evaluation's rule (``workbench.toy.evaluate``): the ``"all-mean"`` recipe at the image size,
    min-max normalised, threshold 0.5, against the object the toy world's checker found for that
    colour. One row per (layers, word): ``layers`` is ``"all"`` or one block / resolution
    (``analysis.block_groups``). Empty when the prompt is not a two-object toy caption, the run has no
    image or attention, or the checker found neither object.
    """
    parsed = Caption.parse(run.prompt)
    if parsed is None or run.image is None or not run.attention.probs:
        return pd.DataFrame(columns=["layers", "word", "role", "iou"])
    found = detect(np.asarray(run.image.convert("RGB")))
    second_shape = 1 if parsed.second[1] == parsed.first[1] else 0  # a repeated shape word: its 2nd use
    words = [(parsed.first, 0), (parsed.second, second_shape)]
    size = (run.image.height, run.image.width)
    groups = {"all": word_maps(run, MAPS, size=size), **block_maps(run, size)}
    rows = []
    for label, maps in groups.items():
        for (colour, shape), occurrence in words:
            obj = found.get(colour)
            if obj is None:
                continue  # nothing drawn in that colour: no mask to compare with
            for role, word, k in (("colour", colour, 0), ("shape", shape, occurrence)):
                value = mask_iou(maps.get(word, k).float(), obj.mask)
                rows.append({"layers": label, "word": word, "role": role, "iou": value})
    return pd.DataFrame(rows, columns=["layers", "word", "role", "iou"])


def compare_models(
    out: Path, models: list, orders: tuple[str, str], seeds, steps: int, guidance_scale, device, lab, log
) -> ComparisonResult:
    """The study on each model (loaded in turn), then one report comparing them (see the module)."""
    if len(models) < 2:
        raise ValueError(f"comparing models needs two or more, got {len(models)}")
    for model in models:  # every source checked before any model runs (a bad last one wastes nothing)
        if isinstance(model, (str, os.PathLike)):
            check_source(model)
    started = time.perf_counter()
    studies: dict[str, ModelStudy] = {}
    for model in models:
        pipe = _pipeline(model, device)
        name = _unique(model_name({"source": model_source(pipe)}), studies)
        log(f"model {name}: prompt “{orders[0]}” · swap “{orders[1]}” · seeds {list(seeds)}")
        studies[name] = study_model(pipe, out / name, orders, seeds, steps, guidance_scale, lab, started, log)
        if studies[name].lab is not None:
            _save_lab(studies[name].lab, out / name)
    summary = pd.concat([s.summary.assign(model=n) for n, s in studies.items()], ignore_index=True)
    ious = _all_ious(studies)
    path = _write(out, studies, orders, seeds, summary, ious)
    for name, study in studies.items():
        log(f"{name}: {_verdict(study.summary)}")
    log(f"runs:   {', '.join(str(out / n / 'runs') for n in studies)}")
    log(f"report: {path}  — open it in a web browser")
    log(f"done in {time.perf_counter() - started:.1f} s")
    return ComparisonResult(out=out, studies=studies, report=path, summary=summary, ious=ious)


def _unique(name: str, taken) -> str:
    """``name``, or ``name #2``, ``#3``, ... when another model of the comparison has it."""
    k, label = 1, name
    while label in taken:
        k += 1
        label = f"{name} #{k}"
    return label


def _all_ious(studies: dict[str, ModelStudy]) -> pd.DataFrame:
    frames = [
        mask_ious(run).assign(model=name, prompt=run.prompt, seed=run.seed)
        for name, study in studies.items()
        for run in study.runs
    ]
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True)[IOU_COLUMNS] if frames else pd.DataFrame(columns=IOU_COLUMNS)


def placement_table(studies: dict[str, ModelStudy], orders: tuple[str, str]) -> pd.DataFrame:
    """One row per model: how often each order was placed as written, how often the swap moved the
    objects, and the median commitment step of each order (and as a fraction of the steps)."""
    rows = []
    for name, study in studies.items():
        s, run = study.summary, study.runs[0]
        a, b = s["relation as written (prompt)"], s["relation as written (swap)"]
        known = not (a.isna().any() or b.isna().any())
        commit = pd.concat([s["commitment step (prompt)"], s["commitment step (swap)"]]).dropna()
        median = float(commit.median()) if len(commit) else float("nan")
        rows.append(
            {
                "model": name,
                "pipeline": run.config.model.get("pipeline", ""),
                "guidance": guidance_text(run.config),
                "placed as written: prompt": f"{int(a.sum())}/{len(a)}" if known else "n/a",
                "placed as written: swap": f"{int(b.sum())}/{len(b)}" if known else "n/a",
                "the swap moved the objects": f"{int((a.astype(bool) & b.astype(bool)).sum())}/{len(a)}"
                if known
                else "n/a",
                "commitment step (median, both orders)": median,
                "as a fraction of the steps": round(median / run.config.steps, 2) if len(commit) else np.nan,
            }
        )
    return pd.DataFrame(rows)


def word_iou_table(ious: pd.DataFrame) -> pd.DataFrame:
    """Mean IoU per word (all layers), a column per model, over every seed and both orders."""
    whole = ious[ious.layers == "all"]
    table = whole.pivot_table(
        index=["role", "word"], columns="model", values="iou", aggfunc="mean", sort=False
    )
    table.columns.name = None
    return table.round(3).reset_index()


def block_iou_table(ious: pd.DataFrame) -> pd.DataFrame:
    """Mean IoU per model, block / resolution and role (colour or shape words), in depth order."""
    parts = ious[ious.layers != "all"]
    table = parts.groupby(["model", "layers", "role"], sort=False).iou.mean().reset_index()
    return table.assign(iou=table.iou.round(3))


def _write(out: Path, studies, orders, seeds, summary: pd.DataFrame, ious: pd.DataFrame) -> Path:
    """The comparison report: the side-by-side views first, then each model's own study, labelled."""
    figures, tables = _side_by_side(studies, orders, seeds, ious)
    for name, study in studies.items():
        by_model, seed_result = _figures(study.pipe, study.by_key, *orders, seeds, study.runs)
        figures += [(f"{name} · {caption}", fig) for caption, fig in by_model]
        tables += [(f"{name} · {caption}", df) for caption, df in _tables(study.summary, seed_result)]
        if study.lab is not None:
            (figure_caption, figure), (table_caption, table) = lab_parts(study.lab)
            figures.append((f"{name} · {figure_caption}", figure))
            tables.append((f"{name} · {table_caption}", table))
    runs = [run for study in studies.values() for run in study.runs]
    return report(
        runs,
        out / "report.html",
        title=f"Word order and seeds across models ({', '.join(studies)}): {orders[0]}",
        figures=figures,
        tables=tables,
        notes=_notes(studies, orders, seeds, ious),
        quiet=True,
    )


def _side_by_side(studies, orders, seeds, ious: pd.DataFrame) -> tuple[list, list]:
    """Figures and tables that set the models beside each other (first seed's images and maps, IoU)."""
    first = [study.by_key[(text, seeds[0])] for text in orders for study in studies.values()]
    names = [name for _ in orders for name in studies]
    titles = [f"{name}: “{run.prompt}”, seed {run.seed}" for name, run in zip(names, first)]
    figures = [
        (f"Models side by side: final images (seed {seeds[0]})", viz.side_by_side(first, titles)),
        (
            f"Models side by side: each word's map (seed {seeds[0]}; rows: the runs above, in order)",
            compare_maps_figure(first, scale="panel", max_words=max(len(r.words) for r in first)),
        ),
    ]
    placement = f"Placement and commitment, per model (prompt “{orders[0]}”, swap “{orders[1]}”)"
    tables = [(placement, placement_table(studies, orders))]
    if len(ious):
        blocks = block_iou_table(ious)
        figures.append(
            ("Models side by side: word-map IoU per block / resolution", viz.block_iou_figure(blocks))
        )
        tables += [
            (
                "Word-map IoU per word (all layers; mean over seeds and both orders), per model",
                word_iou_table(ious),
            ),
            ("Word-map IoU per block / resolution, per model", blocks),
        ]
    return figures, tables


def _notes(studies, orders, seeds, ious: pd.DataFrame) -> str:
    models = "; ".join(
        f"{name}: {study.runs[0].config.model.get('pipeline', '')}, {guidance_text(study.runs[0].config)}"
        for name, study in studies.items()
    )
    iou_note = (
        " IoU: the toy evaluation's rule (all-mean maps at the image size, min-max, threshold 0.5) against the "
        "segmented mask of the object each model drew."
        if len(ious)
        else " The prompt is not a two-object toy-world caption, so no IoU against masks is measured."
    )
    labs = " ".join(lab_note(s.lab) for s in studies.values() if s.lab is not None)
    return (
        f"The same study on {len(studies)} models: “{orders[0]}” against its word-order swap “{orders[1]}”, "
        f"seeds {list(seeds)}, {next(iter(studies.values())).runs[0].config.steps} steps; each pair shares "
        f"its initial noise within a model. Models — {models}. "
        + " ".join(f"{name}: {_verdict(s.summary)}" for name, s in studies.items())
        + iou_note
        + (" " + labs if labs else "")
    )


__all__ = [
    "ComparisonResult",
    "block_iou_table",
    "compare_models",
    "mask_ious",
    "placement_table",
    "word_iou_table",
]
