"""HTML reports: one self-contained file with the figures, the full provenance and the re-run specs.

plotly.js is inlined once in the page head (or, with ``plotlyjs="beside"``, written once as a file
beside the report and shared by every report in that folder); each figure is a ``<div>`` from
``to_html(full_html=False, include_plotlyjs=False)``, whose data goes through plotly's own JSON
serializer (which escapes ``<``); animated figures (the filmstrip) wait for their slider, they do not
play on load. Every piece of user text (prompts, words, config values) is passed
through ``viz.render.escape``. MathJax stays off. Tables sit in a container that scrolls sideways
when they are wider than the page, and long cells wrap.

A report of two or more runs opens with a "Compare" section (``compare_section``): the final images
side by side, the words the runs share mapped on one colour scale, the absolute difference of the
final images, and the request fields that differ. A sweep's report (``sweep=``) holds its counts, a
contact sheet per settings group and its analyses (``sweep_section``).

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
from PIL import Image
from plotly.offline import get_plotlyjs, get_plotlyjs_version

from workbench._version import __version__
from workbench.analysis import sweeps as sweep_analysis
from workbench.analysis.heatmaps import prompt_words, word_maps
from workbench.analysis.layout import spread_steps, word_layer_grid, word_step_grid
from workbench.analysis.trajectory import (
    COMMIT_THRESHOLD,
    STRIP_COLUMNS,
    as_pipes,
    change_curves,
    commit_step,
    pipe_for,
    strip_steps,
    x0_frames,
)
from workbench.analysis.word_order import align_words
from workbench.core.run import Run
from workbench.names import NAMED_MODELS
from workbench.store.recipe import RerunRecipe
from workbench.viz import side_by_side
from workbench.viz import sweeps as sweep_figures
from workbench.viz._common import (
    COLORBAR,
    colorbar,
    hide_image_axes,
    image_axes,
    normalize_title,
    panel_size,
    plot_height,
    recipe_line,
    sized_grid,
    titled,
)
from workbench.viz.layout import word_grid_figure
from workbench.viz.maps import word_overlay
from workbench.viz.render import escape, png_bytes, run_image, table_html
from workbench.viz.steps import filmstrip_rows_figure

UNTRUSTED_NOTE = (
    "JupyterLab opens HTML files untrusted, so the interactive figures stay blank there until you "
    "click 'Trust HTML' in the viewer's toolbar; any web browser shows them directly."
)

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-top: 1px solid #ccc; padding-top: .8em; }
pre { background: #f6f6f6; padding: .6em; overflow-x: auto; font-size: .85em; }
img.run-image { width: 256px; image-rendering: pixelated; border: 1px solid #ccc; }
.wb-scroll { max-width: 100%; overflow-x: auto; }
table.wb-table { border-collapse: collapse; font-size: .85em; table-layout: auto; max-width: 100%; }
table.wb-table td, table.wb-table th { border: 1px solid #ddd; padding: 2px 6px; vertical-align: top;
  overflow-wrap: anywhere; }
table.wb-table tr.differs td { background: #fff1a8; font-weight: 600; }
table.contact-sheet { border-collapse: separate; border-spacing: 4px; font-size: .8em; }
table.contact-sheet th { font-weight: normal; text-align: right; max-width: 18em; overflow-wrap: anywhere; }
table.contact-sheet thead th { text-align: center; }
table.contact-sheet img, table.contact-sheet .not-done { width: 64px; height: 64px; display: block;
  image-rendering: pixelated; }
table.contact-sheet .not-done { background: #888; }
.images { display: flex; flex-wrap: wrap; gap: 1em; }
.images figure { margin: 0; } .images figcaption { font-size: .85em; max-width: 256px; }
details { margin: .5em 0; } summary { cursor: pointer; font-weight: 600; }
.note { color: #555; font-size: .9em; }
.wb-save { font-size: .8em; color: #555; margin: .2em 0 .8em; }
"""


def _pre(obj) -> str:
    return f"<pre>{escape(json.dumps(obj, indent=1, default=str))}</pre>"


def _figure(fig: go.Figure, div_id: str) -> str:
    """The figure's div, then links that save it as PNG or SVG (drawn by the page's own plotly.js, so
    they work offline), at the figure's own size."""
    html = fig.to_html(
        full_html=False, include_plotlyjs=False, include_mathjax=False, div_id=div_id, auto_play=False
    )
    links = " · ".join(
        f'<a href="#" class="wb-save-{fmt}" onclick="Plotly.downloadImage(\'{div_id}\','
        f"{{format:'{fmt}',filename:'{div_id}'}});return false\">{fmt.upper()}</a>"
        for fmt in ("png", "svg")
    )
    return html + f'<div class="wb-save">save figure: {links}</div>'


