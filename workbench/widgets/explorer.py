"""AttentionExplorer: click a word of the prompt and see where it attends, on the run's image.

Everything comes from the recorded run; changing the word, layer, head, steps or opacity updates the
overlay without running the model again. The controls' values become an explicit heat-map recipe
(``map_recipe``) for ``analysis.word_maps`` / ``analysis.token_maps``; maps a recipe makes at a smaller
size (the latent, the largest layer grid) are expanded to the image by the recipe's own interpolation,
as ``WordMaps.expand`` does. The recipe menu offers the presets that apply to the run shown; the others
are listed beside it with the reason (a UNet recipe on an SD3/Flux run, a grid the model does not have).

Given a ``GenerateApp`` instead of a run, the explorer follows the app: every run the app finishes
replaces the one shown, and the view (word, branch, recipe, resolution, layer, head, steps) is kept
wherever the new run still has it.

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
from workbench.analysis.aggregate import layer_family, resolve_layers, resolve_steps
from workbench.analysis.heatmaps import branch_tokens
from workbench.core.run import Run
from workbench.viz.export import Exportable, MapExport
from workbench.viz.layout import word_grid_figure
from workbench.viz.maps import word_overlay
from workbench.viz.render import escape, run_image
from workbench.widgets.base import ChoiceStrip, FigureView
from workbench.widgets.export import ExportBar

ALL = "all"
PRESETS = tuple(analysis.PRESETS)
NORMALIZATIONS = ("preset", "mass", "minmax", "max", "unit-sum", "share")  # "preset": the recipe's own
BRANCHES = {"prompt": "cond", "negative prompt": "negative"}
HEADER_CHARS = 120  # a longer prompt (or list of cut-off words) is shortened to this many characters
FAMILY_RUNS = {"unet": "UNet", "dit": "SD3/Flux"}  # denoiser family -> how the runs are named
FAMILY_READS = {  # what a recipe written for a family reads
    "unet": "it reads the cross-attention layers of a UNet",
    "dit": "it reads the joint attention of an SD3/Flux transformer",
}


def shorten(text: str, limit: int = HEADER_CHARS, count: str | None = None) -> str:
    """``text`` as it fits in a header: whole when at most ``limit`` characters, else its first ``limit``
    characters, "…" and how long it is (``count``, default "N characters")."""
    if len(text) <= limit:
        return text
    return f"{text[:limit].rstrip()}… ({count or f'{len(text):,} characters'})"


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


def run_family(run: Run) -> str | None:
    """``"unet"`` or ``"dit"`` (SD3/Flux joint attention) from the run's recorded layers; None if neither."""
    return layer_family(run.attention.probs)


def _latent_hw(run: Run) -> tuple[int, int]:
    return int(run.latents.shape[-2]), int(run.latents.shape[-1])


