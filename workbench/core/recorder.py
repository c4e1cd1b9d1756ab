"""``record``: observe any stock pipeline call, the caller's own included, and keep one ``Run`` per image.

Everything is observed through points the pipeline already calls, installed on entry and removed in
``finally`` (also on errors and Ctrl-C), so the call computes exactly what it computes unobserved:

* ``encode_prompt``: the prompt and negative prompt as the pipeline received them;
* ``prepare_latents``: the size, batch and initial noise (drawn as the pipeline draws it when the
  caller gave none, so a caller's generator is consumed exactly as without recording);
* a forward pre-hook on the denoiser: on its first call the recording policy is sized against the
  model's shapes (budget checked before any denoising) and the attention observers are installed;
* a wrapper on the scheduler's ``step``: latents, predicted x0, timesteps, progress, cancel;
* the image processor's ``postprocess``: the image the pipeline returns.

Example:
    >>> with record(pipe) as rec:  # doctest: +SKIP
    ...     pipe("a red circle", num_inference_steps=25, generator=torch.Generator().manual_seed(3))
    >>> run = rec.runs[0]
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import sys
import threading
import warnings
import weakref
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import diffusers
import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from .adapters import adapter_for
from .attention import AttentionSink, AttentionStore
from .edit import switch_of
from .intervening import active_edits
from .loading import check_device, model_source, weights_hash
from .memory import check_call, check_size
from .numerics import numerics
from .policy import RecordingPolicy, check_budget
from .request import Request
from .run import Provenance, Run, RunConfig
from .schedulers import jsonable, x0_from_output

StepCallback = Callable[[int, torch.Tensor, torch.Tensor], None]

_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # module or scheduler -> its lock
_LOCKS_GUARD = threading.Lock()
_OWNERS: dict[int, int] = {}  # id(held object) -> thread ident holding its lock


def held_objects(pipe) -> list:
    """What a recording's observers sit on, and so what two calls must not share at once: the
    denoiser (a pre-hook on it, taps on its attention modules) and the scheduler (its ``step`` is wrapped).
    Pipelines built from another's components share these, so they are locked, not the pipeline."""
    return [adapter_for(pipe).denoiser, pipe.scheduler]


@contextmanager
def holding(objects: list):
    """Hold ``objects`` (see ``held_objects``): other threads wait their turn; one thread may not nest."""
    objects = sorted({id(o): o for o in objects}.values(), key=id)  # one order everywhere: no deadlock
    me = threading.get_ident()
    if any(_OWNERS.get(id(o)) == me for o in objects):
        raise RuntimeError(
            "this pipeline (or one sharing its denoiser or scheduler) is already busy with a recording in "
            "this thread; finish that call before starting another on the same pipeline"
        )
    with _LOCKS_GUARD:
        locks = [_LOCKS.setdefault(o, threading.Lock()) for o in objects]
    with contextlib.ExitStack() as stack:
        for o, lock in zip(objects, locks):
            stack.enter_context(lock)
            _OWNERS[id(o)] = me
            stack.callback(_OWNERS.pop, id(o), None)
        yield


@contextmanager
def using(pipe):
    """Hold ``pipe`` for one call (see ``holding``): every recorded or replayed call goes through here,
    so two never install observers over each other's or share one scheduler."""
    with holding(held_objects(pipe)):
        yield


@contextmanager
def silenced_progress(pipe):
    """The pipeline's own progress bar off for the block, its setting put back afterwards."""
    old = getattr(pipe, "_progress_bar_config", None)
    pipe.set_progress_bar_config(disable=True)
    try:
        yield
    finally:
        if old is None:
            pipe.__dict__.pop("_progress_bar_config", None)
        else:
            pipe._progress_bar_config = old


def _fresh_seed(generator) -> int | None:
    """The seed of a CPU generator that has drawn nothing since it was seeded, else None."""
    if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
        return None
    seed = generator.initial_seed()
    return (
        seed if torch.equal(generator.get_state(), torch.Generator().manual_seed(seed).get_state()) else None
    )