def _table(df: pd.DataFrame, name: str = "table", whole: pd.DataFrame | None = None) -> str:
    """An escaped table in a container that scrolls sideways when the table is wider than the page,
    with a link that saves it (or ``whole``, the table it was cut from) as CSV."""
    csv = base64.b64encode((df if whole is None else whole).to_csv(index=False).encode()).decode()
    link = (
        f'<div class="wb-save"><a class="wb-save-csv" download="{escape(name)}.csv" '
        f'href="data:text/csv;base64,{csv}">save table as CSV</a></div>'
    )
    return f'<div class="wb-scroll">{table_html(df)}</div>{link}'


def _png(image: Image.Image) -> str:
    """A ``data:`` URL of ``image`` as PNG."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode()


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


def _image_tag(run: Run, model: str = "") -> str:
    alt = escape(f"final image of {run.prompt!r}, seed {run.seed}" + (f", model {model}" if model else ""))
    return f'<img class="run-image" alt="{alt}" src="{_png(run_image(run))}">'


def _edited(config) -> str:
    """ " · edited: …" for an edited run (its edits in words), "" otherwise."""
    return f" · edited: {escape(config.edit_label)}" if config.edits else ""


def _run_section(run: Run, i: int, model: str = "") -> str:
    """One run's section; ``model``: its model's name, given when the report holds several models."""
    cfg = run.config
    by = f" · model {escape(model)}" if model else ""
    parts = [
        f'<h2 id="run-{i}">Run {i + 1}: “{escape(cfg.prompt)}”{_edited(cfg)}{by}</h2>',
        f"<p>seed {escape(cfg.seed)} · {escape(cfg.steps)} steps · {escape(guidance_text(cfg))} · "
        f"{escape(cfg.scheduler)} · {escape(cfg.width)}×{escape(cfg.height)} · "
        f"{'complete' if run.complete else escape(f'incomplete ({run.steps_done} steps done)')}</p>",
        _image_tag(run, model),
    ]
    if run.attention.probs:
        maps = word_maps(run, normalize="max")
        overlay = word_overlay(np.asarray(run_image(run)), maps, opacity=0.6, cols=4)
        parts.append(_figure(overlay, f"maps-{i}"))
        parts.append(_layout_block(run, i))
    recipe = RerunRecipe.from_run(run)
    spec = recipe.to_dict()
    tokens = run.tokens[run.tokens.kind != "pad"]
    parts += [
        "<details open><summary>Token table</summary>" + _table(tokens, f"tokens-run-{i + 1}") + "</details>",
        "<details><summary>Full configuration and provenance</summary>" + _pre(vars(cfg)) + "</details>",
        "<details><summary>Recorded hashes</summary>" + _pre(recipe.expected.to_dict()) + "</details>",
        "<details><summary>Re-run spec (save as spec.json, then <code>workbench rerun spec.json</code>)</summary>"
        + _pre(spec)
        + f'<a download="spec-{i + 1}.json" href="data:application/json;base64,'
        + base64.b64encode(json.dumps(spec, indent=1).encode()).decode()
        + '">download spec</a></details>',
    ]
    return "\n".join(parts)


LAYOUT_WORDS = 8  # the most words the "when and where" grids show (the prompt's first ones)


def _commitment(run: Run) -> tuple[int | None, str]:
    """The run's commitment step from its latents (no decoding needed), and a sentence about it."""
    if not run.complete:
        return None, (
            f"The run stopped after {run.steps_done} of {run.config.steps} steps, so its last latent is "
            "not the final image and no commitment step is marked."
        )
    commit = commit_step(change_curves(run))
    rule = (
        "the first step from which the predicted clean latent (x0) stays within "
        f"{COMMIT_THRESHOLD:g} of the initial noise's distance from the final latent"
    )
    if commit is None:
        never = f"The layout does not commit within the {run.steps_done} steps ({rule}); no step is framed."
        return None, never
    return commit, f"The framed column is the commitment step, step {commit}: {rule}."


def _layout_block(run: Run, i: int) -> str:
    """The block "When and where the layout is decided": word × step maps (the commitment step framed)
    and word × layer maps of the prompt's first ``LAYOUT_WORDS`` words."""
    commit, sentence = _commitment(run)
    words = [index for _, index in prompt_words(run)][:LAYOUT_WORDS]
    if not words:
        return ""
    kept = run.attention.steps
    steps = spread_steps(kept, include=[] if commit is None else [commit])
    if commit is not None and commit not in kept:
        sentence += " That step's attention was not recorded; the first recorded step after it is framed."
    by_step = word_grid_figure(word_step_grid(run, words, steps), commit_step=commit)
    by_layer = word_grid_figure(word_layer_grid(run, words))
    shown = len(prompt_words(run))
    cut = f" The prompt's first {len(words)} of {shown} words are shown." if shown > len(words) else ""
    return "\n".join(
        [
            "<h3>When and where the layout is decided</h3>",
            f'<p class="note">{escape(sentence + cut)} Each panel is one word\'s map from one step (or one '
            "resolution / block) only, normalised on its own so that every panel is readable.</p>",
            f'<div class="wb-scroll">{_figure(by_step, f"layout-steps-{i}")}</div>',
            f'<div class="wb-scroll">{_figure(by_layer, f"layout-layers-{i}")}</div>',
        ]
    )


