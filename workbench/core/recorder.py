"""Recording a stock pipeline call: attention processors, a wrapper on ``scheduler.step`` and the
step-end callback, all installed on entry and removed in ``finally``."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from contextlib import contextmanager

import torch
from tqdm.auto import tqdm

from .attention import AttentionSink, RecordingProcessor
from .schedulers import x0_from_output

StepCallback = Callable[[int, torch.Tensor, torch.Tensor], None]


class Recorder:
    """Collects what one pipeline call does at each step.

    ``latents[0]`` is the latent the loop starts from; ``latents[i + 1]`` and ``x0[i]`` are the
    latent after step ``i`` and the clean latent predicted at step ``i``: (batch, C, h, w), on CPU,
    float32. ``on_step(step, x0, latent)`` gets batch row 0 when ``single`` is set, else the batch.
    """

    def __init__(
        self,
        sink: AttentionSink | None,
        total_steps: int,
        progress: bool,
        cancel: threading.Event | None,
        on_step: StepCallback | None,
        single: bool = True,
    ):
        self.single = single
        self.sink = sink
        self.total_steps = total_steps
        self.cancel = cancel
        self.on_step = on_step
        self.latents: list[torch.Tensor] = []
        self.x0: list[torch.Tensor] = []
        self.timesteps: list[float] = []
        self.bar = tqdm(total=total_steps, desc="denoising", unit="step", disable=not progress, leave=False)

    @property
    def steps_done(self) -> int:
        return len(self.x0)

    def wrap_step(self, scheduler):
        original = scheduler.step

        @functools.wraps(original)
        def step(model_output, timestep, sample, *args, return_dict: bool = True, **kwargs):
            out = original(model_output, timestep, sample, *args, return_dict=True, **kwargs)
            x0 = getattr(out, "pred_original_sample", None)
            if x0 is None:
                x0 = x0_from_output(scheduler, model_output, timestep, sample)
            self._observe(timestep, sample, out.prev_sample, x0)
            return out if return_dict else out.to_tuple()

        return step

    def _observe(self, timestep, sample, prev_sample, x0) -> None:
        if not self.latents:
            self.latents.append(sample.detach().float().cpu())
        self.latents.append(prev_sample.detach().float().cpu())
        self.x0.append(x0.detach().float().cpu())
        self.timesteps.append(float(timestep))
        if self.sink is not None:
            self.sink.step = self.steps_done
        self.bar.update(1)
        if self.on_step is not None:
            x0, latent = (
                (self.x0[-1][0], self.latents[-1][0]) if self.single else (self.x0[-1], self.latents[-1])
            )
            self.on_step(self.steps_done - 1, x0, latent)

    def on_step_end(self, pipe, step: int, timestep, callback_kwargs: dict) -> dict:
        """For ``callback_on_step_end``: stops the loop when ``cancel`` is set."""
        if self.cancel is not None and self.cancel.is_set():
            pipe._interrupt = True
        return {}


@contextmanager
def record(
    pipe,
    sink: AttentionSink | None,
    *,
    total_steps: int,
    progress: bool = True,
    cancel: threading.Event | None = None,
    on_step: StepCallback | None = None,
    single: bool = True,
):
    """Observe one pipeline call; everything installed is removed on exit, also on errors and Ctrl-C.

    Example:
        >>> with record(pipe, sink, total_steps=25) as rec:  # doctest: +SKIP
        ...     out = pipe(prompt, latents=noise, callback_on_step_end=rec.on_step_end)
    """
    unet, scheduler = pipe.unet, pipe.scheduler
    old_bar = getattr(pipe, "_progress_bar_config", None)
    rec = Recorder(sink, total_steps, progress, cancel, on_step, single)
    originals: dict = {}  # module -> its processor before recording
    handles = []
    try:
        # Only the recorded layers get an observer, each through the module's own ``set_processor``.
        for layer in sink.layers if sink is not None else ():
            module = unet.get_submodule(layer)
            originals[module] = module.processor
            module.set_processor(RecordingProcessor(module.processor, layer, sink))
            handles += module.processor.hook(module)
        scheduler.step = rec.wrap_step(scheduler)
        pipe.set_progress_bar_config(disable=True)
        yield rec
    finally:
        for handle in handles:
            handle.remove()
        for module, processor in originals.items():
            module.set_processor(processor)
        scheduler.__dict__.pop("step", None)
        if old_bar is None:
            pipe.__dict__.pop("_progress_bar_config", None)
        else:
            pipe._progress_bar_config = old_bar
        rec.bar.close()
