"""``editing``: put edits on a stock pipeline for the calls made inside a block, and take them off after.

Only hooks are installed: at an edited layer and step the stock processor gets an additive
``attention_mask`` (``bias.text_bias``) that it adds to its scores; layers and steps no edit selects
get nothing and run the stock kernel untouched. (SD3's stock processor ignores masks: there an edited
call runs the same math with the mask, ``sites.masked_joint_attention``.) A prompt switch replaces the
conditional rows of the denoiser's text conditioning from its step on.

Example:
    >>> with editing(pipe, [Edit.ablate("red", steps=range(5))]):  # doctest: +SKIP
    ...     image = pipe("a red circle", num_inference_steps=25, generator=gen).images[0]
"""

from __future__ import annotations

import inspect
import reprlib
import threading
from collections.abc import Callable
from contextlib import ExitStack, contextmanager

from ..core.adapters import JointAdapter, adapter_for
from ..core.edit import Edit, EditError, switch_of
from ..core.errors import FieldTypeError
from ..core.intervening import marked
from ..core.recorder import wrap_attribute
from .bias import text_bias
from .plan import CallText, Placed, call_text, layer_shapes, place
from .sites import CrossSite, JointSite
from .switch import Switch

_INPUTS = ("hidden_states", "encoder_hidden_states", "attention_mask")  # ``Attention.forward``'s own


@contextmanager
def editing(pipe, edits, *, sources: dict | None = None):
    """Apply ``edits`` to every call of ``pipe`` made inside the block; removed afterwards in ``finally``.

    Reweight (and ablate, its factor 0) is reweighting WITH renormalisation: at an edited layer and
    step, the conditional rows get ``log(factor)`` (``-inf`` for 0) added to the scores of the edited
    words' key positions, so each query's probabilities become ``p·w / Σ p·w`` (w = factor on the words,
    1 elsewhere): the row still sums to 1 over all its keys, text and (joint attention) image.
    (Prompt-to-Prompt's AttentionReweight scales the probabilities without renormalising.) Replace
    puts the source's probabilities on the aligned words' positions and rescales the rest of the row
    to the remaining mass (``bias``). The unconditional half of a classifier-free-guidance batch (and
    Flux's separate negative call) is never edited. A word names every occurrence of itself in the
    prompt, as the token table groups it (``workbench.core.tokens.word_groups``).

    Steps count the denoising loop's iterations from 0. A run recorded inside the block keeps the
    edits in its config (``run.config.edits``), and its recorded attention is the edited attention.

    Args:
        pipe: a supported pipeline (SD 1.x/2.x, SDXL: cross-attention; SD3, Flux: joint attention).
        edits: an ``Edit`` or a list of them; reweights on the same layer and step multiply.
        sources: for replace edits: source prompt -> the source ``Run``, recorded with ``heads="all"``
            and ``dtype="float32"`` at the edited layers and steps (``workbench.edits.generate`` makes it).

    Raises:
        RuntimeError: when ``pipe`` (or a pipeline sharing its denoiser) is already being edited.
        EditError: inside the call, for a word not in the prompt (naming the prompt's words), a layer
            entry that matches no layer, a head or step past the call's last, or a missing source.
    """
    edits = check_edits(edits)
    adapter = adapter_for(pipe)
    check_family(adapter, edits)
    with ExitStack() as stack:
        stack.enter_context(marked(adapter.denoiser, edits))
        editor = _Editor(pipe, adapter, edits, dict(sources or {}))
        stack.callback(editor.remove)
        editor.install()
        yield editor