# ------------------------------------------------------------------ comparing runs

COMPARE_WORDS = 6  # the most shared words the compare section maps


def guidance_text(config) -> str:
    """A run's guidance in words: ``guidance 2.5``, or, where the negative branch ran as a separate
    call (Flux's true CFG), ``true CFG 2 against “…” · guidance_scale 1.0``."""
    g = "model default" if config.guidance_scale is None else f"{config.guidance_scale:g}"
    true_cfg = config.request.true_cfg_scale
    if true_cfg is not None and true_cfg > 1 and config.negative_prompt is not None:
        return f"true CFG {true_cfg:g} against “{config.negative_prompt}” · guidance_scale {g}"
    return f"guidance {g}"


def model_name(model: dict) -> str:
    """A run's model in a word: its registered name (``"toy"``, ``"toy-dit"``) when it was loaded by
    one or from a registered folder, a folder's last part, else the source as given (a hub id)."""
    source = str(model.get("source") or "unknown")
    if source in NAMED_MODELS:
        return source
    path = Path(source)
    for name, (folder, _) in NAMED_MODELS.items():
        if path.is_absolute() and path.resolve() == folder.resolve():
            return name
    return path.name if path.is_absolute() and path.name else source


def model_names(runs: Sequence[Run]) -> list[str]:
    """Each run's model name (``model_name``) when the runs come from more than one model (told apart
    by source and weights hash), else ``""`` for each: one model needs no label."""
    models = {_model_label(r.config.model) for r in runs}
    if len(models) < 2:
        return [""] * len(runs)
    names = [model_name(r.config.model) for r in runs]
    if len(set(names)) < len(models):  # two models share a name: label them by source and hash
        names = [_model_label(r.config.model) for r in runs]
    return names


def _model_label(model: dict) -> str:
    """The model's source, with the start of its weights' hash when it was recorded."""
    sha = model.get("weights_sha256")
    source = model.get("source", "unknown")
    return f"{source} (weights {sha[:12]})" if sha else str(source)


_REQUEST_FIELDS = {  # field -> its value in a run's config, in words
    "prompt": lambda c: c.prompt,
    "negative prompt": lambda c: c.negative_prompt or "none",
    "seed": lambda c: c.seed,
    "steps": lambda c: c.steps,
    "guidance": lambda c: guidance_text(c),
    "scheduler": lambda c: c.scheduler,
    "size (width×height)": lambda c: f"{c.width}×{c.height}",
    "model": lambda c: _model_label(c.model),
    "edits": lambda c: c.edit_label or "none",
}


def request_differences(runs: Sequence[Run]) -> pd.DataFrame:
    """Each run's request fields in words, and which of them differ between the runs.

    Returns:
        DataFrame indexed by field (prompt, negative prompt, seed, steps, guidance, scheduler, size,
        model, edits): a column per run (``run 1``, ``run 2``, ...) holding the value as text, and
        ``differs`` (bool).

    Example:
        >>> request_differences([run_a, run_b]).query("differs")  # doctest: +SKIP
    """
    columns = [f"run {i + 1}" for i in range(len(runs))]
    values = {f: [str(get(r.config)) for r in runs] for f, get in _REQUEST_FIELDS.items()}
    df = pd.DataFrame.from_dict(values, orient="index", columns=columns)
    df["differs"] = df[columns].nunique(axis=1) > 1
    return df


def _differences_html(diff: pd.DataFrame) -> str:
    """The fields table, differing rows highlighted (class ``differs``), and a line naming them."""
    runs = [c for c in diff.columns if c != "differs"]
    head = "<tr><th>field</th>" + "".join(f"<th>{escape(c)}</th>" for c in runs) + "<th></th></tr>"
    rows = []
    for field, row in diff.iterrows():
        mark = ' class="differs"' if row.differs else ""
        cells = "".join(f"<td>{escape(row[c])}</td>" for c in runs)
        rows.append(
            f"<tr{mark}><td>{escape(field)}</td>{cells}<td>{'differs' if row.differs else 'same'}</td></tr>"
        )
    differ = [escape(f) for f in diff.index[diff.differs]]
    same = [escape(f) for f in diff.index[~diff.differs]]
    line = (
        f"<p>Differ: {', '.join(differ) or 'nothing'}. "
        f"The same in every run: {', '.join(same) or 'nothing'}.</p>"
    )
    table = (
        f'<table class="wb-table compare-fields"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'
    )
    return line + f'<div class="wb-scroll">{table}</div>'


