"""``editing``: put edits on a stock pipeline for the calls made inside a block, and take them off after.

Only hooks are installed; the stock attention processor and kernel compute every layer. An edited
layer at an edited step gets an additive ``attention_mask`` that the stock processor adds to its
scores, so what it changes is exactly what a mask can change; layers and steps no edit selects get
nothing (their kernel path is the stock one, untouched).

Example:
    >>> with editing(pipe, [Edit.ablate("red", steps=range(5))]):  # doctest: +SKIP
    ...     image = pipe("a red circle", num_inference_steps=25, generator=gen).images[0]
"""

from __future__ import annotations

import functools
import inspect
import math
import threading
import weakref
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from ..core.adapters import JointAdapter, adapter_for
from ..core.layers import select_layers
from ..core.tokens import word_groups
from .edit import Edit, EditError

BUILT = ("reweight", "ablate")  # the kinds ``editing`` can install so far

_ACTIVE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # denoiser -> being edited
_ACTIVE_GUARD = threading.Lock()
_INPUTS = ("hidden_states", "encoder_hidden_states", "attention_mask")  # ``Attention.forward``'s own


@contextmanager
def editing(pipe, edits):
    """Apply ``edits`` to every call of ``pipe`` made inside the block; removed afterwards in ``finally``.

    Reweight (and ablate, its factor 0) is reweighting WITH renormalisation: at an edited layer and
    step, the conditional rows get an additive mask ``log(factor)`` on the edited words' key positions
    (``-inf`` for 0) that the stock processor adds to Q·Kᵀ·scale before its softmax, so each query's
    probabilities become ``p·w / Σ p·w`` (w = factor on the words, 1 elsewhere): the row still sums to 1
    over all keys. (Prompt-to-Prompt's AttentionReweight scales the probabilities without
    renormalising.) The unconditional half of a classifier-free-guidance batch is never edited, nor are
    the BOS, EOS and padding positions (so a row always keeps a key). A word names every occurrence of
    itself in the prompt, as the token table groups it (``workbench.core.tokens.word_groups``).

    Steps count the denoising loop's iterations from 0 (one denoiser call each on UNet families).
    Install edits before recording starts so that the recording sees them:
    ``with editing(pipe, edits): with workbench.record(pipe) as rec: pipe(...)`` (the edit's hooks run
    before any other pre-hook on a layer in either order, but this order reads best).

    Args:
        pipe: a StableDiffusionPipeline or StableDiffusionXLPipeline (UNet cross-attention).
        edits: an ``Edit`` or a list of them; edits on the same layer and step multiply their factors.

    Raises:
        NotImplementedError: for ``replace`` and ``switch`` edits and for joint-attention families
            (SD3, Flux): not built yet.
        RuntimeError: when ``pipe`` (or a pipeline sharing its denoiser) is already being edited.
        EditError: inside the call, for a word not in the prompt (naming the prompt's words), a layer
            entry that matches no layer, or a step past the call's last.
    """
    edits = _check_edits(edits)
    adapter = adapter_for(pipe)
    unbuilt = sorted({e.kind for e in edits} - set(BUILT))
    if unbuilt:
        raise NotImplementedError(
            f"{' and '.join(unbuilt)} edits are not built yet; editing applies {list(BUILT)} edits for now"
        )
    if isinstance(adapter, JointAdapter):
        raise NotImplementedError(
            f"editing {adapter.family} (joint attention) is not built yet; it applies to UNet "
            "cross-attention pipelines (Stable Diffusion 1.x/2.x, SDXL) for now"
        )
    denoiser = adapter.denoiser
    with _ACTIVE_GUARD:
        if denoiser in _ACTIVE:
            raise RuntimeError(
                "this pipeline (or one sharing its denoiser) is already being edited; put all edits in one "
                "editing(pipe, [...]) block instead of nesting blocks"
            )
        _ACTIVE[denoiser] = True
    editor = _Editor(pipe, adapter, edits)
    try:
        editor.install()
        yield editor
    finally:
        editor.remove()
        with _ACTIVE_GUARD:
            _ACTIVE.pop(denoiser, None)


def _check_edits(edits) -> tuple[Edit, ...]:
    if isinstance(edits, Edit):
        return (edits,)
    if not isinstance(edits, (list, tuple)):
        raise TypeError(f"edits must be an Edit or a list of them, got {type(edits).__name__}")
    wrong = [e for e in edits if not isinstance(e, Edit)]
    if wrong:
        raise TypeError(f"edits must be Edit values, got {type(wrong[0]).__name__}")
    return tuple(edits)


@dataclass(frozen=True)
class _Planned:
    """One edit placed on one call: the layers it acts on and its log-weights per prompt."""

    edit: Edit
    layers: frozenset[str]
    log_weights: torch.Tensor  # (prompts, text positions) float64: log(factor) on the words, 0 elsewhere

    def acts(self, layer: str, step: int) -> bool:
        steps = self.edit.steps
        return layer in self.layers and (steps is None or step in steps)