def _grid_reason(run: Run, preset: str) -> str | None:
    """Why a preset that reads a ``latent/N`` grid finds no layer: the grid it wants and those recorded."""
    entries = [e for e in analysis.PRESETS[preset].layers or () if str(e).startswith("latent/")]
    if not entries:
        return None
    n = int(entries[0].split("/", 1)[1])
    h, w = _latent_hw(run)
    for _ in range(n.bit_length() - 1):  # each halving rounds up, as the model's strided convolutions do
        h, w = -(-h // 2), -(-w // 2)
    recorded = ", ".join(run.attention.resolutions())
    return f"it reads the latent/{n} grid ({h}x{w} here); this model's grids are {recorded}"


def preset_problem(run: Run, preset: str) -> str | None:
    """Why the preset ``preset`` cannot make maps of ``run``, in a few words (None when it can)."""
    agg = analysis.PRESETS[preset]
    family = run_family(run)
    if agg.applies_to is not None and family is not None and family != agg.applies_to:
        return f"not for {FAMILY_RUNS[family]} runs: {FAMILY_READS[agg.applies_to]}"
    try:
        resolve_steps(run.attention, agg.steps)
        layers = resolve_layers(run.attention, agg, latent_hw=_latent_hw(run))
    except ValueError as err:
        return f"not for this run: {_grid_reason(run, preset) or err}"
    store = run.attention
    if agg.heads in ("pool", "sum") and store.heads != "all" and not set(layers) <= set(store.head_counts):
        return (
            "not for this run: it sums each layer's heads, and this run holds their mean without the "
            "head counts (saved before they were kept)"
        )
    return None


def preset_layers(run: Run, preset: str) -> list[str]:
    """The recorded layers the preset reads on this run, in the store's order."""
    return resolve_layers(run.attention, analysis.PRESETS[preset], latent_hw=_latent_hw(run))


def preset_steps(run: Run, preset: str) -> list[int]:
    """The recorded steps the preset reads on this run (``"last"``: the last one)."""
    kept = run.attention.steps
    return [kept[r] for r in resolve_steps(run.attention, analysis.PRESETS[preset].steps)]


def layer_override(
    run: Run, preset: str, resolution: str | None = None, layer: str | None = None
) -> tuple[str, ...] | None:
    """The layers a resolution or a layer (which wins) picks among the preset's own, as a ``layers``
    override; None when nothing is picked or the pick is all of the preset's layers."""
    if layer is None and resolution is None:
        return None
    own = preset_layers(run, preset)
    names = [layer] if layer is not None else run.attention.layer_names(resolution)
    picked = [n for n in own if n in names]
    if not picked:
        raise ValueError(
            f"the {preset!r} recipe reads none of the layers of {layer or resolution!r}; "
            f"it reads {len(own)} layers, e.g. {own[:2]}"
        )
    return None if picked == own else tuple(picked)


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
    ``resolution``; both narrow the preset's own layers; ``normalize="preset"`` keeps the preset's own
    normalization. A choice that equals the preset's own (its steps, its layers) overrides nothing.

    Example:
        >>> analysis.word_maps(run, **map_recipe(run, preset="daam", steps=(5, 9)))  # doctest: +SKIP
    """
    kept = run.attention.steps
    chosen = None if steps is None else [s for s in kept if steps[0] <= s <= steps[1]]
    if chosen is not None and not chosen:
        raise ValueError(f"no recorded step in {steps[0]}..{steps[1]}; recorded steps are {kept}")
    if chosen is not None and preset in analysis.PRESETS and chosen == preset_steps(run, preset):
        chosen = None
    return dict(
        aggregation=preset,
        steps=chosen,
        layers=layer_override(run, preset, resolution, layer),
        heads=None if head == "mean" else (head if isinstance(head, str) else (int(head),)),
        normalize=None if normalize in (None, "preset") else normalize,
        branch=branch,
    )


def single_map(
    heat: torch.Tensor, label: str, aggregation, steps_used, layers_used, positions, edited: str = ""
) -> analysis.WordMaps:
    """One (H, W) map wrapped as a one-row ``WordMaps`` (what the viz overlay takes); ``edited``: the
    run's edits in words, so the figure says the run was edited."""
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
        edited=edited,
    )


def choice_key(options, value) -> tuple[str, int] | None:
    """The chosen option of a strip as (label, how many same labels come before it): what names it in
    another run's strip (the second "a" stays the second "a")."""
    labels = [label for label, _ in options]
    for k, (label, v) in enumerate(options):
        if v == value:
            return label, labels[:k].count(label)
    return None


def find_choice(options, key: tuple[str, int] | None):
    """The value of the option ``choice_key`` named (None when this strip has no such option)."""
    if key is None:
        return None
    hits = [v for label, v in options if label == key[0]]
    return hits[key[1]] if key[1] < len(hits) else None


def _span(steps: list[int]) -> tuple[int, int]:
    return (min(steps), max(steps)) if steps else (0, 0)