def _word_label(word: str, occurrence: int) -> str:
    return word if occurrence == 0 else f"{word} ({occurrence + 1})"


def shared_words(runs: Sequence[Run]) -> tuple[list[tuple[str, int, list[int]]], list[str]]:
    """The words every run's prompt holds, matched by identity (``analysis.align_words``: lowercased,
    a repeated word by occurrence), and the words only some prompts hold.

    Returns:
        ``[(word, occurrence, [its word index in each run])]`` in the first run's word order, and the
        labels of the words missing from some run.
    """
    aligned = [align_words(runs[0], r) for r in runs[1:]]
    in_others = [
        {(w, o): b for w, o, b in zip(al.word, al.occurrence, al.index_b) if not pd.isna(b)} for al in aligned
    ]
    shared, partial = [], []
    for w, o, a in zip(aligned[0].word, aligned[0].occurrence, aligned[0].index_a):
        others = [found.get((w, o)) for found in in_others]
        if pd.isna(a) or any(i is None for i in others):
            partial.append(_word_label(w, o))
        else:
            shared.append((w, int(o), [int(a), *(int(i) for i in others)]))
    for al in aligned[1:]:
        partial += [_word_label(w, o) for w, o, a in zip(al.word, al.occurrence, al.index_a) if pd.isna(a)]
    return shared, list(dict.fromkeys(partial))


def _heatmap_grid(z: list[list[np.ndarray]], titles: list[str], scale_title: str) -> go.Figure:
    """Rows × columns of heat maps sharing one colour scale (the lowest to the highest value of all),
    one colour bar, square pixels."""
    zmin = float(min(m.min() for row in z for m in row))
    zmax = float(max(m.max() for row in z for m in row))
    cols = len(z[0])
    fig = sized_grid(len(z), cols, panel=panel_size(*z[0][0].shape, short=128), titles=titles, right=COLORBAR)
    for k, row in enumerate(z):
        for j, m in enumerate(row):
            label = titles[k * cols + j]
            fig.add_trace(
                go.Heatmap(
                    z=m,
                    zmin=zmin,
                    zmax=zmax,
                    colorscale="Inferno",
                    showscale=k == 0 and j == 0,
                    colorbar=colorbar(scale_title, plot_height(fig)),
                    name=label,
                    hovertemplate="x %{x} px, y %{y} px: %{z:.3g}<extra>" + label + "</extra>",
                ),
                row=k + 1,
                col=j + 1,
            )
    hide_image_axes(fig)
    image_axes(fig)
    return fig


def compare_maps_figure(
    runs: Sequence[Run], *, max_words: int = COMPARE_WORDS, scale: str = "shared"
) -> go.Figure:
    """Each word the runs share, mapped in every run on ONE colour scale: rows are runs, columns words.

    The maps are ``word_maps(run)`` (the ``"all-mean"`` recipe: attention probability at the image
    size), so a brighter panel is more attention, whichever run it is in.

    Args:
        runs: two or more runs that recorded attention.
        max_words: the most shared words shown (the first ones of the first run's prompt).
        scale: ``"shared"`` (default: probabilities on one scale) or ``"panel"``: each map divided by
            its own peak, for runs whose probabilities do not share a scale (a UNet's cross-attention
            sums to 1 over the text; an MM-DiT's joint softmax shares it with the image tokens).

    Raises:
        ValueError: fewer than 2 runs, a run without recorded attention, no shared word, or a bad
            ``max_words``.
    """
    if len(runs) < 2:
        raise ValueError(f"comparing maps needs 2 or more runs, got {len(runs)}")
    if not isinstance(max_words, int) or max_words < 1:
        raise ValueError(f"max_words must be a positive int, got {max_words!r}")
    if scale not in ("shared", "panel"):
        raise ValueError(f"scale must be 'shared' or 'panel', got {scale!r}")
    silent = [i + 1 for i, r in enumerate(runs) if not r.attention.probs]
    if silent:
        raise ValueError(f"run(s) {silent} recorded no attention, so there are no maps to compare")
    shared, partial = shared_words(runs)
    if not shared:
        raise ValueError("the runs' prompts share no word")
    shown = shared[:max_words]
    maps = [word_maps(r) for r in runs]
    z = [[maps[k].maps[maps[k].row_of(idx[k])].numpy() for _, _, idx in shown] for k in range(len(runs))]
    models = [f" · {m}" if m else "" for m in model_names(runs)]
    titles = [f"run {k + 1}{models[k]}: {_word_label(w, o)}" for k in range(len(runs)) for w, o, _ in shown]
    agg = maps[0].aggregation
    if scale == "panel":
        z = [[m / m.max() if m.max() > 0 else m for m in row] for row in z]
        fig = _heatmap_grid(z, titles, "fraction of the panel's peak")
        sub = f"each panel divided by its own peak; {recipe_line(agg)}"
    else:
        fig = _heatmap_grid(z, titles, normalize_title(agg))
        sub = f"one colour scale for every panel; {recipe_line(agg)}"
    if len(shared) > len(shown):
        sub += f"; the first {len(shown)} of {len(shared)} shared words"
    if partial:
        sub += f"; not in every prompt (not shown): {', '.join(partial)}"
    return titled(fig, "The words the runs share, mapped in every run", sub, grow=True)