def check_edits(edits) -> tuple[Edit, ...]:
    """``edits`` as a tuple of ``Edit`` values (one ``Edit`` is a list of one)."""
    if edits is None:
        return ()
    if isinstance(edits, Edit):
        return (edits,)
    made = "made by Edit.reweight, Edit.ablate, Edit.replace, Edit.switch or Edit.from_dict"
    if not isinstance(edits, (list, tuple)):
        raise FieldTypeError(
            "edits",
            f"must be an Edit or a list of them ({made}), got {type(edits).__name__} {reprlib.repr(edits)}",
        )
    wrong = [e for e in edits if not isinstance(e, Edit)]
    if wrong:
        raise FieldTypeError(
            "edits", f"must be Edit values ({made}), got {type(wrong[0]).__name__} {reprlib.repr(wrong[0])}"
        )
    switches = [e for e in edits if e.kind == "switch"]
    if len(switches) > 1:
        raise EditError("kind", "one prompt switch per call: the conditioning can switch once")
    return tuple(edits)


def check_steps(edits: tuple[Edit, ...], total: int) -> None:
    """Refuse edit steps (and a switch's ``from_step``) past the last of a call of ``total`` loop steps."""
    named = {s for e in edits for s in (e.steps or ())}
    late = sorted(s for s in named if s >= total)
    if late:
        raise EditError(
            "steps", f"{late} are past the last step of this call of {total} steps (0..{total - 1})"
        )
    switch = switch_of(edits)
    if switch is not None and switch.from_step >= total:
        raise EditError(
            "from_step",
            f"{switch.from_step} is past the last step of this call of {total} steps (0..{total - 1})",
        )


def check_family(adapter, edits: tuple[Edit, ...]) -> None:
    """Refuse edits the family's attention or conditioning cannot take, naming the family and why."""
    attention = [e.kind for e in edits if e.kind in ("reweight", "ablate", "replace")]
    if attention and not adapter.attention_edits:
        raise EditError(
            "kind",
            f"{attention[0]!r} is not built for {adapter.family}: its attention processor takes no "
            "additive mask to carry the edit (a prompt switch may still apply)",
        )
    if any(e.kind == "switch" for e in edits) and not adapter.conditioning:
        raise EditError(
            "kind",
            f"'switch' is not built for {adapter.family}: where its text conditioning enters the denoiser "
            "is not mapped",
        )


