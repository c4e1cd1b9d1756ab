"""AttentionExplorer: click a word of the prompt and see where it attends, on the run's image.

Everything comes from the recorded run; changing the word, layer, head, steps or opacity updates the
overlay without running the model again. The controls' values become an explicit heat-map recipe
(``map_recipe``) for ``analysis.word_maps`` / ``analysis.token_maps``.

Example:
    AttentionExplorer(run)
"""

from __future__ import annotations

import ipywidgets as W
import numpy as np
import plotly.graph_objects as go
import torch

from workbench import analysis
from workbench.analysis.heatmaps import branch_tokens
from workbench.core.run import Run
from workbench.viz.maps import word_overlay
from workbench.viz.render import escape, run_image

ALL = "all"
PRESETS = tuple(analysis.PRESETS)
NORMALIZATIONS = ("preset", "mass", "minmax", "max", "unit-sum", "share")  # "preset": the recipe's own
BRANCHES = {"prompt": "cond", "negative prompt": "negative"}


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


def map_recipe(
    run: Run,
    *,
    preset: str = "all-mean",
    steps: tuple[int, int] | None = None,
    resolution: str | None = None,
    layer: str | None = None,
    head: int | str = "mean",
    normalize: str | None = None,
    branch: str = "cond",
) -> dict:
    """The explorer's control values as keyword arguments of ``analysis.word_maps`` / ``token_maps``.

    ``steps`` is an inclusive (first, last) range of recorded steps; ``layer`` (a module path) wins over
    ``resolution``; ``normalize="preset"`` keeps the preset's own normalization.

    Example:
        >>> analysis.word_maps(run, **map_recipe(run, preset="daam", steps=(5, 9)))  # doctest: +SKIP
    """
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