def final_image_difference(run_a: Run, run_b: Run) -> tuple[np.ndarray, str]:
    """``|a − b|`` of two runs' final images, per pixel and channel (uint8, 0–255).

    Images of different sizes are both resized (area average) to the smaller width and height first.

    Returns:
        The (H, W, 3) difference, and a note saying what was resized ("" when nothing was).

    Raises:
        ValueError: a run has no final image (it was interrupted).
    """
    for name, run in (("run_a", run_a), ("run_b", run_b)):
        if run.image is None:
            raise ValueError(f"{name} has no final image (it was interrupted)")
    a, b = run_a.image.convert("RGB"), run_b.image.convert("RGB")
    note = ""
    if a.size != b.size:
        size = (min(a.width, b.width), min(a.height, b.height))
        note = (
            f"the images are {a.width}×{a.height} and {b.width}×{b.height}: both resized to "
            f"{size[0]}×{size[1]} (area average) for the difference"
        )
        a, b = a.resize(size, Image.BOX), b.resize(size, Image.BOX)
    diff = np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).astype(np.uint8)
    return diff, note


def _difference_images(runs: Sequence[Run]) -> str:
    """Each later run's final image minus the first run's, as an image with its mean and largest value."""
    parts = []
    for k in range(1, len(runs)):
        what = f"|run {k + 1} − run 1|"
        try:
            diff, note = final_image_difference(runs[k], runs[0])
        except ValueError as err:
            parts.append(f"<figure><figcaption>{escape(what)}: {escape(err)}</figcaption></figure>")
            continue
        caption = f"{what}: mean {diff.mean():.2f}, largest {int(diff.max())} of 255" + (
            f"; {note}" if note else ""
        )
        parts.append(
            f'<figure><img class="run-image diff-image" alt="{escape(what)}" src="{_png(Image.fromarray(diff))}">'
            f"<figcaption>{escape(caption)}</figcaption></figure>"
        )
    return (
        "<h3>Absolute difference of the final images</h3>"
        '<p class="note">Per pixel and channel, on the 0–255 scale: black where the images agree.</p>'
        f'<div class="images">{"".join(parts)}</div>'
    )


STRIPS_HINT = "report(..., pipes=[pipe]); workbench report --filmstrips"


def compare_strips(
    runs: Sequence[Run], pipes: Sequence, titles: list[str], hint: str = STRIPS_HINT
) -> tuple[go.Figure | None, str]:
    """The runs' x0 filmstrips side by side (``viz.steps.filmstrip_rows_figure``), each run decoded by
    the one of ``pipes`` that holds its weights, and a note on what is not shown (a run whose model is
    not among ``pipes``, a run with no finished step). (None, why) when no run can be shown."""
    pipes = as_pipes(pipes)
    if not pipes:
        return None, (f"Not shown: decoding the steps needs the runs' model ({hint}).")
    shown, missing = [], []
    for k, run in enumerate(runs):
        pipe = pipe_for(run, pipes) if run.steps_done else None
        (shown if pipe is not None else missing).append((k, run, pipe))
    if not shown:
        return None, "Not shown: no run's model is among the pipelines given, so no step can be decoded."
    columns = min(STRIP_COLUMNS, *(r.steps_done for _, r, _ in shown))
    commits = [commit_step(change_curves(r)) if r.complete else None for _, r, _ in shown]
    steps = [strip_steps(r, columns, c) for (_, r, _), c in zip(shown, commits)]
    frames = [x0_frames(p, r, st) for (_, r, p), st in zip(shown, steps)]
    fig = filmstrip_rows_figure(frames, steps, [titles[k] for k, _, _ in shown], commits)
    note = (
        f"Not shown (model not loaded, or no finished step): runs {', '.join(str(k + 1) for k, _, _ in missing)}."
        if missing
        else ""
    )
    return fig, note


