"""The one place where the apps, the report and the command line reach analysis and viz.

Widgets and reports call these thin functions and nothing else of ``workbench.analysis`` or
``workbench.viz``; each function forwards to the analysis or viz function that does the work. Where
that function is not available in this checkout, a small stand-in below does the same job so the
apps keep working; the stand-ins are marked as such and hold no more than the arithmetic needed.

Shapes: a run's ``x0`` is (steps, C, h, w); maps are (n, H, W) float32 in [0, 1] at image size.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from PIL import Image
from plotly.subplots import make_subplots

from workbench import analysis, viz
from workbench.core.run import Run

# ---------------------------------------------------------------- images


def decode(pipe, latents: torch.Tensor) -> list[Image.Image]:
    """Decode latents (n, C, h, w) into PIL images exactly as the pipeline decodes (analysis)."""
    return [Image.fromarray(a) for a in analysis.decode_latents(pipe, latents)]


def filmstrip(pipe, run: Run) -> analysis.Filmstrip:
    """Decoded initial noise, x0 at every step and latent after every step (analysis)."""
    return analysis.filmstrip(pipe, run)


def x0_frames(strip: analysis.Filmstrip) -> list[Image.Image]:
    """The decoded x0 of every step (the filmstrip's noise frame left out)."""
    return [Image.fromarray(a) for a in strip.x0[1:]]


def filmstrip_figure(strip: analysis.Filmstrip) -> go.Figure:
    return viz.filmstrip_figure(strip)


def change_curve_figure(run: Run, strip: analysis.Filmstrip | None = None) -> go.Figure:
    return viz.change_curve_figure(analysis.change_curves(run, strip=strip))


def png_bytes(image: Image.Image, scale: int = 1) -> bytes:
    """PNG bytes of ``image``, enlarged ``scale`` times with nearest-neighbour (small images stay crisp)."""
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def display_scale(image: Image.Image, target: int = 256) -> int:
    return max(1, target // max(image.width, image.height))


def run_image(run: Run) -> Image.Image:
    """The run's final image, or a grey stand-in of the right size for an incomplete run."""
    if run.image is not None:
        return run.image.convert("RGB")
    return Image.new("RGB", (run.config.width, run.config.height), (128, 128, 128))


# ---------------------------------------------------------------- attention maps

PRESETS = tuple(analysis.PRESETS)
NORMALIZATIONS = ("preset", "mass", "minmax", "max", "unit-sum", "share")


def word_strip(run: Run) -> list[tuple[str, int]]:
    """(word as typed, word index) for every in-context word of the prompt, in order."""
    table = run.tokens[run.tokens.kind.isin(["word", "punct"])].drop_duplicates("word_index")
    return [(str(r.word), int(r.word_index)) for r in table.itertuples()]


def token_labels(run: Run) -> list[tuple[str, int]]:
    """(label, position) for every position the text encoder saw up to and including EOS."""
    table = run.tokens[run.tokens.kind != "cut"]
    eos = table[table.kind == "eos"].position
    last = int(eos.iloc[0]) if len(eos) else int(table.position.max())
    rows = table[table.position <= last]
    return [
        (f"{r.token} [{r.kind}]" if r.kind != "word" else str(r.token), int(r.position))
        for r in rows.itertuples()
    ]


def head_count(run: Run) -> int:
    """How many heads the store keeps per layer (1 when heads were averaged at record time)."""
    if not run.attention.probs or run.attention.heads != "all":
        return 1
    return min(int(t.shape[1]) for t in run.attention.probs.values())


def _recipe(run: Run, preset, steps, resolution, layer, head, normalize) -> dict:
    kept = run.attention.steps
    chosen = None if steps is None else [s for s in kept if steps[0] <= s <= steps[1]]
    if chosen is not None and not chosen:
        raise ValueError(f"no recorded step in {steps[0]}..{steps[1]}; recorded steps are {kept}")
    return dict(
        aggregation=preset,
        steps=chosen,
        layers=layer or resolution,
        heads=None if head == "mean" else (head if isinstance(head, str) else (int(head),)),
        normalize=None if normalize in (None, "preset") else normalize,
    )


def word_maps(
    run: Run,
    *,
    preset: str = "all-mean",
    steps: tuple[int, int] | None = None,
    resolution: str | None = None,
    layer: str | None = None,
    head: int | str = "mean",
    normalize: str | None = None,
) -> analysis.WordMaps:
    """Per-word maps at image size by an explicit recipe (analysis.word_maps)."""
    return analysis.word_maps(run, **_recipe(run, preset, steps, resolution, layer, head, normalize))


def token_maps(
    run: Run,
    *,
    preset: str = "all-mean",
    steps: tuple[int, int] | None = None,
    resolution: str | None = None,
    layer: str | None = None,
    head: int | str = "mean",
    normalize: str | None = None,
) -> analysis.TokenMaps:
    """One map per encoder position: BOS, sub-word tokens, EOS, padding (analysis.token_maps)."""
    return analysis.token_maps(run, **_recipe(run, preset, steps, resolution, layer, head, normalize))


def single_map(
    heat: torch.Tensor, label: str, aggregation, steps_used, layers_used, positions
) -> analysis.WordMaps:
    """One (H, W) map wrapped as a one-row ``WordMaps`` (what the viz overlay takes)."""
    return analysis.WordMaps(
        maps=heat[None],
        words=[label],
        word_indices=[0],
        aggregation=aggregation,
        labels=[label],
        kinds=["word"],
        positions=[list(positions)],
        steps_used=list(steps_used),
        layers_used=list(layers_used),
    )


def overlay_figure(
    run: Run, maps: analysis.WordMaps, word: str | None = None, *, opacity: float = 0.5
) -> go.Figure:
    """The run's image with the maps of ``word`` (or every word) laid over it (viz.word_overlay)."""
    words = None if word is None else [word]
    return viz.word_overlay(
        np.asarray(run_image(run)), maps, words=words, opacity=opacity, cols=1 if word else 4
    )


def maps_figure(
    run: Run, maps: analysis.WordMaps, *, words: list[str] | None = None, opacity: float = 0.6
) -> go.Figure:
    cols = len(words) if words else 4
    return viz.word_overlay(
        np.asarray(run_image(run)), maps, words=words, opacity=opacity, cols=max(1, min(cols, 6))
    )


# ---------------------------------------------------------------- trajectories


COMMIT_THRESHOLD = 0.25  # x0 within a quarter of the initial noise's distance from the final latent


def distance_to_final(run: Run) -> np.ndarray:
    """(steps,) distance of each step's x0 from the final latent, relative to the noise's (analysis)."""
    return analysis.change_curves(run)["x0_latent_rel"].to_numpy()


def commitment_step(run: Run, threshold: float = COMMIT_THRESHOLD) -> int | None:
    """The first step from which x0 stays within ``threshold`` of the final latent (analysis)."""
    return analysis.commit_step(analysis.change_curves(run), threshold=threshold)


# Stand-ins until analysis has word-order and seed studies: plain distances between recorded x0.


def divergence(run_a: Run, run_b: Run) -> np.ndarray:
    """(steps,) distance between two runs' x0 at each step, relative to their mean norm."""
    n = min(run_a.steps_done, run_b.steps_done)
    a, b = run_a.x0[:n].float().flatten(1), run_b.x0[:n].float().flatten(1)  # (steps, C*h*w)
    scale = (a.norm(dim=1) + b.norm(dim=1)).clamp_min(1e-12) / 2
    return ((a - b).norm(dim=1) / scale).numpy()


def trajectory_table(runs: Sequence[Run], threshold: float = COMMIT_THRESHOLD) -> pd.DataFrame:
    """One row per run: prompt, seed, commitment step, steps done."""
    rows = []
    for run in runs:
        rows.append(
            {
                "prompt": run.prompt,
                "seed": run.seed,
                "commitment_step": commitment_step(run, threshold),
                "steps": run.steps_done,
            }
        )
    return pd.DataFrame(rows)


def variance_split(runs: Sequence[Run]) -> dict[str, float]:
    """Share of the final-latent variance explained by seed and by prompt (two-way, no interaction)."""
    prompts = sorted({r.prompt for r in runs})
    seeds = sorted({r.seed for r in runs})
    x = torch.stack([r.x0[-1].float().flatten() for r in runs])  # (runs, d)
    grand = x.mean(dim=0)
    total = ((x - grand) ** 2).sum().item()
    by_seed = sum(
        len(g) * ((torch.stack(g).mean(0) - grand) ** 2).sum().item()
        for g in ([x[i] for i, r in enumerate(runs) if r.seed == s] for s in seeds)
    )
    by_prompt = sum(
        len(g) * ((torch.stack(g).mean(0) - grand) ** 2).sum().item()
        for g in ([x[i] for i, r in enumerate(runs) if r.prompt == p] for p in prompts)
    )
    total = max(total, 1e-12)
    return {"seed": by_seed / total, "prompt": by_prompt / total, "rest": 1 - (by_seed + by_prompt) / total}


# ---------------------------------------------------------------- prompts

_RELATIONS = ("left of", "right of", "above", "below", "of", "and", "with", "on", "under", "beside")


def word_orders(prompt: str) -> list[str]:
    """The prompt and its swaps around a relation word ("a painting of a horse" -> "a horse of a painting").

    Two noun phrases around the last relation word trade places; the prompt comes first.
    """
    text = " ".join(prompt.split())
    orders = [text]
    for rel in _RELATIONS:
        m = re.search(rf"^(.*\S)\s+({re.escape(rel)})\s+(\S.*)$", text)
        if m and m.group(1) and m.group(3):
            left, right = m.group(1), m.group(3)
            prefix = ""
            style = re.match(r"^(an? (?:painting|sketch|photo|drawing) of)\s+(.*)$", left)
            if style and rel != "of":
                prefix, left = style.group(1) + " ", style.group(2)
            swapped = f"{prefix}{right} {rel} {left}"
            if swapped != text and swapped not in orders:
                orders.append(swapped)
            break
    return orders


# ---------------------------------------------------------------- figures


def image_figure(image: Image.Image, title: str = "") -> go.Figure:
    fig = go.Figure(go.Image(z=np.asarray(image.convert("RGB"))))
    _image_axes(fig)
    fig.update_layout(title=title, width=320, height=340, margin=dict(l=10, r=10, t=40, b=10))
    return fig


def _image_axes(fig: go.Figure) -> None:
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False)
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False)