class _Editor:
    """The hooks of one ``editing`` block: the call's text and size, a step counter, layer pre-hooks."""

    def __init__(self, pipe, adapter, edits: tuple[Edit, ...], sources: dict):
        self.pipe, self.adapter, self.edits, self.sources = pipe, adapter, edits, sources
        self.plan: list[Placed] = []  # set when a call starts (its prompt and size known)
        self.text: CallText | None = None
        self.owner = threading.get_ident()  # the thread whose calls are edited; other threads' are not
        switch = switch_of(edits)
        self.switch = None if switch is None else Switch(pipe, adapter, switch)
        self.sites: dict = {}
        self._undo: list[Callable[[], None]] = []
        self._reset_steps()

    def _reset_steps(self) -> None:
        self.step = -1  # the loop iteration under way in the current call
        self.call_in_step = 0  # denoiser calls made in it so far (Flux's true CFG: a second, negative one)
        self._last = (None, None)  # (timestep, latent input) of the last denoiser call

    # ------------------------------------------------------------ installing

    def install(self) -> None:
        if hasattr(self.pipe, "check_inputs"):
            self._wrap(self.pipe, "check_inputs", self._check_inputs)
        if self.switch is not None:
            self._wrap(self.pipe, "encode_prompt", self.switch.wrap_encode)
        denoiser = self.adapter.denoiser
        handle = denoiser.register_forward_pre_hook(self._denoiser_call, with_kwargs=True, prepend=True)
        self._undo.append(handle.remove)
        if not any(e.kind in ("reweight", "ablate", "replace") for e in self.edits):
            return
        joint = isinstance(self.adapter, JointAdapter)
        for layer in self.adapter.layers():
            attn = denoiser.get_submodule(layer.name)
            # prepended: the bias is in place before any other pre-hook or observer's tap reads the call
            handle = attn.register_forward_pre_hook(
                self._edit_layer(layer.name), with_kwargs=True, prepend=True
            )
            self._undo.append(handle.remove)
            site = (
                JointSite(
                    attn,
                    text_first=self.adapter.text_first,
                    rotary=self.adapter.rotary,
                    needs_processor=not self.adapter.rotary,
                )
                if joint
                else CrossSite(attn)
            )
            self.sites[layer.name] = site
            self._undo.append(site.restore)

    def _wrap(self, owner, name: str, make) -> None:
        self._undo.append(wrap_attribute(owner, name, make))

    def remove(self) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo = []

    # ------------------------------------------------------------ a call starts

    def _check_inputs(self, original):
        signature = inspect.signature(original)

        def check_inputs(*args, **kwargs):
            result = original(*args, **kwargs)
            if threading.get_ident() == self.owner:
                self._start(signature.bind_partial(*args, **kwargs).arguments)
            return result

        return check_inputs

    def _start(self, bound: dict) -> None:
        adapter = self.adapter
        lengths = adapter.text_lengths(bound)
        self.text = call_text(adapter, bound.get("prompt"), lengths)
        height, width = bound.get("height"), bound.get("width")
        if height is None or width is None:
            height = width = adapter.default_size
        grids, heads = layer_shapes(adapter, adapter.latent_hw(int(height), int(width)))
        if any(e.kind == "replace" for e in self.edits) and len(self.text.prompts) != 1:
            raise EditError(
                "source", "replace edits take one prompt per call (the source's maps are one image's)"
            )
        self.plan = [place(e, self.text, grids, heads, self.sources) for e in self.edits]
        for site in self.sites.values():
            if isinstance(site, JointSite):
                site.text_len = self.text.positions
        if self.switch is not None:
            self.switch.start(self.text)
        self._reset_steps()

    # ------------------------------------------------------------ every denoiser call

    def _denoiser_call(self, module, args, kwargs):
        if threading.get_ident() != self.owner or self.text is None:
            return None
        timestep = kwargs.get("timestep", args[1] if len(args) > 1 else None)
        latent = kwargs.get("hidden_states", kwargs.get("sample", args[0] if args else None))
        t = float(timestep.flatten()[0]) if hasattr(timestep, "flatten") else timestep
        if latent is not self._last[1] or t != self._last[0]:  # a new loop iteration
            self.step += 1
            self.call_in_step = 0
            if self.step == 0:
                self._check_steps()
        else:
            self.call_in_step += 1
        self._last = (t, latent)
        if self.switch is not None and self.conditional:
            return self.switch.apply(args, kwargs, self.step, self.cond_rows(int(latent.shape[0])))
        return None

    @property
    def conditional(self) -> bool:
        """Whether the denoiser call under way carries the conditional rows (not a separate negative call)."""
        return self.call_in_step == 0

    def cond_rows(self, rows: int) -> list[int]:
        """The conditional rows of a denoiser batch of ``rows``: [unconditional | conditional] when guided."""
        guided = not self.adapter.separate_negative and bool(
            getattr(self.pipe, "do_classifier_free_guidance", False)
        )
        cond = rows // 2 if guided else rows
        return list(range(rows - cond, rows))

    def _check_steps(self) -> None:
        check_steps(self.edits, len(self.pipe.scheduler.timesteps))

    # ------------------------------------------------------------ every edited layer

    def _edit_layer(self, layer: str):
        def hook(module, args, kwargs):
            if threading.get_ident() != self.owner or not self.conditional:
                return None
            active = [p for p in self.plan if p.acts(layer, self.step)]
            if not active:
                return None  # nothing changes: the stock call as it came
            given = {**kwargs, **dict(zip(_INPUTS, args))}
            site = self.sites[layer]
            sizes = site.sizes(given)
            if sizes is None:
                return None
            rows, text = sizes
            cond = self.cond_rows(rows)
            per_prompt = max(len(cond) // len(self.text.prompts), 1)
            bias = text_bias(
                active,
                cond,
                [i // per_prompt for i in range(len(cond))],
                rows,
                int(module.heads),
                text,
                layer=layer,
                step=self.step,
                log_probs=lambda: site.log_probs(given, cond),
                sources=self.sources,
            )
            return (), site.apply(given, bias)

        return hook
