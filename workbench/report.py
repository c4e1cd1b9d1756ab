"""HTML reports: one self-contained file with the figures, the full provenance and the re-run specs.

plotly.js is inlined once in the page head (or, with ``plotlyjs="beside"``, written once as a file
beside the report and shared by every report in that folder); each figure is a ``<div>`` from
``to_html(full_html=False, include_plotlyjs=False)``, whose data goes through plotly's own JSON
serializer (which escapes ``<``); animated figures (the filmstrip) wait for their slider, they do not
play on load. Every piece of user text (prompts, words, config values) is passed
through ``viz.render.escape``. MathJax stays off.

Example:
    report([run_a, run_b], "report.html", figures=[("divergence", fig)])
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs, get_plotlyjs_version

from workbench._version import __version__
from workbench.analysis import sweeps as sweep_analysis
from workbench.analysis.heatmaps import word_maps
from workbench.core.run import Run
from workbench.store.recipe import RerunRecipe
from workbench.viz import sweeps as sweep_figures
from workbench.viz.maps import word_overlay
from workbench.viz.render import escape, png_bytes, run_image, table_html

UNTRUSTED_NOTE = (
    "JupyterLab opens HTML files untrusted, so the interactive figures stay blank there until you "
    "click 'Trust HTML' in the viewer's toolbar; any web browser shows them directly."
)

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.6em; } h2 { border-top: 1px solid #ccc; padding-top: .8em; }
pre { background: #f6f6f6; padding: .6em; overflow-x: auto; font-size: .85em; }
img.run-image { width: 256px; image-rendering: pixelated; border: 1px solid #ccc; }
table.wb-table { border-collapse: collapse; font-size: .85em; }
table.wb-table td, table.wb-table th { border: 1px solid #ddd; padding: 2px 6px; }
details { margin: .5em 0; } summary { cursor: pointer; font-weight: 600; }
.note { color: #555; font-size: .9em; }
"""


def _pre(obj) -> str:
    return f"<pre>{escape(json.dumps(obj, indent=1, default=str))}</pre>"


def _figure(fig: go.Figure, div_id: str) -> str:
    return fig.to_html(
        full_html=False, include_plotlyjs=False, include_mathjax=False, div_id=div_id, auto_play=False
    )


PLOTLYJS_MODES = ("inline", "beside")


def _plotlyjs_tag(mode: str, folder: Path) -> str:
    """The page's plotly.js: inlined, or a shared file in ``folder`` (written once per version)."""
    if mode == "inline":
        return f'<script type="text/javascript">{get_plotlyjs()}</script>'
    name = f"plotly-{get_plotlyjs_version()}.min.js"
    shared = folder / name
    if not shared.is_file():
        tmp = folder / f".{name}.tmp"
        tmp.write_text(get_plotlyjs(), encoding="utf-8")
        tmp.replace(shared)  # atomically: a report written beside never sees half a file
    return f'<script type="text/javascript" src="{escape(name)}"></script>'


def _image_tag(run: Run) -> str:
    data = base64.b64encode(png_bytes(run_image(run))).decode()
    alt = escape(f"final image of {run.prompt!r}, seed {run.seed}")
    return f'<img class="run-image" alt="{alt}" src="data:image/png;base64,{data}">'


def _edited(config) -> str:
    """ " · edited: …" for an edited run (its edits in words), "" otherwise."""
    return f" · edited: {escape(config.edit_label)}" if config.edits else ""


def _run_section(run: Run, i: int) -> str:
    cfg = run.config
    parts = [
        f'<h2 id="run-{i}">Run {i + 1}: “{escape(cfg.prompt)}”{_edited(cfg)}</h2>',
        f"<p>seed {escape(cfg.seed)} · {escape(cfg.steps)} steps · guidance {escape(cfg.guidance_scale)} · "
        f"{escape(cfg.scheduler)} · {escape(cfg.width)}×{escape(cfg.height)} · "
        f"{'complete' if run.complete else escape(f'incomplete ({run.steps_done} steps done)')}</p>",
        _image_tag(run),
    ]
    if run.attention.probs:
        maps = word_maps(run, normalize="max")
        overlay = word_overlay(np.asarray(run_image(run)), maps, opacity=0.6, cols=4)
        parts.append(_figure(overlay, f"maps-{i}"))
    recipe = RerunRecipe.from_run(run)
    spec = recipe.to_dict()
    tokens = run.tokens[run.tokens.kind != "pad"]
    parts += [
        "<details open><summary>Token table</summary>" + table_html(tokens) + "</details>",
        "<details><summary>Full configuration and provenance</summary>" + _pre(vars(cfg)) + "</details>",
        "<details><summary>Recorded hashes</summary>" + _pre(recipe.expected.to_dict()) + "</details>",
        "<details><summary>Re-run spec (save as spec.json, then <code>workbench rerun spec.json</code>)</summary>"
        + _pre(spec)
        + f'<a download="spec-{i + 1}.json" href="data:application/json;base64,'
        + base64.b64encode(json.dumps(spec, indent=1).encode()).decode()
        + '">download spec</a></details>',
    ]
    return "\n".join(parts)