def compare_section(runs: Sequence[Run], pipes: Sequence = ()) -> list[str]:
    """HTML comparing two or more runs: the request fields (those that differ highlighted), the final
    images side by side, the x0 filmstrips side by side (with ``pipes`` to decode them), the shared
    words' maps on one colour scale, and the images' difference."""
    models = [f" · {m}" if m else "" for m in model_names(runs)]
    titles = [
        f"run {i + 1}{models[i]}: {r.prompt} · seed {r.seed}"
        + ("" if r.image is not None else " (no final image)")
        for i, r in enumerate(runs)
    ]
    parts = [
        '<h2 id="compare">Compare</h2>',
        "<h3>Request fields</h3>" + _differences_html(request_differences(runs)),
        "<h3>Final images</h3>"
        + _figure(side_by_side([np.asarray(run_image(r)) for r in runs], titles), "compare-images"),
    ]
    strips, note = compare_strips(runs, pipes, titles)
    parts.append(
        "<h3>x0 filmstrips, side by side</h3>" + (f'<p class="note">{escape(note)}</p>' if note else "")
    )
    if strips is not None:
        parts.append(f'<div class="wb-scroll">{_figure(strips, "compare-strips")}</div>')
    parts.append("<h3>Shared words' maps, one colour scale</h3>")
    try:
        parts.append(_figure(compare_maps_figure(runs), "compare-maps"))
    except ValueError as err:
        parts.append(f"<p>Not shown: {escape(err)}</p>")
    return parts + [_difference_images(runs)]


# ------------------------------------------------------------------ the page


def _runs_of(run_or_runs, sweep, plotlyjs: str) -> list[Run]:
    """The runs to report, after checking what ``report`` was given."""
    runs = [run_or_runs] if isinstance(run_or_runs, Run) else list(run_or_runs)
    if (not runs and sweep is None) or not all(isinstance(r, Run) for r in runs):
        raise TypeError("report needs a Run or a non-empty list of Runs (or a sweep's index)")
    if plotlyjs not in PLOTLYJS_MODES:
        raise ValueError(f"plotlyjs must be one of {PLOTLYJS_MODES}, got {plotlyjs!r}")
    return runs


def _sweep_of(sweep) -> tuple[pd.DataFrame | None, int | None]:
    """The index, and how many runs were planned (None: not known), of what ``report`` got as ``sweep``."""
    if sweep is None:
        return None, None
    if isinstance(sweep, pd.DataFrame):
        return sweep, sweep.attrs.get("planned")
    index = getattr(sweep, "index", None)  # a SweepResult
    if isinstance(index, pd.DataFrame):
        return index, getattr(sweep, "planned", None)
    raise TypeError(
        f"sweep must be a sweep's index (a DataFrame) or a SweepResult, got {type(sweep).__name__}"
    )


def _planned_beside(folder: Path, index: pd.DataFrame) -> int | None:
    """How many runs the index's sweeps planned, from the plan records in ``folder/sweeps/`` (a sweep's
    folder, where ``workbench sweep`` writes its report); None when a record is missing or unreadable."""
    from workbench.store.runs import read_small_file
    from workbench.sweeps.folder import SWEEPS_DIR

    ids = sorted(set(index.sweep_id.dropna())) if "sweep_id" in index.columns else []
    total = 0
    for sweep_id in ids:
        name = str(sweep_id)
        if not name or name.startswith(".") or not all(ch.isalnum() or ch in "-_." for ch in name):
            return None
        try:
            record = json.loads(read_small_file(folder / SWEEPS_DIR / f"{name}.json"))
            total += len(record["requests"])
        except (OSError, ValueError, KeyError, TypeError, RecursionError):
            return None
    return total if ids else None


def _head(
    title: str, runs: list[Run], notes: str, index: pd.DataFrame | None, planned: int | None
) -> list[str]:
    """The title, when and by what the page was written, what it holds, the notes and the contents."""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    version = runs[0].config.versions.get("workbench", "") if runs else __version__
    held = []
    if runs or index is None:
        held.append(f"{len(runs)} run{'' if len(runs) == 1 else 's'}")
    if index is not None:
        held.append(_sweep_line(index, planned))
    parts = [
        f"<h1>{escape(title)}</h1>",
        f'<p class="note">Written {now} by workbench {escape(version)}; '
        f"{escape('; '.join(held))}. {escape(UNTRUSTED_NOTE)}</p>",
    ]
    if notes:
        parts.append(f"<p>{escape(notes)}</p>")
    links = '<li><a href="#compare">Compare</a></li>' if len(runs) >= 2 else ""
    models = [f" · model {escape(m)}" if m else "" for m in model_names(runs)]
    links += "".join(
        f'<li><a href="#run-{i}">{escape(r.prompt)} · seed {r.seed}{_edited(r.config)}{models[i]}</a></li>'
        for i, r in enumerate(runs)
    )
    return parts + ([f"<ul>{links}</ul>"] if links else [])