class AttentionExplorer:
    """Per-word (or per-token) cross-attention of one run, laid over its image.

    Args:
        run: a recorded ``Run`` (from ``generate`` or ``load_run``).
        word: the word to show first (default: the first word).
        opacity: the overlay's starting opacity.
    """

    def __init__(self, run: Run, *, word: str | None = None, opacity: float = 0.55):
        if not isinstance(run, Run):
            raise TypeError(f"run must be a workbench Run, got {type(run).__name__}")
        self.run = run
        self.error: str | None = None
        store = run.attention
        words = analysis.prompt_words(run)  # (word as typed, word index)
        chosen = [i for w, i in words if w == word]
        self.words = W.ToggleButtons(
            options=words,
            value=chosen[0] if chosen else (words[0][1] if words else None),
            description="word",
            style={"button_width": "auto"},
        )
        self.words.add_class("wb-word-strip")
        self.tokens = W.ToggleButtons(
            options=token_labels(run), description="token", style={"button_width": "auto"}
        )
        self.by_token = W.Checkbox(
            value=False, description="single tokens (sub-words, BOS, EOS)", indent=False
        )
        self.resolution = W.Dropdown(options=[ALL, *store.resolutions()], value=ALL, description="resolution")
        self.layer = W.Dropdown(
            options=[ALL, *store.layer_names()],
            value=ALL,
            description="layer",
            layout=W.Layout(width="520px"),
        )
        heads = head_count(run)
        self.head = W.Dropdown(
            options=["mean"] + (list(range(heads)) if heads > 1 else []), value="mean", description="head"
        )
        self.branch = W.Dropdown(options=list(BRANCHES.items()), value="cond", description="branch")
        if run.negative_attention is None:
            self.branch.layout.display = "none"  # the negative branch was not recorded
        self.preset = W.Dropdown(options=list(PRESETS), value="all-mean", description="recipe")
        self.normalize = W.Dropdown(options=list(NORMALIZATIONS), value="max", description="normalize")
        steps = store.steps or [0]
        self.step_range = W.IntRangeSlider(
            value=(min(steps), max(steps)),
            min=min(steps),
            max=max(steps),
            description="steps",
            continuous_update=False,
        )
        self.opacity = W.FloatSlider(
            value=opacity, min=0.0, max=1.0, step=0.05, description="opacity", continuous_update=True
        )
        self.message = W.HTML("")
        self.message.add_class("wb-error")
        self.figure = go.FigureWidget()
        self.figure.add_class("wb-heatmap")

        for control in (
            self.words,
            self.tokens,
            self.by_token,
            self.layer,
            self.head,
            self.step_range,
            self.preset,
            self.normalize,
        ):
            control.observe(lambda _: self.update(), names="value")
        self.resolution.observe(lambda ch: self.set_resolution(ch["new"]), names="value")
        self.branch.observe(lambda ch: self.set_branch(ch["new"]), names="value")
        self.opacity.observe(lambda ch: self.set_opacity(ch["new"]), names="value")

        self.tokens.layout.display = "none"
        self.widget = W.VBox(
            [
                W.HTML(f"<b>Prompt:</b> {escape(run.prompt)} · seed {run.seed}"),
                self.branch,
                self.words,
                self.by_token,
                self.tokens,
                W.HBox([self.preset, self.normalize]),
                W.HBox([self.resolution, self.head]),
                self.layer,
                W.HBox([self.step_range, self.opacity]),
                self.message,
                self.figure,
            ]
        )
        self.widget.add_class("wb-explorer")
        self.update()

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

    # ------------------------------------------------------------- handlers (one call each)

    def set_resolution(self, resolution: str) -> None:
        names = self.run.attention.layer_names(None if resolution == ALL else resolution)
        self.layer.options = [ALL, *names]  # resets layer to "all" and triggers update()
        self.layer.value = ALL
        self.update()

    def set_branch(self, branch: str) -> None:
        """Show the prompt's or the negative prompt's words (and their maps)."""
        with self.words.hold_trait_notifications(), self.tokens.hold_trait_notifications():
            words = analysis.prompt_words(self.run, branch)
            self.words.options = words
            self.words.value = words[0][1] if words else None
            self.tokens.options = token_labels(self.run, branch)
        self.update()

    def set_opacity(self, opacity: float) -> None:
        if len(self.figure.data) > 1:
            self.figure.data[1].opacity = opacity

    def selection(self) -> dict:
        return dict(
            preset=self.preset.value,
            steps=tuple(self.step_range.value),
            resolution=None if self.resolution.value == ALL else self.resolution.value,
            layer=None if self.layer.value == ALL else self.layer.value,
            head=self.head.value,
            normalize=self.normalize.value,
            branch=self.branch.value,
        )

    def update(self) -> None:
        """Recompute the shown map from the recorded attention (no model call)."""
        self.tokens.layout.display = None if self.by_token.value else "none"
        self.words.layout.display = "none" if self.by_token.value else None
        try:
            self.maps = self._maps()
            fig = word_overlay(
                np.asarray(run_image(self.run)),
                self.maps,
                words=[self.maps.labels[0]],
                opacity=self.opacity.value,
                cols=1,
            )
        except Exception as err:  # shown in the app, kept in .error
            self.error = f"{type(err).__name__}: {err}"
            self.message.value = f'<span style="color:#a00">{escape(self.error)}</span>'
            return
        self.error = None
        self.message.value = ""
        self.current = self.maps.maps[0].numpy()
        with self.figure.batch_update():
            if len(self.figure.data) != len(fig.data):
                self.figure.data = []
                self.figure.add_traces(fig.data)
            else:
                for old, new in zip(self.figure.data, fig.data):
                    old.update(new.to_plotly_json())
            self.figure.layout = fig.layout

    def _maps(self):
        """The selected word's (or token's) map, as a one-row WordMaps for the viz overlay."""
        recipe = map_recipe(self.run, **self.selection())
        if self.by_token.value:
            tm = analysis.token_maps(self.run, **recipe)
            i = tm.positions.index(self.tokens.value)
            label = next(lbl for lbl, p in self.tokens.options if p == self.tokens.value)
            return single_map(
                tm.maps[i], label, tm.aggregation, tm.steps_used, tm.layers_used, [tm.positions[i]]
            )
        if self.words.value is None:
            which = "negative prompt" if self.branch.value == "negative" else "prompt"
            raise ValueError(f"the {which} has no words to show; tick 'single tokens' for BOS and EOS")
        wm = analysis.word_maps(self.run, **recipe)
        i = wm.word_indices.index(self.words.value)
        return single_map(
            wm.maps[i], wm.labels[i], wm.aggregation, wm.steps_used, wm.layers_used, wm.positions[i]
        )