def _runs_of(run_or_runs, sweep, plotlyjs: str) -> list[Run]:
    """The runs to report, after checking what ``report`` was given."""
    runs = [run_or_runs] if isinstance(run_or_runs, Run) else list(run_or_runs)
    if (not runs and sweep is None) or not all(isinstance(r, Run) for r in runs):
        raise TypeError("report needs a Run or a non-empty list of Runs (or a sweep's index)")
    if plotlyjs not in PLOTLYJS_MODES:
        raise ValueError(f"plotlyjs must be one of {PLOTLYJS_MODES}, got {plotlyjs!r}")
    return runs


def _head(title: str, runs: list[Run], notes: str) -> list[str]:
    """The title, when and by what the page was written, the notes and the list of runs."""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    version = runs[0].config.versions.get("workbench", "") if runs else __version__
    parts = [
        f"<h1>{escape(title)}</h1>",
        f'<p class="note">Written {now} by workbench {escape(version)}; '
        f"{len(runs)} run(s). {escape(UNTRUSTED_NOTE)}</p>",
    ]
    if notes:
        parts.append(f"<p>{escape(notes)}</p>")
    links = "".join(
        f'<li><a href="#run-{i}">{escape(r.prompt)} · seed {r.seed}{_edited(r.config)}</a></li>'
        for i, r in enumerate(runs)
    )
    return parts + [f"<ul>{links}</ul>"]


def _page(title: str, body: list[str], plotlyjs: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style>"
        f"{plotlyjs}</head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def report(
    run_or_runs: Run | Sequence[Run],
    path: str | os.PathLike,
    *,
    title: str = "Workbench report",
    figures: Iterable[tuple[str, go.Figure]] = (),
    tables: Iterable[tuple[str, pd.DataFrame]] = (),
    notes: str = "",
    quiet: bool = False,
    sweep: pd.DataFrame | None = None,
    plotlyjs: str = "inline",
) -> Path:
    """Write one self-contained HTML report of one or more runs, or of a sweep.

    Args:
        run_or_runs: a ``Run`` or a list of runs.
        path: the HTML file to write.
        title: the page title (escaped).
        figures: extra ``(caption, figure)`` pairs shown before the runs (e.g. a divergence curve).
        tables: extra ``(caption, DataFrame)`` pairs shown after the figures (cells escaped).
        notes: a paragraph of plain text shown under the title (escaped).
        quiet: do not print where the report went.
        sweep: a sweep's index (``workbench.sweeps.read_index(out)``): adds the sweep section (see
            ``sweep_section``); ``run_or_runs`` may then be an empty list.
        plotlyjs: ``"inline"`` (the page holds plotly.js, ~4.8 MB, and works alone) or ``"beside"``
            (one ``plotly-<version>.min.js`` in the report's folder, shared by every report there;
            keep it with the reports when moving them).

    Returns:
        The path written.
    """
    runs = _runs_of(run_or_runs, sweep, plotlyjs)
    path = Path(path)
    body = _head(title, runs, notes)
    for j, (caption, fig) in enumerate(figures):
        body.append(f"<h2>{escape(caption)}</h2>" + _figure(fig, f"figure-{j}"))
    for caption, df in tables:
        body.append(f"<h2>{escape(caption)}</h2>" + table_html(df))
    if sweep is not None:
        body += sweep_section(sweep)
    body += [_run_section(run, i) for i, run in enumerate(runs)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_page(title, body, _plotlyjs_tag(plotlyjs, path.parent)), encoding="utf-8")
    if not quiet:
        print(f"report written to {path} ({path.stat().st_size / 1024**2:.1f} MB). {UNTRUSTED_NOTE}")
    return path