def _page(title: str, body: list[str], plotlyjs: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
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
    sweep=None,
    plotlyjs: str = "inline",
    pipes: Sequence = (),
) -> Path:
    """Write one self-contained HTML report of one or more runs, or of a sweep.

    Args:
        run_or_runs: a ``Run`` or a list of runs; with two or more the page opens with a "Compare"
            section (``compare_section``).
        path: the HTML file to write.
        title: the page title (escaped).
        figures: extra ``(caption, figure)`` pairs shown before the runs (e.g. a divergence curve).
        tables: extra ``(caption, DataFrame)`` pairs shown after the figures (cells escaped).
        notes: a paragraph of plain text shown under the title (escaped).
        quiet: do not print where the report went.
        sweep: a sweep's index (``workbench.sweeps.read_index(out)``) or the ``SweepResult`` of
            ``workbench.sweep``: adds the sweep section (see ``sweep_section``); ``run_or_runs`` may
            then be an empty list. The planned count comes from the result, or from the plan records
            in the report's folder when it is the sweep's folder.
        plotlyjs: ``"inline"`` (the page holds plotly.js, ~4.8 MB, and works alone) or ``"beside"``
            (one ``plotly-<version>.min.js`` in the report's folder, shared by every report there;
            keep it with the reports when moving them).
        pipes: pipelines to decode the compared runs' steps with (each run is decoded by the one holding
            its weights); without, the Compare section says its filmstrips need them.

    Returns:
        The path written.
    """
    runs = _runs_of(run_or_runs, sweep, plotlyjs)
    pipes = as_pipes(pipes)  # refused before anything is written
    index, planned = _sweep_of(sweep)
    path = Path(path)
    if index is not None and planned is None:
        planned = _planned_beside(path.parent, index)
    body = _head(title, runs, notes, index, planned)
    if len(runs) >= 2:
        body += compare_section(runs, pipes)
    for j, (caption, fig) in enumerate(figures):
        body.append(  # a figure wider than the page scrolls in its own box
            f"<h2>{escape(caption)}</h2>" + f'<div class="wb-scroll">{_figure(fig, f"figure-{j}")}</div>'
        )
    for j, (caption, df) in enumerate(tables):
        body.append(f"<h2>{escape(caption)}</h2>" + _table(df, f"table-{j + 1}"))
    if index is not None:
        body += sweep_section(index, planned=planned)
    body += [_run_section(run, i, m) for i, (run, m) in enumerate(zip(runs, model_names(runs)))]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_page(title, body, _plotlyjs_tag(plotlyjs, path.parent)), encoding="utf-8")
    if not quiet:
        print(f"report written to {path} ({path.stat().st_size / 1024**2:.1f} MB). {UNTRUSTED_NOTE}")
    return path


# ------------------------------------------------------------------ sweeps

SWEEP_TABLE_ROWS = 40  # longer tables are cut in the page (the index holds them all)


def sweep_counts(index: pd.DataFrame, planned: int | None = None) -> dict:
    """How many of a sweep's runs are done and failed (one count per sweep and request id), how many
    ended in all, and how many were planned (``planned``, None when not known: the index lists ended
    runs only)."""
    ended = index.drop_duplicates(["sweep_id", "request_id"])
    counts = ended.status.value_counts()
    return {
        "done": int(counts.get("done", 0)),
        "failed": int(counts.get("failed", 0)),
        "ended": len(ended),
        "planned": planned,
    }


def _sweep_line(index: pd.DataFrame, planned: int | None) -> str:
    """``sweep ab12: 46 done · 2 failed · 48 planned`` (plain text)."""
    c = sweep_counts(index, planned)
    ids = ", ".join(sorted(str(i) for i in set(index.sweep_id.dropna()))) or "(no runs yet)"
    text = f"sweep {ids}: {c['done']} done · {c['failed']} failed · "
    if planned is None:
        return (
            text
            + f"{c['ended']} ended (the index lists ended runs only; the planned count is not known here)"
        )
    rest = planned - c["ended"]
    return text + f"{planned} planned" + (f" ({rest} not ended)" if rest > 0 else "")


def _scalar(value):
    """A cell as plain Python: missing as None, whole floats as ints."""
    if isinstance(value, (list, tuple, np.ndarray, bytes)):
        return value
    if pd.isna(value):
        return None
    if isinstance(value, np.generic):
        value = value.item()
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _short(df: pd.DataFrame) -> pd.DataFrame:
    """A table for the page: lists and bytes dropped, floats rounded, at most ``SWEEP_TABLE_ROWS`` rows."""
    keep = [c for c in df.columns if c not in ("thumb", "words", "word_mass")]
    out = df[keep].head(SWEEP_TABLE_ROWS).copy()
    for c in out.columns:
        if pd.api.types.is_float_dtype(out[c]):
            out[c] = out[c].round(4)
    return out


def constant_columns(df: pd.DataFrame) -> list[str]:
    """The columns that hold one value in every row (missing counts as a value); of a one-row table,
    the settings columns only (``analysis.sweeps.SETTINGS``)."""
    if len(df) < 2:
        return [c for c in df.columns if c in sweep_analysis.SETTINGS]
    return [c for c in df.columns if df[c].map(_scalar).nunique(dropna=False) == 1]


