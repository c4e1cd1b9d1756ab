"""The denoiser at one recorded step of a run, as a function of the prompt embeddings -> predicted x0.

For analyses that need fresh model calls (Integrated Gradients, occlusion), on any supported family:
the step's denoiser inputs come from a replay of the run's own call (same seed, scheduler, guidance,
size), stopped once the step is reached; only the text embeddings are replaced.
"""

from __future__ import annotations

import copy

import torch

from .adapters import adapter_for
from .generate import call_again
from .run import Run
from .schedulers import x0_from_output


def token_ids(pipe, prompt: str) -> torch.Tensor:
    """(1, T) ids exactly as the pipeline tokenizes the prompt (padded to the context length)."""
    tok = pipe.tokenizer
    return tok(
        prompt, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids


def encode(pipe, prompt: str | None = None, ids: torch.Tensor | None = None) -> torch.Tensor:
    """Prompt embeddings as ``encode_prompt`` makes them (no clip skip): (1, T, D)."""
    if ids is None:
        ids = token_ids(pipe, prompt or "")
    mask = None
    if getattr(pipe.text_encoder.config, "use_attention_mask", False):
        mask = (ids != pipe.tokenizer.pad_token_id).long().to(pipe.device)
    with torch.no_grad():
        return pipe.text_encoder(ids.to(pipe.device), attention_mask=mask)[0].to(
            adapter_for(pipe).denoiser.dtype
        )


class _Captured(Exception):
    """Raised from a hook to end a replay once the wanted denoiser calls have been seen."""


def _capture(pipe, config, calls: set[int], prompt: str | None = None) -> dict[int, tuple]:
    """Replay a run's call until the denoiser calls numbered ``calls`` (0-based) have been made.

    Returns call -> (args, kwargs, scheduler): the denoiser's inputs and a copy of the scheduler as it
    stood just before that call. ``prompt`` replaces the run's prompt (for baseline embeddings).
    """
    seen: dict[int, tuple] = {}
    count = [0]

    def hook(module, args, kwargs):
        i = count[0]
        count[0] += 1
        if i in calls:
            seen[i] = (args, kwargs, copy.deepcopy(pipe.scheduler))
        if len(seen) == len(calls):
            raise _Captured

    text = {} if prompt is None else {"prompt": prompt}
    try:
        call_again(pipe, config, output_type="latent", denoiser_hook=hook, **text)
    except _Captured:
        pass
    if len(seen) != len(calls):
        raise ValueError(
            f"the replay made {count[0]} denoiser calls; calls {sorted(calls - set(seen))} never came"
        )
    return seen


def _rows(value, total: int, rows: slice, n: int):
    """In a (nested) argument of a ``total``-row denoiser call: every batch tensor's ``rows``, repeated
    to ``n`` rows; tensors without that batch axis (position ids, a scalar timestep) as they are."""
    if isinstance(value, torch.Tensor):
        if value.ndim == 0 or value.shape[0] != total:
            return value
        part = value[rows]
        return part.expand(n, *part.shape[1:])
    if isinstance(value, dict):
        return {k: _rows(v, total, rows, n) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_rows(v, total, rows, n) for v in value)
    return value


def conditioning(pipe, config, prompt: str) -> torch.Tensor:
    """The text embeddings the denoiser reads for ``prompt`` under a run's settings: (1, T, D).

    Taken from the pipeline's own first denoiser call (its own encoders, padding and joining), so it
    is what that family's model sees, whichever text encoders it has.
    """
    args, kwargs, _ = _capture(pipe, config, {0}, prompt=prompt)[0]
    context = kwargs["encoder_hidden_states"]
    return context[-1:].detach()  # the conditional row (the last half of a guidance batch)


class StepModel:
    """The denoiser at one recorded step of a run: ``x0(embeds)`` maps (B, T, D) -> (B, C, h, w).

    The step's denoiser inputs are taken from a replay of the run (same seed, scheduler, guidance); the
    text embeddings are the one input replaced. The guidance is combined as the pipeline combines it,
    and x0 comes from a copy of the scheduler's own ``step`` at that point, exactly as it was recorded.
    ``embeds`` holds the run's own prompt embeddings (1, T, D).
    """

    def __init__(self, pipe, run: Run, step: int):
        n = run.steps_done
        if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step < n:
            raise ValueError(f"step must be an int in 0..{n - 1} (the run's completed steps), got {step!r}")
        adapter = adapter_for(pipe)
        if not adapter.replays_steps:
            raise NotImplementedError(
                f"replaying a step as a function of the text (integrated gradients) is not built for "
                f"{adapter.family}: its transformer takes the captions as a list of their own lengths"
            )
        self.pipe, self.run, self.step, self.adapter = pipe, run, step, adapter
        request = run.config.request
        self.second = adapter.second_call(request)  # the negative branch's scale when it is a second call
        self.true_cfg = self.second is not None
        per = 2 if self.true_cfg else 1
        captured = _capture(pipe, run.config, {per * step + j for j in range(per)})
        self.args, self.kwargs, self.scheduler = captured[per * step]
        context = self.kwargs["encoder_hidden_states"]
        self.guided = context.shape[0] == 2  # one batch [unconditional | conditional]
        self.embeds = context[-1:].detach()
        self.guidance = float(run.config.guidance_scale)
        self.fixed = None  # the unconditional / negative prediction, held fixed
        with torch.no_grad():
            if self.guided:
                self.fixed = self._call(self.args, self.kwargs)[:1]
            elif self.true_cfg:
                neg_args, neg_kwargs, _ = captured[per * step + 1]
                self.fixed = self._call(neg_args, neg_kwargs)
        latent = run.latents[step][None].to(context.device, adapter.denoiser.dtype)  # (1, C, h, w)
        self.sample = adapter.pack(latent)
        self.t = self._timestep()

    def _timestep(self):
        s = self.scheduler
        index = s.step_index if getattr(s, "step_index", None) is not None else self.step
        return s.timesteps[index]

    def _call(self, args, kwargs) -> torch.Tensor:
        return self.adapter.denoiser(*args, **{**kwargs, "return_dict": False})[0]

    def x0(self, embeds: torch.Tensor) -> torch.Tensor:
        """(B, T, D) prompt embeddings -> (B, C, h, w) predicted clean latent at this step."""
        b = embeds.shape[0]
        total, rows = (2, slice(1, 2)) if self.guided else (1, slice(0, 1))
        args = _rows(self.args, total, rows, b)
        kwargs = {**_rows(self.kwargs, total, rows, b), "encoder_hidden_states": embeds}
        out = self._call(args, kwargs)  # (B, ...) the conditional prediction
        if self.guided:
            out = self.fixed + self.guidance * (out - self.fixed)
        elif self.true_cfg:
            out = self.adapter.combine(out, self.fixed, self.second)
        out = self.adapter.prediction(out)  # what the pipeline hands its scheduler (PixArt: sigma dropped)
        scheduler = copy.deepcopy(self.scheduler)
        sample = self.sample.expand(b, *self.sample.shape[1:])
        result = scheduler.step(out, self.t, sample, return_dict=True)
        x0 = getattr(result, "pred_original_sample", None)
        if x0 is None:
            x0 = x0_from_output(scheduler, out, self.t, sample)
        h, w = self.run.config.height, self.run.config.width
        return self.adapter.unpack(x0, h, w)