_INTERNAL = (  # code between the caller and a warning: the workbench package, diffusers, torch, contextlib
    str(Path(__file__).parent.parent),
    str(Path(diffusers.__file__).parent),
    str(Path(torch.__file__).parent),
    contextlib.__file__,
)


def wrap_attribute(owner, name: str, make) -> Callable[[], None]:
    """Put ``make(original)`` on ``owner.name`` as an instance attribute; returns what puts back what
    was there (the instance's own attribute, or none)."""
    original = getattr(owner, name)
    had = name in owner.__dict__
    setattr(owner, name, functools.wraps(original)(make(original)))
    return (lambda: setattr(owner, name, original)) if had else (lambda: owner.__dict__.pop(name, None))


def warn_at_caller(message: str) -> None:
    """Warn at the first frame outside the workbench, diffusers and torch: the caller's line."""
    frame, level = inspect.currentframe(), 1
    while frame is not None and (frame.f_code.co_filename.startswith(_INTERNAL) or level == 1):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, stacklevel=level)


class Recording:
    """What one recorded pipeline call did, step by step; ``runs`` holds the result after the block.

    ``latents[0]`` is the latent the loop starts from; ``latents[i + 1]`` and ``x0[i]`` are the
    latent after iteration ``i`` and the clean latent predicted there: (batch, C, h, w), CPU, float32.
    """

    def __init__(
        self, pipe, policy: RecordingPolicy, progress: bool, cancel, on_step: StepCallback | None, held: list
    ):
        self.pipe = pipe
        self.adapter = adapter_for(pipe)
        self.policy = policy
        self.progress = progress
        self.cancel = cancel
        self.on_step = on_step
        self.owner = threading.get_ident()  # the thread whose calls are recorded; others wait
        self.held = held  # what ``record`` holds for this recording (see ``held_objects``)
        self.runs: list[Run] = []
        self.finished: list[Run] = []  # runs of the calls made before the current one
        self.requests: list[Request] | None = None  # what ``generate`` asked for, when it made the call
        self.call_frame = None  # the frame of the pipeline call under way (from check_inputs to its end)
        self._undo: list[Callable[[], None]] = []
        self._new_call()

    def _new_call(self) -> None:
        """Forget the last call's observations (its runs are in ``finished``) for the next call."""
        self.prompts: list[str] | None = None
        self.negative_prompts: list[str | None] = [None]
        self.per_prompt = 1
        self.encode_calls = 0
        self.lengths: dict[str, int] = self.adapter.text_lengths({})
        self.negative_lengths: dict[str, int] | None = None  # where the negative prompt is encoded alone
        self.denoiser_calls = 0  # denoiser calls in the step under way
        self.negative_calls = 0  # the most extra denoiser calls a step made (a separate negative branch)
        self.text_len = 0
        self.denoiser_batch: int | None = None  # rows of the first denoiser call (2 × images under CFG)
        self.stopping = False  # Cancel or a failure asked the call to end after the current step
        self.noise: torch.Tensor | None = None  # (batch, C, h, w) as drawn, before init_noise_sigma
        self.seeds: list[int | None] = []
        self.noise_kind = "seed"
        self.size: tuple[int, int] | None = None  # (height, width) in pixels
        self.sink: AttentionSink | None = None
        self.edits: tuple = ()  # the edits acting on the call: read when it starts (``check_inputs``)
        self.total_steps = 0
        self.latents: list[torch.Tensor] = []
        self.x0: list[torch.Tensor] = []
        self.timesteps: list = []  # per step: the scheduler's timestep (a tensor on its device, or a number)
        self.on_device: torch.device | None = None  # the accelerator the loop runs on (None: the CPU)
        self.nonfinite: list[torch.Tensor] = []  # per step on an accelerator: latents or x0 non-finite
        self.images = None
        self.failure: str | None = None
        self.scheduler = None
        self.bar = None
        self._call_undo: list[Callable[[], None]] = []  # observers of this call (attention, step)

    def _end_call(self) -> None:
        """A call ended (or a next one began): keep its runs and take its observers off."""
        for undo in reversed(self._call_undo):
            undo()
        if self.bar is not None:
            self.bar.close()
        self.finished += self.finish()
        self._new_call()

    def _wait_if_foreign(self) -> None:
        """A call from another thread (or through another pipeline sharing these components) waits
        until this recording ends, then goes on unobserved: it never mixes into this recording."""
        if threading.get_ident() != self.owner:
            with holding(self.held):
                pass

    @property
    def steps_done(self) -> int:
        return len(self.x0)

    @property
    def complete(self) -> bool:
        return self.total_steps > 0 and self.steps_done == self.total_steps and self.failure is None

    # ------------------------------------------------------------ installing observers

    def _wrap(self, owner, name: str, make) -> None:
        self._undo.append(wrap_attribute(owner, name, make))

    def install(self) -> None:
        pipe = self.pipe
        # ``check_inputs`` is the first thing every stock call does, before it sets any state on the
        # pipeline: a plain call from another thread waits there until this recording ends
        if hasattr(pipe, "check_inputs"):
            self._wrap(pipe, "check_inputs", self._check_inputs)
        self._wrap(pipe, "maybe_free_model_hooks", self._call_ends)
        self._wrap(pipe, "encode_prompt", self._encode_prompt)
        self._wrap(pipe, "prepare_latents", self._prepare_latents)
        self._wrap(pipe.image_processor, "postprocess", self._postprocess)
        self._wrap(pipe.scheduler, "set_timesteps", self._guard)
        handle = self.adapter.denoiser.register_forward_pre_hook(self._forward, with_kwargs=True)
        self._undo.append(handle.remove)
        quiet = silenced_progress(pipe)
        quiet.__enter__()
        self._undo.append(lambda: quiet.__exit__(None, None, None))

    def remove(self) -> None:
        self.call_frame = None
        for undo in reversed(self._call_undo):
            undo()
        self._call_undo = []
        for undo in reversed(self._undo):
            undo()
        self._undo = []
        if self.bar is not None:
            self.bar.close()

    def _call_starts(self, frame) -> None:
        """A pipeline call starts (``frame``: its ``__call__``): other threads wait, a call nested in a
        running one is refused, the edits acting on it are read."""
        self._wait_if_foreign()
        if threading.get_ident() == self.owner:
            # a call whose outer call is still running (made from its callback) would mix into it;
            # an outer call that ended, even by an exception, is no longer on the stack
            if self.call_frame is not None and _on_stack(self.call_frame):
                raise RuntimeError(
                    "a pipeline call was made inside a recorded call (from a callback?); it cannot be "
                    "recorded apart from the call around it. Make it after that call returns"
                )
            self.call_frame = frame
            self.edits = active_edits(self.adapter.denoiser)  # what acts on this call

    def _check_inputs(self, original):
        def check_inputs(*args, **kwargs):
            self._call_starts(sys._getframe(1))  # the pipeline's ``__call__``
            return original(*args, **kwargs)

        return check_inputs

    def _call_ends(self, original):
        def maybe_free_model_hooks(*args, **kwargs):  # the last thing every stock call does
            if threading.get_ident() == self.owner:
                self.call_frame = None
            return original(*args, **kwargs)

        return maybe_free_model_hooks

    def _guard(self, original):
        def guarded(*args, **kwargs):
            self._wait_if_foreign()
            return original(*args, **kwargs)

        return guarded

    def _encode_prompt(self, original):
        signature = inspect.signature(original)

        def encode_prompt(*args, **kwargs):
            if not hasattr(self.pipe, "check_inputs") and self.encode_calls == 0:  # Z-Image: no check_inputs,
                self._call_starts(sys._getframe(1))  # the call's first step is encoding its prompt
            self._wait_if_foreign()
            if self.noise is not None:  # a second pipeline call inside one recording: a run of its own
                self._end_call()
            bound = signature.bind_partial(*args, **kwargs).arguments
            found = self.adapter.prompts_of(bound, self.encode_calls)
            self.encode_calls += 1
            if found is not None:
                prompt, negative = found
                if prompt is not None or self.prompts is None:
                    self.prompts = [prompt] if isinstance(prompt, str) else list(prompt or [])
                    self.per_prompt = int(bound.get("num_images_per_prompt") or 1)
                    self.lengths = self.adapter.text_lengths(bound)
                if prompt is None and negative is not None:  # the negative prompt's own encoding
                    self.negative_lengths = self.adapter.text_lengths(bound)
                if negative is not None:
                    self.negative_prompts = (
                        list(negative) if isinstance(negative, (list, tuple)) else [negative]
                    )
                self._warn_cut(prompt, negative)
            return original(*args, **kwargs)

        return encode_prompt

    def _warn_cut(self, prompt, negative) -> None:
        def texts(value):
            return [value] if isinstance(value, str) else [t for t in (value or []) if isinstance(t, str)]

        labelled = [("prompt", t) for t in texts(prompt)] + [("negative_prompt", t) for t in texts(negative)]
        for label, text in dict.fromkeys(labelled):
            for message in self.adapter.text_warnings(text, self.lengths):
                warn_at_caller(message.replace("prompt", label, 1))

    def _prepare_latents(self, original):
        signature = inspect.signature(original)

        def prepare_latents(*args, **kwargs):
            self._wait_if_foreign()
            bound = signature.bind(*args, **kwargs)
            a = bound.arguments
            generator, latents = a.get("generator"), a.get("latents")
            batch = int(a["batch_size"])
            self.size = (int(a["height"]), int(a["width"]))
            check_size(self.adapter, *self.size, batch)  # before the noise is drawn
            if latents is None:
                gens = generator if isinstance(generator, list) else [generator]
                fresh = [_fresh_seed(g) for g in gens]
                if isinstance(generator, list):
                    self.seeds = fresh
                else:  # one generator draws the whole batch: its seed reproduces image 0 only alone
                    self.seeds = fresh if batch == 1 else [None] * batch
                self.noise_kind = (
                    "seed" if None not in self.seeds else ("global" if generator is None else "generator")
                )
                channels = (
                    a["num_channels_latents"] if "num_channels_latents" in a else a["num_latents_channels"]
                )
                latents = self.adapter.draw_noise(
                    batch, channels, *self.size, a["dtype"], a["device"], generator
                )
                bound.arguments["latents"] = latents
            else:
                self.seeds, self.noise_kind = [None] * batch, "latents"
            self.noise = self._unpack(latents)
            return original(*bound.args, **bound.kwargs)

        return prepare_latents

    def _postprocess(self, original):
        def postprocess(*args, **kwargs):
            decoded = args[0] if args else kwargs.get("image")
            # on an accelerator, the steps' finiteness is judged now (the decoded image is read here
            # anyway): latents that turned non-finite at a step are the failure, not the image they made
            self._settle()
            if (
                self.failure is None
                and isinstance(decoded, torch.Tensor)
                and not torch.isfinite(decoded).all()
            ):  # finite latents can still decode to NaN (a broken VAE): the image would be black, not a result
                self.failure = "the decoded image turned non-finite (NaN or inf)"
            self.images = original(*args, **kwargs)
            return self.images

        return postprocess

    def _unpack(self, latents: torch.Tensor) -> torch.Tensor:
        """A latent as the loop holds it -> (batch, C, h, w), CPU float32; from an accelerator by an
        asynchronous copy into pinned memory (no wait inside the denoising loop; ``_settle`` waits once)."""
        x = self.adapter.unpack(latents.detach() if latents.requires_grad else latents, *self.size)
        if x.dtype != torch.float32:
            x = x.float()
        if x.device.type == "cpu":
            return x
        self.on_device = x.device  # ``_settle`` waits for this copy before anything reads it
        host = torch.empty(x.shape, dtype=x.dtype, pin_memory=torch.cuda.is_available())
        return host.copy_(x, non_blocking=True)

    def _settle(self) -> None:
        """Wait once for the asynchronous copies off an accelerator; then judge the steps' finiteness."""
        if self.on_device:
            _synchronize(self.on_device)
        if self.nonfinite and self.failure is None:
            bad = torch.stack(self.nonfinite).cpu().tolist()  # one copy for every step
            if True in bad:
                self.failure = f"the latents turned non-finite (NaN or inf) at step {bad.index(True)}"
        self.nonfinite = []

    def _forward(self, module, args, kwargs) -> None:
        self._wait_if_foreign()
        if self.stopping and not hasattr(type(self.pipe), "interrupt"):
            raise StepsStopped(f"stopped after {self.steps_done} steps")
        self.denoiser_calls += 1
        if self.sink is not None:
            self.sink.call = self.denoiser_calls - 1
        if self.total_steps:
            return
        pipe, adapter = self.pipe, self.adapter
        self.scheduler = pipe.scheduler
        self.total_steps = len(self.scheduler.timesteps)
        if self.noise is None:
            raise RuntimeError("recording needs the pipeline to prepare its latents before denoising")
        self.denoiser_batch, text_len = adapter.call_shape(args, kwargs)
        self.text_len = text_len if text_len is not None else adapter.text_limit
        latent_hw = tuple(self.noise.shape[-2:])
        batch = self.noise.shape[0]
        layers = adapter.layers()
        kept = self.policy.select_layers(layers, latent_hw)  # once per call
        store = check_budget(
            self.policy, layers, latent_hw, self.text_len, self.total_steps, batch, kept=kept
        )
        # before any denoising: the whole call against the memory each part lives in
        check_call(adapter, *self.size, batch, self.total_steps, store, self.policy.device)
        if self.policy.negative and not self._guided() and not adapter.separate_negative:
            warn_at_caller(
                "policy.negative is set but guidance is off: there is no negative branch to record"
            )
        if self.policy.record_attention:
            # where the denoiser computes: its input's device (its weights may still be on the CPU here,
            # moved over by an offloading hook that runs after this one)
            on_cuda = _input_device(args, kwargs, adapter.denoiser).type == "cuda"
            self.sink = AttentionSink(
                self.policy,
                kept,
                latent_hw,
                self.text_len,
                self.total_steps,
                batch=batch,
                pinned=on_cuda,
                separate_negative=adapter.separate_negative,
                cond_first=adapter.cond_first,
            )
            self._call_undo += adapter.observe(self.sink)
        undo = len(self._undo)
        self._wrap(self.scheduler, "step", self._step)
        self._call_undo += self._undo[undo:]  # the step wrapper belongs to this call
        del self._undo[undo:]
        self.bar = tqdm(
            total=self.total_steps, desc="denoising", unit="step", disable=not self.progress, leave=False
        )

    def _stop(self) -> None:
        """End the call after this step: through the pipeline's own ``interrupt`` where it has one; else
        the next denoiser call raises ``StepsStopped``, which ``record`` takes as the call's end."""
        self.pipe._interrupt = True
        self.stopping = True

    def _guided(self) -> bool:
        guided = getattr(self.pipe, "do_classifier_free_guidance", None)
        if guided is not None:
            return bool(guided)
        if not self.adapter.separate_negative and self.denoiser_batch is not None:
            # a pipeline that keeps its CFG flag local (PixArt): the batch says it, [uncond | cond]
            return self.denoiser_batch == 2 * self.noise.shape[0]
        return self.adapter.uses_guidance(self._guidance())

    def _guidance(self) -> float:
        value = getattr(self.pipe, "guidance_scale", None)  # Qwen-Image keeps None: no guidance scale
        return float(value) if value is not None else self.adapter.default_guidance

    def _step(self, original):
        def step(model_output, timestep, sample, *args, return_dict: bool = True, **kwargs):
            if threading.get_ident() != self.owner:
                self._wait_if_foreign()
                return original(model_output, timestep, sample, *args, return_dict=return_dict, **kwargs)
            out = original(model_output, timestep, sample, *args, return_dict=True, **kwargs)
            x0 = getattr(out, "pred_original_sample", None)
            if x0 is None:
                x0 = x0_from_output(self.scheduler, model_output, timestep, sample)
            self._observe(timestep, sample, out.prev_sample, x0)
            return out if return_dict else out.to_tuple()

        return step

    def _observe(self, timestep, sample, prev_sample, x0) -> None:
        if self.sink is not None:
            self.sink.flush_if_due()  # deferred attention, computed many steps together on small models
        if not self.latents:
            self.latents.append(self._unpack(sample))
        self.latents.append(self._unpack(prev_sample))
        self.x0.append(self._unpack(x0))
        self.timesteps.append(_kept_timestep(timestep))
        if prev_sample.device.type != "cpu":  # judged at the end of the call: reading it here would wait
            self.nonfinite.append(~(torch.isfinite(prev_sample).all() & torch.isfinite(x0).all()))
        self.negative_calls = max(self.negative_calls, self.denoiser_calls - 1)
        self.denoiser_calls = 0
        if self.sink is not None:
            self.sink.step = self.steps_done
        self.bar.update(1)
        if self.failure is None and not self.on_device and not _finite(self.latents[-1], self.x0[-1]):
            self.failure = f"the latents turned non-finite (NaN or inf) at step {self.steps_done - 1}"
            self._stop()  # nothing after this step means anything
        if self.on_step is not None:
            if self.on_device:  # the caller reads this step's tensors now: they must have arrived
                _synchronize(self.on_device)
            self.on_step(self.steps_done - 1, self.x0[-1], self.latents[-1])
        if self.cancel is not None and self.cancel.is_set():
            self._stop()  # the stock loop skips the remaining steps

    # ------------------------------------------------------------ the runs

    def finish(self) -> list[Run]:
        """Build one ``Run`` per image from what was observed (nothing if the call never got its latents)."""
        if self.noise is None:
            return []
        if self.sink is not None:
            self.sink.flush(before=self.steps_done)  # its copies off an accelerator are waited for next
        self._settle()
        self._warn_state()
        batch = self.noise.shape[0]
        stores = self.sink.finish(self.steps_done) if self.sink is not None else [{} for _ in range(batch)]
        images = _as_pil(self.images, batch) if self.complete else [None] * batch
        prompts, negatives = self._texts()
        provenance = self._provenance(batch, prompts)
        requests = self._requests(prompts, negatives)
        latents = torch.stack(self.latents, dim=1) if self.latents else None  # (batch, steps + 1, C, h, w)
        x0 = torch.stack(self.x0, dim=1) if self.x0 else None  # (batch, steps, C, h, w)
        empty = torch.zeros((0, *self.noise.shape[1:]))
        table = self.adapter.table
        switch = switch_of(self.edits)
        # a family whose negative branch is a second call, and the call made none: nothing was recorded
        no_second_call = self.adapter.separate_negative and self.negative_calls == 0
        if no_second_call and self.policy.negative and self.steps_done:
            warn_at_caller(
                "policy.negative is set but the call made no negative branch: there is none to record"
            )
        return [
            Run(
                config=RunConfig(requests[i], self.policy, Provenance(**provenance), edits=self.edits),
                tokens=table(prompts[i], self.lengths),
                negative_tokens=table(
                    negatives[i] or "", self.negative_lengths or self.lengths, negative=True
                ),
                timesteps=_as_float64(self.timesteps),
                noise=self.noise[i],
                latents=latents[i] if latents is not None else empty,
                x0=x0[i] if x0 is not None else empty,
                image=images[i],
                attention=stores[i].get("cond", AttentionStore(heads=self.policy.heads)),
                negative_attention=None if no_second_call else stores[i].get("uncond"),
                complete=self.complete,
                failure=self.failure,
                switch_tokens=None if switch is None else table(switch.prompt, self.lengths),
            )
            for i in range(batch)
        ]

    def _warn_state(self) -> None:
        if self.failure is not None:
            warn_at_caller(
                f"generation failed: {self.failure}; the run is kept, marked failed and incomplete"
            )
        elif not self.complete:
            warn_at_caller(
                f"generation stopped after {self.steps_done} of {self.total_steps} steps; the run keeps "
                "those steps and is marked incomplete"
            )

    def _texts(self) -> tuple[list[str], list[str | None]]:
        """The prompt and negative prompt of every image of the batch."""
        prompts = [p for p in (self.prompts or [""]) for _ in range(self.per_prompt)]
        negatives = [n for n in self.negative_prompts for _ in range(self.per_prompt)]
        if len(negatives) != len(prompts):
            negatives = [negatives[0]] * len(prompts)
        return prompts, negatives

    def _provenance(self, batch: int, prompts: list[str]) -> dict:
        param = next(self.adapter.denoiser.parameters())
        here = numerics(param.device, param.dtype)
        return dict(
            scheduler=type(self.scheduler).__name__ if self.scheduler is not None else "",
            scheduler_config=jsonable(dict(self.scheduler.config)) if self.scheduler is not None else {},
            model={
                "source": model_source(self.pipe),
                "pipeline": type(self.pipe).__name__,
                "weights_sha256": weights_hash(self.pipe),
            },
            dtype=here["dtype"],
            device=here["device"],
            versions=here["versions"],
            numerics=here,
            batch={"size": batch, "prompts": prompts, "seeds": self.seeds} if batch > 1 else None,
            noise=self.noise_kind,
        )

    def _requests(self, prompts: list[str], negatives: list[str | None]) -> list[Request]:
        """What each image was asked for: ``generate``'s own requests, or what the caller's call said."""
        asked, self.requests = self.requests, None  # for this call only
        if asked is not None and len(asked) == len(prompts):
            return list(asked)
        steps = int(getattr(self.scheduler, "num_inference_steps", None) or self.total_steps or 1)
        height, width = self.size
        true_cfg = None if self.negative_calls and self.adapter.true_cfg else 1.0
        return [
            Request(
                prompt=prompts[i],
                seed=self.seeds[i],
                steps=steps,
                guidance_scale=self._guidance(),
                true_cfg_scale=true_cfg,
                negative_prompt=negatives[i],
                height=height,
                width=width,
            )
            for i in range(len(prompts))
        ]