class _Editor:
    """The hooks of one ``editing`` block: the call's prompt and size, a step counter, layer pre-hooks."""

    def __init__(self, pipe, adapter, edits: tuple[Edit, ...]):
        self.pipe, self.adapter, self.edits = pipe, adapter, edits
        self.plan: list[_Planned] | None = None  # set when a call starts (its prompt and size known)
        self.prompts = 0
        self.step = -1  # the loop iteration under way in the current call
        self.owner = threading.get_ident()  # the thread whose calls are edited; other threads' are not
        self._undo: list[Callable[[], None]] = []

    def install(self) -> None:
        pipe = self.pipe
        original = pipe.check_inputs  # the first thing every stock call does, with prompt and size
        had = "check_inputs" in pipe.__dict__
        pipe.check_inputs = functools.wraps(original)(self._check_inputs(original))
        self._undo.append(
            (lambda: setattr(pipe, "check_inputs", original))
            if had
            else (lambda: pipe.__dict__.pop("check_inputs", None))
        )
        denoiser = self.adapter.denoiser
        self._undo.append(denoiser.register_forward_pre_hook(self._count).remove)
        for layer in self.adapter.layers():
            attn = denoiser.get_submodule(layer.name)
            # prepended: the edit's mask is in place before any observer's pre-hook reads the call
            handle = attn.register_forward_pre_hook(self._mask(layer.name), with_kwargs=True, prepend=True)
            self._undo.append(handle.remove)

    def remove(self) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo = []

    def _check_inputs(self, original):
        signature = inspect.signature(original)

        def check_inputs(*args, **kwargs):
            if threading.get_ident() != self.owner:
                return original(*args, **kwargs)
            result = original(*args, **kwargs)
            bound = signature.bind_partial(*args, **kwargs).arguments
            self.plan, self.step = (
                self._plan(bound.get("prompt"), bound.get("height"), bound.get("width")),
                -1,
            )
            return result

        return check_inputs

    def _plan(self, prompt, height, width) -> list[_Planned]:
        """Each edit's layers and word positions for a call on ``prompt`` at ``height`` x ``width``."""
        if prompt is None:
            raise ValueError(
                "editing needs the call's prompt text to find the edited words; pass prompt=..., "
                "not prompt_embeds"
            )
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        self.prompts = len(prompts)
        adapter = self.adapter
        lengths = adapter.text_lengths({})
        latent_hw = adapter.latent_hw(int(height), int(width))
        grids = {layer.name: layer.grid(*latent_hw) for layer in adapter.layers()}
        groups = [word_groups(adapter.table(p, lengths), include_special=False) for p in prompts]
        positions = max(sum(lengths.values()), 1)
        plan = []
        for edit in self.edits:
            try:
                layers = select_layers(edit.layers, grids, label="edit layers", among="cross-attention layer")
            except (TypeError, ValueError) as err:
                raise EditError("layers", str(err).removeprefix("edit layers ")) from None
            log_weights = torch.zeros(len(prompts), positions, dtype=torch.float64)
            log_factor = math.log(edit.factor) if edit.factor > 0 else -math.inf
            for row, (text, found) in enumerate(zip(prompts, groups)):
                for word in edit.words:
                    spots = [p for g in found if g["word"] == word for p in g["positions"]]
                    if not spots:
                        named = list(dict.fromkeys(g["word"] for g in found))
                        raise EditError(
                            "words", f"{word!r} is not a word of the prompt {text!r}; its words are {named}"
                        )
                    log_weights[row, spots] = log_factor
            plan.append(_Planned(edit, frozenset(layers), log_weights))
        return plan

    def _count(self, module, args) -> None:
        if threading.get_ident() != self.owner:
            return
        self.step += 1
        if self.step == 0 and self.plan:
            total = len(self.pipe.scheduler.timesteps)
            late = sorted({s for p in self.plan for s in (p.edit.steps or ()) if s >= total})
            if late:
                raise EditError(
                    "steps", f"{late} are past the last step of this call of {total} steps (0..{total - 1})"
                )

    def _mask(self, layer: str):
        def hook(module, args, kwargs):
            if threading.get_ident() != self.owner:
                return None
            active = [p for p in self.plan or () if p.acts(layer, self.step)]
            given = {**kwargs, **dict(zip(_INPUTS, args))}
            context = given.get("encoder_hidden_states")
            if not active or context is None:
                return None  # nothing changes: the stock call as it came
            hidden = given["hidden_states"]
            bias = self._bias(active, hidden.shape[0], context.shape[1])
            bias = bias.to(device=hidden.device, dtype=hidden.dtype)
            mask = given.get("attention_mask")
            given["attention_mask"] = bias if mask is None else mask + bias
            return (), given

        return hook

    def _bias(self, active: list[_Planned], rows: int, tokens: int) -> torch.Tensor:
        """The additive mask (rows, 1, tokens): the active edits' log-weights on the conditional rows."""
        logw = sum(p.log_weights for p in active)  # (prompts, positions)
        logw = torch.nn.functional.pad(logw, (0, max(tokens - logw.shape[1], 0)))[:, :tokens]
        guided = bool(getattr(self.pipe, "do_classifier_free_guidance", False))
        cond = rows // 2 if guided else rows
        if cond % self.prompts:
            raise RuntimeError(f"cannot place {self.prompts} prompts on a denoiser batch of {rows} rows")
        bias = logw.repeat_interleave(cond // self.prompts, dim=0)  # (cond rows, tokens)
        if guided:  # [unconditional | conditional]: the unconditional half is left as it is
            bias = torch.cat([torch.zeros(rows - cond, tokens, dtype=bias.dtype), bias])
        return bias.unsqueeze(1)  # (rows, 1, tokens)