# ------------------------------------------------------------------ sweeps

SWEEP_TABLE_ROWS = 40  # longer tables are cut in the page (the index holds them all)


def _short(df: pd.DataFrame) -> pd.DataFrame:
    """A table for the page: lists and bytes dropped, floats rounded, at most ``SWEEP_TABLE_ROWS`` rows."""
    keep = [c for c in df.columns if c not in ("thumb", "words", "word_mass")]
    out = df[keep].head(SWEEP_TABLE_ROWS).copy()
    for c in out.columns:
        if pd.api.types.is_float_dtype(out[c]):
            out[c] = out[c].round(4)
    return out


def _thumbnails(index: pd.DataFrame) -> str:
    """The contact sheet of the sweep's final images, or why there is none."""
    try:
        sheet, prompts, seeds = sweep_figures.thumbnail_sheet(index)
        data = base64.b64encode(png_bytes(sheet)).decode()
    except ValueError as err:
        return f"<p>{escape(err)}</p>"
    return (
        "<h3>Final images (16×16 thumbnails)</h3>"
        f'<p class="note">rows: {escape(" | ".join(prompts))}; columns: seeds {escape(seeds)}</p>'
        f'<img class="run-image" style="width:auto" alt="thumbnails of the sweep" src="data:image/png;base64,{data}">'
    )


_SWEEP_ANALYSES = [  # (caption, analysis of the index, figure of its table)
    ("Seed vs prompt", sweep_analysis.sweep_variance, sweep_figures.sweep_variance_figure),
    (
        "Word order: distance of the images",
        sweep_analysis.word_order_distances,
        sweep_figures.word_order_distance_figure,
    ),
    (
        "Word order: attention mass per word",
        sweep_analysis.word_order_effects,
        sweep_figures.word_order_effect_figure,
    ),
]
_FAILED_COLUMNS = [
    "request_id",
    "prompt",
    "seed",
    "steps",
    "guidance",
    "scheduler",
    "height",
    "width",
    "error",
]


def _analyses(index: pd.DataFrame, n_boot: int) -> list[str]:
    """Each analysis of the sweep as a figure and a table, or why the sweep's shape does not allow it."""
    parts = []
    for j, (caption, analyse, draw) in enumerate(_SWEEP_ANALYSES):
        parts.append(f"<h3>{escape(caption)}</h3>")
        try:
            df = analyse(index, n_boot=n_boot)
        except ValueError as err:
            parts.append(f"<p>Not shown: {escape(err)}</p>")
            continue
        if df.empty:
            parts.append("<p>Not shown: the sweep has no prompts that are word orders of each other.</p>")
            continue
        parts.append(_figure(draw(df), f"sweep-{j}") + table_html(_short(df)))
    return parts


def sweep_section(index: pd.DataFrame, *, n_boot: int = 1000) -> list[str]:
    """HTML of a sweep from its index alone: counts, a contact sheet of thumbnails, the seed-vs-prompt
    variance split and the word-order effects with bootstrap intervals over seeds, and the failures.

    Analyses that the sweep's shape does not allow (one prompt, one seed, no word orders) say so.
    """
    parts = ["<h2>Sweep</h2>"]
    if index.empty:
        return parts + ["<p>The sweep's index holds no runs yet.</p>"]
    ids = sorted(set(index.sweep_id))
    counts = index.drop_duplicates(["sweep_id", "request_id"]).status.value_counts()
    parts.append(
        f"<p>sweep {escape(', '.join(ids))} · {escape(int(counts.get('done', 0)))} runs done · "
        f"{escape(int(counts.get('failed', 0)))} failed · "
        f"{escape(index.prompt.nunique())} prompts · {escape(index.seed.nunique())} seeds. "
        "Everything below is computed from the index (thumbnails and per-word attention mass kept per run).</p>"
    )
    parts.append(_thumbnails(index))
    parts += _analyses(index, n_boot)
    failed = index[index.status == "failed"]
    if len(failed):
        parts.append("<h3>Failed runs</h3>" + table_html(_short(failed[_FAILED_COLUMNS])))
    return parts