def _synchronize(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (CUDA, MPS); nothing on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _input_device(args, kwargs, module) -> torch.device:
    """The device of a call's first tensor argument (the module's weights' where it has none)."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            return value.device
    return next(module.parameters()).device


def _finite(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether every element of both is finite: a sum is finite unless some element is not (or the sum
    overflows, which the exact test then tells apart), so the usual answer takes one reduction each."""
    if math.isfinite(float(a.sum()) + float(b.sum())):
        return True
    return bool(torch.isfinite(a).all()) and bool(torch.isfinite(b).all())


def _as_float64(values: list) -> torch.Tensor:
    """The steps' timesteps (tensors on one device, or numbers) as a float64 CPU tensor: tensors in one
    copy off their device, not one wait each."""
    if values and all(isinstance(v, torch.Tensor) and v.numel() == 1 for v in values):
        return torch.stack([v.reshape(()) for v in values]).to("cpu", torch.float64)
    return torch.tensor([float(t) for t in values], dtype=torch.float64)


def _kept_timestep(timestep):
    """A step's timestep as kept: a tensor without its graph (if it had one), or a number."""
    if isinstance(timestep, torch.Tensor):
        return timestep.detach() if timestep.requires_grad else timestep
    return float(timestep)


class StepsStopped(Exception):
    """Raised into a pipeline that has no ``interrupt`` (PixArt) to end its loop after a step; the
    recording takes it as the call's end and keeps the steps done."""


def _on_stack(frame) -> bool:
    """Whether ``frame`` is still running in this thread (one of the callers of this function)."""
    here = sys._getframe(1)
    while here is not None:
        if here is frame:
            return True
        here = here.f_back
    return False


def _as_pil(images, batch: int) -> list:
    """The pipeline's returned images as PIL (it may have been asked for numpy or torch output)."""
    if images is None:
        return [None] * batch
    if isinstance(images, torch.Tensor):
        images = images.detach().float().cpu().permute(0, 2, 3, 1).numpy()
    if isinstance(images, np.ndarray):
        arrays = (images * 255).round().astype("uint8")
        return [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in arrays]
    return [im if isinstance(im, Image.Image) else None for im in images]


@contextmanager
def record(
    pipe,
    policy: RecordingPolicy | None = None,
    *,
    progress: bool = True,
    cancel: threading.Event | None = None,
    on_step: StepCallback | None = None,
    scheduler=None,
):
    """Record the pipeline call made inside the block; afterwards ``rec.runs`` holds one ``Run`` per image.

    The call is the caller's own: their ``generator``, ``latents``, ``callback_on_step_end`` and any
    other argument work as without recording, and the images are the same bit for bit. What the call
    does not say is not invented: with the caller's own ``latents`` (or a generator that had drawn
    before) a run's ``seed`` is ``None`` and ``config.provenance.noise`` says where the noise came from.

    Args:
        pipe: a pipeline from ``load_pipeline`` (or any supported diffusers pipeline).
        policy: what attention to keep (default ``RecordingPolicy()``); its byte budget is checked
            before the first denoising step.
        progress: show a progress bar over the denoising steps.
        cancel: a ``threading.Event``; setting it stops the call after the current step (runs are kept,
            marked incomplete).
        on_step: called as ``on_step(step, x0, latent)`` with (batch, C, h, w) tensors after every step.
        scheduler: a scheduler to put on the pipeline for the block (the pipeline's own afterwards).

    Every pipeline call made in the block is recorded: ``rec.runs`` holds the runs of the first call,
    then those of the next. One recording per pipeline at a time (pipelines that share a denoiser or
    scheduler count as one): a ``record`` from another thread waits for the pipeline, and so does a
    plain call from another thread that starts during the recording; neither mixes into it.

    Example:
        >>> with record(pipe, RecordingPolicy(layers=["16x16"])) as rec:  # doctest: +SKIP
        ...     pipe(prompt, generator=torch.Generator().manual_seed(0), callback_on_step_end=mine)
        >>> rec.runs[0].attention.probs
    """
    policy = RecordingPolicy() if policy is None else policy
    if not isinstance(policy, RecordingPolicy):
        raise TypeError(f"policy must be a RecordingPolicy, got {type(policy).__name__}")
    if policy.device != "cpu":  # where the store is to live must exist here, before anything is installed
        check_device(policy.device, "policy device")
    held = held_objects(pipe)
    with holding(held):
        old = pipe.scheduler
        if scheduler is not None:
            pipe.scheduler = scheduler
        rec = Recording(pipe, policy, progress, cancel, on_step, held)
        failed = False
        try:
            rec.install()
            yield rec
        except KeyboardInterrupt:
            raise  # the steps done are kept (below)
        except StepsStopped:
            pass  # a pipeline without ``interrupt`` ended by Cancel or a failure: the steps done are kept
        except BaseException:
            failed = True
            raise
        finally:
            rec.remove()
            pipe.scheduler = old
            if not failed:
                rec.runs = rec.finished + rec.finish()
            elif rec.sink is not None:
                rec.sink.pending = []  # a failed call's deferred projections are not kept alive