def images_figure(
    images: Sequence[Image.Image], titles: Sequence[str], *, cols: int | None = None, title: str = ""
) -> go.Figure:
    """Images side by side (or in a grid of ``cols`` columns)."""
    n = len(images)
    cols = cols or n
    rows = (n + cols - 1) // cols
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=list(titles))
    for i, im in enumerate(images):
        fig.add_trace(go.Image(z=np.asarray(im.convert("RGB"))), row=i // cols + 1, col=i % cols + 1)
    _image_axes(fig)
    fig.update_layout(
        title=title, height=200 * rows + 80, width=max(360, 190 * cols), margin=dict(l=10, r=10, t=70, b=10)
    )
    return fig


def curves_figure(
    curves: dict[str, np.ndarray], *, title: str, ylabel: str, marks: dict[str, int] | None = None
) -> go.Figure:
    """Lines over denoising steps; ``marks`` puts a vertical marker at a step per curve."""
    fig = go.Figure()
    for name, y in curves.items():
        fig.add_trace(
            go.Scatter(x=list(range(len(y))), y=np.asarray(y, dtype=float), mode="lines+markers", name=name)
        )
    for name, step in (marks or {}).items():
        fig.add_vline(x=step, line_dash="dot", annotation_text=name, annotation_position="top")
    fig.update_layout(
        title=title,
        xaxis_title="denoising step",
        yaxis_title=ylabel,
        width=620,
        height=360,
        margin=dict(t=50),
    )
    return fig


def divergence_figure(pairs: dict[str, np.ndarray]) -> go.Figure:
    return curves_figure(
        pairs, title="word order: x0 divergence per step (same seed)", ylabel="relative L2 distance of x0"
    )


def trajectory_figure(runs: Sequence[Run], threshold: float = COMMIT_THRESHOLD) -> go.Figure:
    curves = {f"seed {r.seed} · {r.prompt}": distance_to_final(r) for r in runs}
    fig = curves_figure(
        curves,
        title="distance of x0 from the final latent, per seed",
        ylabel="RMS distance / initial noise's",
    )
    fig.add_hline(y=threshold, line_dash="dot", annotation_text=f"commitment threshold {threshold}")
    return fig


def table_html(df: pd.DataFrame) -> str:
    """A DataFrame as an HTML table; every cell escaped."""
    return df.to_html(index=False, escape=True, border=0, classes="wb-table")