def _same_line(df: pd.DataFrame, columns: list[str]) -> str:
    """The constant columns as one line: ``steps 6 · scheduler default · size 32×32 · negative prompt none``."""
    values = {c: _scalar(df[c].iloc[0]) for c in columns}
    items = []
    for c, v in values.items():
        if c in ("height", "width") and {"height", "width"} <= set(values):
            if c == "height":
                items.append(f"size {v}×{values['width']}")
            continue
        items.append(f"{c.replace('_', ' ')} {'none' if v is None or v == '' else v}")
    return f'<p class="note">The same in every row: {escape(" · ".join(items))}</p>'


def _sweep_table(df: pd.DataFrame, name: str) -> str:
    """A sweep table for the page: the columns that are the same in every row as a line above it; its
    CSV link saves every row and column."""
    short = _short(df)
    same = constant_columns(short)
    line = _same_line(short, same) if same else ""
    cut = (
        f'<p class="note">The first {SWEEP_TABLE_ROWS} of {len(df)} rows.</p>' if len(df) > len(short) else ""
    )
    return line + _table(short.drop(columns=same), name, whole=df) + cut


def _sheet_html(sheet) -> str:
    """One settings group's contact sheet as a table: its settings above, prompts down, seeds across."""
    shown = (
        f"{len(sheet.prompts)} of {sheet.n_prompts} prompts" if sheet.n_prompts > len(sheet.prompts) else ""
    )
    if sheet.n_seeds > len(sheet.seeds):
        shown += (", " if shown else "") + f"the lowest {len(sheet.seeds)} of {sheet.n_seeds} seeds"
    head = "<tr><th>prompt</th>" + "".join(f"<th>seed {escape(s)}</th>" for s in sheet.seeds) + "</tr>"
    rows = []
    for p in sheet.prompts:
        cells = []
        for s in sheet.seeds:
            t, what = sheet.cells[(p, s)], escape(f"{p} · seed {s}")
            cells.append(
                f'<td><div class="not-done" title="{what}: not done"></div></td>'
                if t is None
                else f'<td><img alt="{what}" title="{what}" src="{_png(Image.fromarray(t))}"></td>'
            )
        rows.append(f'<tr><th scope="row">{escape(p)}</th>{"".join(cells)}</tr>')
    return (
        f'<h4 class="sheet-label">{escape(sheet.label)}</h4>'
        + (f'<p class="note">Showing {escape(shown)}.</p>' if shown else "")
        + f'<div class="wb-scroll"><table class="contact-sheet"><thead>{head}</thead>'
        + f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _thumbnails(index: pd.DataFrame) -> str:
    """A contact sheet of the final images per settings group, or why there is none."""
    try:
        sheets = sweep_figures.contact_sheets(index)
    except ValueError as err:
        return f"<p>{escape(err)}</p>"
    side = sweep_analysis.THUMB
    return (
        f"<h3>Final images ({side}×{side} thumbnails), one sheet per settings group</h3>"
        f'<p class="note">{len(sheets)} settings group(s); in each, rows are prompts and columns seeds; '
        "grey: that run is not done.</p>" + "".join(_sheet_html(s) for s in sheets)
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
    "edits",
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
        parts.append(_figure(draw(df), f"sweep-{j}") + _sweep_table(df, f"sweep-{j}"))
    return parts


def sweep_section(index: pd.DataFrame, *, n_boot: int = 1000, planned: int | None = None) -> list[str]:
    """HTML of a sweep from its index alone: counts, a contact sheet of thumbnails per settings group,
    the seed-vs-prompt variance split and the word-order effects with bootstrap intervals over seeds,
    and the failures.

    Analyses that the sweep's shape does not allow (one prompt, one seed, no word orders) say so.
    Settings that are the same in every row of a table stand in one line above it.

    Args:
        index: the sweep's index.
        n_boot: bootstrap draws of the intervals.
        planned: how many runs the sweep planned (None: not known; the index lists ended runs only).
    """
    parts = ["<h2>Sweep</h2>"]
    if index.empty:
        return parts + ["<p>The sweep's index holds no runs yet.</p>"]
    index = sweep_analysis.with_settings(index)
    done = index.loc[index.status == "done", sweep_analysis.SETTINGS].astype(object)
    groups = done.where(done.notna(), None).drop_duplicates()
    parts.append(
        f"<p>{escape(_sweep_line(index, planned))} · {escape(index.prompt.nunique())} prompts · "
        f"{escape(index.seed.nunique())} seeds · {escape(len(groups))} settings group(s). "
        "Everything below is computed from the index (thumbnails and per-word attention mass kept per run).</p>"
    )
    parts.append(_thumbnails(index))
    parts += _analyses(index, n_boot)
    failed = index[index.status == "failed"]
    if len(failed):
        parts.append("<h3>Failed runs</h3>" + _sweep_table(failed[_FAILED_COLUMNS], "failed-runs"))
    return parts
