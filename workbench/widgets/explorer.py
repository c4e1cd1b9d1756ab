"""AttentionExplorer: click a word of the prompt and see where it attends, on the run's image.

Everything comes from the recorded run; changing the word, layer, head, steps or opacity updates the
overlay without running the model again. The controls' values become an explicit heat-map recipe
(``map_recipe``) for ``analysis.word_maps`` / ``analysis.token_maps``. Given a ``GenerateApp`` instead
of a run, the explorer follows the app: every run the app finishes replaces the one shown.

Example:
    AttentionExplorer(run)
    AttentionExplorer(app)   # follows app's runs
"""

from __future__ import annotations

import warnings

import ipywidgets as W
import numpy as np
import torch

from workbench import analysis
from workbench.analysis.heatmaps import branch_tokens
from workbench.core.run import Run
from workbench.viz.maps import word_overlay
from workbench.viz.render import escape, run_image
from workbench.widgets.base import ChoiceStrip, FigureView

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


def head_count(run: Run, layers: list[str] | None = None) -> int:
    """How many single heads every one of ``layers`` (default all) keeps: 1 when heads were averaged
    at record time."""
    store = run.attention
    names = layers if layers is not None else list(store.probs)
    if not names or store.heads != "all":
        return 1
    return min(int(store.probs[n].shape[1]) for n in names)


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
        run: a recorded ``Run`` (from ``generate`` or ``load_run``), or a ``GenerateApp`` to follow
            (the explorer shows its last run and every run it finishes after).
        word: the word to show first (default: the first word).
        opacity: the overlay's starting opacity.
    """

    def __init__(self, run, *, word: str | None = None, opacity: float = 0.55):
        source = run
        if hasattr(source, "on_run") and not isinstance(source, Run):  # an app to follow
            run = source.run
            if run is None:
                raise ValueError("the app has no finished run yet: press its Run button first")
        if not isinstance(run, Run):
            raise TypeError(f"run must be a workbench Run or a GenerateApp, got {type(run).__name__}")
        self.run = run
        self.error: str | None = None
        self.warnings: list[str] = []
        self._building = False
        self.header = W.HTML("")
        self.words = ChoiceStrip(description="word")
        self.words.add_class("wb-word-strip")
        self.tokens = ChoiceStrip(description="token")
        self.tokens.add_class("wb-token-strip")
        self.by_token = W.Checkbox(
            value=False, description="single tokens (sub-words, BOS, EOS)", indent=False
        )
        self.resolution = W.Dropdown(options=[ALL], value=ALL, description="resolution")
        self.layer = W.Dropdown(options=[ALL], value=ALL, description="layer", layout=W.Layout(width="520px"))
        self.head = W.Dropdown(options=["mean"], value="mean", description="head")
        self.head_note = W.HTML("")
        self.branch = W.Dropdown(options=list(BRANCHES.items()), value="cond", description="branch")
        self.preset = W.Dropdown(options=list(PRESETS), value="all-mean", description="recipe")
        self.normalize = W.Dropdown(options=list(NORMALIZATIONS), value="max", description="normalize")
        self.step_range = W.IntRangeSlider(
            value=(0, 0), min=0, max=0, description="steps", continuous_update=False
        )
        self.opacity = W.FloatSlider(
            value=opacity, min=0.0, max=1.0, step=0.05, description="opacity", continuous_update=False
        )
        self.message = W.HTML("")
        self.message.add_class("wb-error")
        self.notes = W.HTML("")
        self.notes.add_class("wb-warning")
        self.view = FigureView("wb-heatmap")

        for control in (
            self.words,
            self.tokens,
            self.by_token,
            self.head,
            self.step_range,
            self.preset,
            self.normalize,
            self.opacity,
        ):
            control.observe(lambda _: self.update(), names="value")
        self.resolution.observe(lambda ch: self.set_resolution(ch["new"]), names="value")
        self.layer.observe(lambda _: self.set_layer(), names="value")
        self.branch.observe(lambda ch: self.set_branch(ch["new"]), names="value")

        self.tokens.layout.display = "none"
        self.widget = W.VBox(
            [
                self.header,
                self.branch,
                self.words,
                self.by_token,
                self.tokens,
                W.HBox([self.preset, self.normalize]),
                W.HBox([self.resolution, self.head, self.head_note]),
                self.layer,
                W.HBox([self.step_range, self.opacity]),
                self.notes,
                self.message,
                self.view.widget,
            ]
        )
        self.widget.add_class("wb-explorer")
        self.set_run(run, word=word)
        if source is not run:
            source.on_run(self.set_run)

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

    @property
    def figure(self):
        """The ``go.Figure`` shown now (None before the first map or after an error)."""
        return self.view.figure

    # ------------------------------------------------------------- handlers (one call each)

    def set_run(self, run: Run, *, word: str | None = None) -> None:
        """Show ``run``: the controls are reset to what it recorded, then its map is drawn."""
        if not isinstance(run, Run):
            raise TypeError(f"run must be a workbench Run, got {type(run).__name__}")
        self.run = run
        store = run.attention
        self._building = True
        try:
            done = "" if run.complete else f" · stopped after {run.steps_done} of {run.config.steps} steps"
            self.header.value = f"<b>Prompt:</b> {escape(run.prompt)} · seed {escape(run.seed)}{done}"
            self.branch.value = "cond"
            self.branch.layout.display = "none" if run.negative_attention is None else None
            words = analysis.prompt_words(run)  # (word as typed, word index)
            chosen = [i for w, i in words if w == word]
            self.words.options = words
            self.words.value = chosen[0] if chosen else (words[0][1] if words else None)
            self.tokens.options = token_labels(run)
            self.tokens.value = self.tokens.options[0][1] if self.tokens.options else None
            self.resolution.options = [ALL, *store.resolutions()]
            self.resolution.value = ALL
            self.layer.options = [ALL, *store.layer_names()]
            self.layer.value = ALL
            self._set_heads()
            steps = store.steps or [0]
            self.step_range.min, self.step_range.max = 0, max(steps)  # min first: the range stays valid
            self.step_range.min = min(steps)
            self.step_range.value = (min(steps), max(steps))
        finally:
            self._building = False
        self.update()

    def _set_heads(self) -> None:
        """Offer the single heads that every selected layer kept (and say why when there are none)."""
        layers = self._selected_layers()
        n = head_count(self.run, layers)
        options = ["mean", "sum", *range(n)] if n > 1 else ["mean"]
        value = self.head.value if self.head.value in options else "mean"
        self.head.options = options
        self.head.value = value
        if self.run.attention.heads != "all":
            self.head_note.value = (
                '<span style="color:#555">heads were averaged as they were recorded '
                "(record with RecordingPolicy(heads='all') to see each)</span>"
            )
        else:
            self.head_note.value = ""

    def _selected_layers(self) -> list[str]:
        if self.layer.value != ALL:
            return [self.layer.value]
        res = None if self.resolution.value == ALL else self.resolution.value
        return self.run.attention.layer_names(res)

    def set_resolution(self, resolution: str) -> None:
        names = self.run.attention.layer_names(None if resolution == ALL else resolution)
        building, self._building = self._building, True
        try:
            self.layer.options = [ALL, *names]
            self.layer.value = ALL
            self._set_heads()
        finally:
            self._building = building
        self.update()

    def set_layer(self) -> None:
        """A layer (or all of them) chosen: offer its heads, then draw."""
        building, self._building = self._building, True
        try:
            self._set_heads()
        finally:
            self._building = building
        self.update()

    def set_branch(self, branch: str) -> None:
        """Show the prompt's or the negative prompt's words (and their maps)."""
        building, self._building = self._building, True
        try:
            words = analysis.prompt_words(self.run, branch)
            self.words.options = words
            self.words.value = words[0][1] if words else None
            self.tokens.options = token_labels(self.run, branch)
            self.tokens.value = self.tokens.options[0][1] if self.tokens.options else None
        finally:
            self._building = building
        self.update()

    def set_opacity(self, opacity: float) -> None:
        self.opacity.value = opacity

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
        if self._building:
            return
        self.tokens.layout.display = None if self.by_token.value else "none"
        self.words.layout.display = "none" if self.by_token.value else None
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", UserWarning)
                self.maps = self._maps()
                fig = word_overlay(
                    np.asarray(run_image(self.run)),
                    self.maps,
                    words=[self.maps.labels[0]],
                    opacity=self.opacity.value,
                    cols=1,
                    panel=320,
                )
        except Exception as err:  # shown in the app, kept in .error
            self.error = f"{type(err).__name__}: {err}"
            self.message.value = f'<span style="color:#a00">{escape(self.error)}</span>'
            self.view.clear()
            return
        self.error = None
        self.message.value = ""
        self._show_notes([str(w.message) for w in caught if issubclass(w.category, UserWarning)])
        self.current = self.maps.maps[0].numpy()
        self.view.show(fig)

    def _show_notes(self, messages: list[str]) -> None:
        """Warnings from the maps, and what the run itself lacks (cut-off words, missing steps)."""
        cut = self.run.tokens[self.run.tokens.kind == "cut"]
        if len(cut):
            messages = [
                "words cut off by the text encoder (no attention, not in the strip): "
                + " ".join(str(w) for w in cut.drop_duplicates("word_index").word.tolist()),
                *messages,
            ]
        if not self.run.complete:
            messages.append(
                f"the run stopped after {self.run.steps_done} of {self.run.config.steps} steps: "
                "the maps use the steps recorded before it stopped"
            )
        self.warnings = list(dict.fromkeys(messages))
        self.notes.value = "".join(
            '<div style="color:#7a5300;background:#fff6db;border:1px solid #e0b000;padding:3px 8px;'
            f'border-radius:4px;margin:2px 0">⚠ {escape(m)}</div>'
            for m in self.warnings
        )

    def _maps(self):
        """The selected word's (or token's) map, as a one-row WordMaps for the viz overlay."""
        recipe = map_recipe(self.run, **self.selection())
        if self.by_token.value:
            if self.tokens.value is None:
                raise ValueError("the prompt has no tokens to show")
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
