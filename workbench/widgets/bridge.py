"""The one place where the apps, the report and the command line reach analysis and viz.

Widgets, reports and the study call these thin functions and nothing else of ``workbench.analysis``
or ``workbench.viz``; each forwards to the analysis or viz function that does the work, with the
settings the apps use (e.g. maps normalised to their maximum for display). What is not analysis or a
figure lives here too: PNG bytes for image widgets, and ``word_orders``, which suggests the swap of a
relational caption for the word-order lab ("a red circle left of a blue square" -> "a blue square
left of a red circle"; ``analysis.permutations(kind="of")`` covers "X of Y").
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


BRANCHES = {"prompt": "cond", "negative prompt": "negative"}


def branch_tokens(run: Run, branch: str = "cond"):
    """The token table of a branch: the prompt's (``"cond"``) or the negative prompt's."""
    return run.negative_tokens if branch == "negative" else run.tokens


def word_strip(run: Run, branch: str = "cond") -> list[tuple[str, int]]:
    """(word as typed, word index) for every in-context word of the prompt, in order."""
    tokens = branch_tokens(run, branch)
    table = tokens[tokens.kind.isin(["word", "punct"])].drop_duplicates("word_index")
    return [(str(r.word), int(r.word_index)) for r in table.itertuples()]


def token_labels(run: Run, branch: str = "cond") -> list[tuple[str, int]]:
    """(label, position) for every position the text encoder saw up to and including EOS."""
    tokens = branch_tokens(run, branch)
    table = tokens[tokens.kind != "cut"]
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


def _recipe(run: Run, preset, steps, resolution, layer, head, normalize, branch) -> dict:
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
        branch=branch,
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
    branch: str = "cond",
) -> analysis.WordMaps:
    """Per-word maps at image size by an explicit recipe (analysis.word_maps)."""
    return analysis.word_maps(run, **_recipe(run, preset, steps, resolution, layer, head, normalize, branch))


def token_maps(
    run: Run,
    *,
    preset: str = "all-mean",
    steps: tuple[int, int] | None = None,
    resolution: str | None = None,
    layer: str | None = None,
    head: int | str = "mean",
    normalize: str | None = None,
    branch: str = "cond",
) -> analysis.TokenMaps:
    """One map per encoder position: BOS, sub-word tokens, EOS, padding (analysis.token_maps)."""
    return analysis.token_maps(run, **_recipe(run, preset, steps, resolution, layer, head, normalize, branch))


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


def commitment_step(run: Run, threshold: float = COMMIT_THRESHOLD) -> int | None:
    """The first step from which x0 stays within ``threshold`` of the final latent (analysis)."""
    return analysis.commit_step(analysis.change_curves(run), threshold=threshold)


def trajectory_table(runs: Sequence[Run], threshold: float = COMMIT_THRESHOLD) -> pd.DataFrame:
    """One row per run: prompt, seed, commitment step, steps done."""
    rows = [
        {
            "prompt": r.prompt,
            "seed": r.seed,
            "commitment_step": commitment_step(r, threshold),
            "steps": r.steps_done,
        }
        for r in runs
    ]
    return pd.DataFrame(rows)


def final_divergence(run_a: Run, run_b: Run) -> float:
    """RMS distance of the two runs' x0 at their last step (analysis.trajectory_divergence)."""
    return float(analysis.trajectory_divergence(run_a, run_b)["x0_latent_rms"].iloc[-1])


def compare_orders(run_a: Run, run_b: Run, pipe=None) -> analysis.WordOrderComparison:
    return analysis.compare_word_order(run_a, run_b, pipe, normalize="max")


def grid_of(runs: Sequence[Run]) -> analysis.SeedGrid:
    """The runs arranged as prompts × seeds (every pair must be there)."""
    prompts = list(dict.fromkeys(r.prompt for r in runs))
    seeds = list(dict.fromkeys(r.seed for r in runs))
    by_key = {(r.prompt, r.seed): r for r in runs}
    missing = [(p, s) for p in prompts for s in seeds if (p, s) not in by_key]
    if missing:
        raise ValueError(f"the runs do not fill a prompts × seeds grid; missing {missing}")
    return analysis.SeedGrid(
        prompts=prompts, seeds=seeds, runs=[[by_key[(p, s)] for s in seeds] for p in prompts]
    )


def image_variance_shares(runs: Sequence[Run]) -> dict[str, float]:
    """Shares of the final images' variance: prompt, seed, interaction (analysis.image_variance)."""
    split = analysis.image_variance(grid_of(runs))
    return {k: float(split.loc[k, "share"]) for k in ("prompt", "seed", "interaction")}


def word_order_figures(runs: Sequence[Run], pipe=None) -> list:
    """Side by side images, per-word map pairs and the divergence per step, first order vs each other."""
    items: list = [viz.side_by_side(list(runs))]
    for other in runs[1:]:
        cmp = compare_orders(runs[0], other, pipe)
        pairs = viz.map_pairs(cmp)
        pairs.update_layout(height=120 + 150 * len(cmp.words), width=640)
        items += [
            pairs,
            viz.divergence_figure(cmp),
            f"<b>Aligned words</b> (“{_esc(runs[0].prompt)}” vs “{_esc(other.prompt)}”):"
            + table_html(cmp.words.round(3)),
        ]
    return items


def seed_figures(runs: Sequence[Run], threshold: float = COMMIT_THRESHOLD) -> list:
    """The seed grid, distances between seed trajectories, commitment steps and the variance split."""
    grid = grid_of(runs)
    items: list = [viz.seed_grid_figure(grid)]
    if len(grid.seeds) > 1:
        items.append(viz.trajectory_distance_figure(analysis.trajectory_distances(grid)))
    items.append(
        f"<b>Commitment step</b> (first step from which x0 stays within {threshold} of the initial "
        "noise's distance from the final latent):" + table_html(trajectory_table(runs, threshold))
    )
    if len(grid.prompts) > 1 and len(grid.seeds) > 1:
        items.append(viz.variance_figure(analysis.step_variance(grid)))
    return items


def _esc(text) -> str:
    import html

    return html.escape(str(text), quote=True)


# ---------------------------------------------------------------- prompts

_RELATIONS = ("left of", "right of", "above", "below", "of", "and", "with", "on", "under", "beside")


def word_orders(prompt: str) -> list[str]:
    """The prompt, then its swap around a relation word ("a painting of a horse" -> "a horse of a painting").

    The first relation of ``_RELATIONS`` the prompt holds (at its last occurrence) splits it in two
    phrases that trade places; a leading "a painting of" / "a sketch of" stays in front. Example:
        >>> word_orders("a sketch of a red circle left of a blue square")[1]
        'a sketch of a blue square left of a red circle'
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


# ---------------------------------------------------------------- tables


def table_html(df: pd.DataFrame) -> str:
    """A DataFrame as an HTML table; every cell escaped."""
    return df.to_html(index=False, escape=True, border=0, classes="wb-table")