class AttentionExplorer:
    """Per-word (or per-token) cross-attention of one run, laid over its image.

    Args:
        run: a recorded ``Run`` (from ``generate`` or ``load_run``), or a ``GenerateApp`` to follow
            (the explorer shows its last run and every run it finishes after, keeping its view).
        word: the word to show first (default: the first word).
        opacity: the overlay's starting opacity.

    Attributes:
        error: the message shown when the map could not be made (None when it was).
        warnings: the notes shown above the map (about this run and this map only).
        unavailable: preset -> why it does not apply to the run shown (those are not in the menu).
        layout_error: why the "layout" grids (the toggle under the map) could not be made (None when
            they were or are hidden).
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
        self.unavailable: dict[str, str] = {}
        self._shown: Run | None = None  # the run whose view the controls hold (None before the first)
        self.maps: analysis.WordMaps | None = None  # the map shown, as a one-row WordMaps
        self.current: np.ndarray | None = None  # its (H, W) values
        self._building = False
        self._make_controls(opacity)
        self._wire()
        self.widget = self._layout()
        self.set_run(run, word=word)
        if source is not run:
            source.on_run(self.set_run)

    def _make_controls(self, opacity: float) -> None:
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
        self.preset_note = W.HTML("")
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
        self._make_layout_controls()
        self.export = ExportBar(self.exportable, "explorer", ("png", "svg", "npy"))

    def _wire(self) -> None:
        for control in (
            self.words,
            self.tokens,
            self.by_token,
            self.head,
            self.step_range,
            self.normalize,
            self.opacity,
        ):
            control.observe(lambda _: self.update(), names="value")
        self.preset.observe(lambda ch: self.set_preset(ch["new"], ch["old"]), names="value")
        self.resolution.observe(lambda ch: self.set_resolution(ch["new"]), names="value")
        self.layer.observe(lambda _: self.set_layer(), names="value")
        self.branch.observe(lambda ch: self.set_branch(ch["new"]), names="value")
        self.show_layout.observe(lambda _: self.update_layout(), names="value")

    def _layout(self) -> W.VBox:
        self.tokens.layout.display = "none"
        box = W.VBox(
            [
                self.header,
                self.branch,
                self.words,
                self.by_token,
                self.tokens,
                W.HBox([self.preset, self.normalize]),
                self.preset_note,
                W.HBox([self.resolution, self.head, self.head_note]),
                self.layer,
                W.HBox([self.step_range, self.opacity]),
                self.notes,
                self.message,
                self.view.widget,
                self.show_layout,
                self.layout_box,
                self.export.widget,
            ]
        )
        box.add_class("wb-explorer")
        return box

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

    @property
    def figure(self):
        """The ``go.Figure`` shown now (None before the first map or after an error)."""
        return self.view.figure

    # ------------------------------------------------------------- a run, and the view kept across runs

    def set_run(self, run: Run, *, word: str | None = None) -> None:
        """Show ``run``: the controls offer what it recorded, keeping the current word, branch, recipe,
        resolution, layer, head and steps wherever the new run has them; then its map is drawn."""
        if not isinstance(run, Run):
            raise TypeError(f"run must be a workbench Run, got {type(run).__name__}")
        keep = self._view() if self._shown is not None else {}
        if word is not None:
            keep["word"] = (word, 0)
        self.run = run
        self._building = True
        try:
            self.header.value = self._header()
            self._offer_branch(keep.get("branch", "cond"))
            self._offer_words(keep.get("word"), keep.get("token"))
            self._offer_presets(keep.get("preset", "all-mean"))
            self._offer_layers(keep.get("resolution", ALL), keep.get("layer", ALL))
            self._offer_steps(keep.get("steps"))
        finally:
            self._building = False
        self._shown = run
        self.update()

    def _view(self) -> dict:
        """What the controls show now, to find again in another run. ``steps`` is None when the slider
        holds the recipe's own steps (the new run's own steps are taken then)."""
        own = self._own_steps(self._shown)
        steps = tuple(self.step_range.value)
        return dict(
            branch=self.branch.value,
            word=choice_key(self.words.options, self.words.value),
            token=choice_key(self.tokens.options, self.tokens.value),
            preset=self.preset.value,
            resolution=self.resolution.value,
            layer=self.layer.value,
            steps=None if steps == own else steps,
        )

    def _header(self) -> str:
        run = self.run
        done = "" if run.complete else f" · stopped after {run.steps_done} of {run.config.steps} steps"
        head = f"<b>Prompt:</b> {escape(shorten(run.prompt))} · seed {escape(run.seed)}{done}"
        if not run.config.edits:
            return head
        head += f"<br><b>Edited run:</b> {escape(shorten(run.config.edit_label))}"
        if run.switch_step is not None and run.switch_tokens is not None:
            head += (
                f"<br>From step {run.switch_step} on, each word's attention (prompt branch) is its attention "
                "in the switched-to prompt; a word that prompt lacks has none from then on."
            )
        elif run.switch_step is not None:
            head += (
                f"<br>Saved before runs kept the switched-to prompt's tokens: from step {run.switch_step} on, "
                "the maps show that prompt's attention under this prompt's words."
            )
        return head

    def _offer_branch(self, branch: str) -> None:
        has_negative = self.run.negative_attention is not None
        self.branch.layout.display = None if has_negative else "none"
        self.branch.value = branch if has_negative else "cond"

    def _offer_words(self, word=None, token=None) -> None:
        """The branch's words and tokens; the ones named (``choice_key``) chosen where present, else the
        first."""
        words = analysis.prompt_words(self.run, self.branch.value)  # (word as typed, word index)
        self.words.options = words
        found = find_choice(words, word)
        self.words.value = found if found is not None else (words[0][1] if words else None)
        tokens = token_labels(self.run, self.branch.value)
        self.tokens.options = tokens
        found = find_choice(tokens, token)
        self.tokens.value = found if found is not None else (tokens[0][1] if tokens else None)

    def _offer_presets(self, preset: str) -> None:
        """The presets that apply to the run in the menu; the others listed beside it with the reason."""
        problems = {name: preset_problem(self.run, name) for name in PRESETS}
        offered = [name for name in PRESETS if problems[name] is None] or ["all-mean"]
        self.unavailable = {name: why for name, why in problems.items() if why and name not in offered}
        self.preset.options = offered
        self.preset.value = preset if preset in offered else offered[0]
        self.preset_note.value = "".join(
            f'<div style="color:#555;font-size:90%">{escape(name)} ({escape(why)})</div>'
            for name, why in self.unavailable.items()
        )

    def _preset_layers(self) -> list[str]:
        try:
            return preset_layers(self.run, self.preset.value)
        except ValueError:  # no preset applies (nothing recorded): the map's error says why
            return self.run.attention.layer_names()

    def _offer_layers(self, resolution: str = ALL, layer: str = ALL) -> None:
        """Resolutions and layers among those the recipe reads (the named ones chosen where offered),
        then the heads they kept."""
        store, own = self.run.attention, self._preset_layers()
        resolutions = [r for r in store.resolutions() if any(n in own for n in store.layer_names(r))]
        self.resolution.options = [ALL, *resolutions]
        self.resolution.value = resolution if resolution in resolutions else ALL
        res = None if self.resolution.value == ALL else self.resolution.value
        names = [n for n in store.layer_names(res) if n in own]
        self.layer.options = [ALL, *names]
        self.layer.value = layer if layer in names else ALL
        self._set_heads()

    def _own_steps(self, run: Run | None) -> tuple[int, int]:
        """The (first, last) steps the chosen recipe reads on ``run`` (all recorded ones if it cannot)."""
        if run is None:
            return (0, 0)
        try:
            return _span(preset_steps(run, self.preset.value))
        except (ValueError, KeyError):
            return _span(run.attention.steps)

    def _offer_steps(self, steps: tuple[int, int] | None) -> None:
        """The slider over the run's recorded steps, at ``steps`` when the run recorded a step in that
        range, else at the recipe's own steps."""
        kept = self.run.attention.steps or [0]
        self.step_range.min, self.step_range.max = 0, max(kept)  # min first: the range stays valid
        self.step_range.min = min(kept)
        inside = steps is not None and min(kept) <= steps[0] <= steps[1] <= max(kept)
        if inside and any(steps[0] <= s <= steps[1] for s in kept):
            self.step_range.value = steps
        else:
            self.step_range.value = self._own_steps(self.run)

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
        own = self._preset_layers()
        return [n for n in self.run.attention.layer_names(res) if n in own]

    # ------------------------------------------------------------- handlers (one call each)

    def _rebuild(self, change) -> None:
        """Run ``change()`` with the controls' own handlers quiet, then draw once."""
        building, self._building = self._building, True
        try:
            change()
        finally:
            self._building = building
        self.update()

    def set_preset(self, preset: str, previous: str | None = None) -> None:
        """A recipe chosen: offer the layers it reads (keeping the chosen ones where it reads them); a
        slider left at the previous recipe's own steps moves to this one's."""
        if self._building:
            return

        def change():
            self._offer_layers(self.resolution.value, self.layer.value)
            if previous is not None and previous in analysis.PRESETS:
                before = _span(preset_steps(self.run, previous))
                if tuple(self.step_range.value) == before:
                    self.step_range.value = self._own_steps(self.run)

        self._rebuild(change)

    def set_resolution(self, resolution: str) -> None:
        """A resolution chosen: offer its layers (all of them chosen), then draw."""
        if not self._building:
            self._rebuild(lambda: self._offer_layers(resolution, ALL))

    def set_layer(self) -> None:
        """A layer (or all of them) chosen: offer its heads, then draw."""
        if not self._building:
            self._rebuild(self._set_heads)

    def set_branch(self, branch: str) -> None:
        """Show the prompt's or the negative prompt's words (and their maps)."""
        if not self._building:
            self._rebuild(self._offer_words)

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

    # ------------------------------------------------------------- the map

    def update(self) -> None:
        """Recompute the shown map from the recorded attention (no model call). The notes and the error
        shown are this run's and this map's only."""
        if self._building:
            return
        self.tokens.layout.display = None if self.by_token.value else "none"
        self.words.layout.display = "none" if self.by_token.value else None
        caught: list = []
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
            self.maps = self.current = None
            self.view.clear()
        else:
            self.error = None
            self.message.value = ""
            self.current = self.maps.maps[0].numpy()
            self.view.show(fig)
        self._show_notes([str(w.message) for w in caught if issubclass(w.category, UserWarning)])
        self.update_layout()

    def _show_notes(self, messages: list[str]) -> None:
        """Warnings from the maps, and what the run itself lacks (cut-off words, missing steps)."""
        cut = self.run.tokens[self.run.tokens.kind == "cut"]
        if len(cut):
            words = [str(w) for w in cut.drop_duplicates("word_index").word.tolist()]
            listed = shorten(" ".join(words), count=f"{len(words):,} words")
            messages = [
                "words cut off by the text encoder (no attention, not in the strip): " + listed,
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

    def _maps(self) -> analysis.WordMaps:
        """The selected word's (or token's) map at the image size, as a one-row WordMaps for the overlay."""
        recipe = map_recipe(self.run, **self.selection())
        one = self._token_map(recipe) if self.by_token.value else self._word_map(recipe)
        image = (int(self.run.config.height), int(self.run.config.width))
        if tuple(one.maps.shape[-2:]) != image:  # made at the latent or a layer grid: expanded, as
            one = one.expand(self.run)  # the recipe says (WordMaps.expand)
        return one

    def _token_map(self, recipe: dict) -> analysis.WordMaps:
        if self.tokens.value is None:
            raise ValueError("the prompt has no tokens to show")
        tm = analysis.token_maps(self.run, **recipe)
        i = tm.positions.index(self.tokens.value)
        label = next(lbl for lbl, p in self.tokens.options if p == self.tokens.value)
        edited = self.run.config.edit_label
        return single_map(
            tm.maps[i], label, tm.aggregation, tm.steps_used, tm.layers_used, [tm.positions[i]], edited
        )

    def _word_map(self, recipe: dict) -> analysis.WordMaps:
        if self.words.value is None:
            which = "negative prompt" if self.branch.value == "negative" else "prompt"
            raise ValueError(f"the {which} has no words to show; tick 'single tokens' for BOS and EOS")
        wm = analysis.word_maps(self.run, **recipe)
        i = wm.row_of(self.words.value)  # a recipe that merges a repeated word holds it in one row
        return single_map(
            wm.maps[i],
            wm.labels[i],
            wm.aggregation,
            wm.steps_used,
            wm.layers_used,
            wm.positions[i],
            wm.edited,
        )

    # ------------------------------------------------------------- export

    def exportable(self) -> Exportable:
        """What the explorer shows now, for its export row: the map figure (and the layout grids when
        shown); the shown map and every word's map by the same recipe at the image size, as arrays."""
        figures = {"map": self.view.figure} if self.view.figure is not None else {}
        if self.show_layout.value and self._layout_drawn is not None:
            figures.update({"by-step": self.layout_steps.figure, "by-layer": self.layout_layers.figure})
        maps = {}
        if self.maps is not None:
            meta = self._export_meta()
            maps["map"] = MapExport(self.maps.maps.numpy(), list(self.maps.labels), meta)
            if not self.by_token.value:
                every = analysis.word_maps(self.run, **map_recipe(self.run, **self.selection()))
                every = (
                    every.expand(self.run) if tuple(every.maps.shape[-2:]) != self.current.shape else every
                )
                maps["all-words"] = MapExport(every.maps.numpy(), list(every.labels), meta)
        return Exportable(figures=figures, maps=maps)

    def _export_meta(self) -> dict:
        cfg = self.run.config
        return {
            "prompt": cfg.prompt,
            "seed": cfg.seed,
            "steps": cfg.steps,
            "model": cfg.model.get("source", ""),
            "edits": cfg.edit_label,
            "controls": {
                k: v if isinstance(v, (str, int, type(None))) else list(v)
                for k, v in self.selection().items()
            },
            "recipe": str(self.maps.aggregation),
            "steps_used": list(self.maps.steps_used),
            "layers_used": list(self.maps.layers_used),
        }

    # ------------------------------------------------------------- the layout grids (a toggle)

    def _make_layout_controls(self) -> None:
        """The "layout" toggle and, under it, the chosen word's word × step and word × layer grids."""
        self.show_layout = W.ToggleButton(
            value=False,
            description="layout: when and where",
            tooltip="the chosen word's map at a few steps and per layer, the commitment step framed",
        )
        self.layout_note = W.HTML("")
        self.layout_steps = FigureView("wb-layout-steps")
        self.layout_layers = FigureView("wb-layout-layers")
        self.layout_box = W.VBox([self.layout_note, self.layout_steps.widget, self.layout_layers.widget])
        self.layout_box.layout.display = "none"
        self.layout_error: str | None = None  # why the grids could not be made (None when they were)
        self._layout_drawn: tuple | None = None  # what the grids shown were made of (run, word, recipe)

    def _commitment(self) -> int | None:
        """The run's commitment step from its latents (None for a run that stopped early or never commits)."""
        if not self.run.complete:
            return None
        return analysis.commit_step(analysis.change_curves(self.run))

    def update_layout(self) -> None:
        """With the toggle on, draw the chosen word's grids from the recorded attention (no model call):
        its map at a few steps (the commitment step framed) and per resolution or block, by the chosen
        recipe, each panel normalised on its own."""
        if self._building:
            return
        self.layout_box.layout.display = None if self.show_layout.value else "none"
        if not self.show_layout.value:
            return
        key = (id(self.run), self.words.value, self.preset.value, self.branch.value)
        if key == self._layout_drawn:  # the opacity, a token or the overlay's steps changed: same grids
            return
        self._layout_drawn = None
        try:
            if self.words.value is None:
                raise ValueError("the prompt has no words to show")
            commit = self._commitment()
            kept = self.run.attention.steps
            steps = analysis.spread_steps(kept, include=[] if commit is None else [commit])
            recipe = dict(aggregation=self.preset.value, branch=self.branch.value)
            by_step = analysis.word_step_grid(self.run, [self.words.value], steps, **recipe)
            by_layer = analysis.word_layer_grid(self.run, [self.words.value], **recipe)
            figures = word_grid_figure(by_step, commit_step=commit), word_grid_figure(by_layer)
        except Exception as err:  # shown in the app, kept in .layout_error
            self.layout_error = f"{type(err).__name__}: {err}"
            self.layout_note.value = f'<span style="color:#a00">{escape(self.layout_error)}</span>'
            self.layout_steps.clear()
            self.layout_layers.clear()
            return
        self.layout_error = None
        when = "" if commit is not None else " (no commitment step: the run stopped early or never commits)"
        self.layout_note.value = (
            f'<span style="color:#555">“{escape(by_step.words[0])}” per step and per layer{escape(when)}; '
            "from the recorded attention, the word strip's word</span>"
        )
        self.layout_steps.show(figures[0])
        self.layout_layers.show(figures[1])
        self._layout_drawn = key
