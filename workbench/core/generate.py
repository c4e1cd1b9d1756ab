"""``generate``: one request, one stock pipeline call, recorded into a ``Run`` (a thin call on ``record``).

Also ``replay``: a run's call made again unrecorded (with other prompt embeddings if asked), for the
analyses that need a fresh pipeline call.
"""

from __future__ import annotations

import copy
import dataclasses
import threading
from collections.abc import Sequence

import numpy as np
import torch

from .adapters import adapter_for
from .policy import RecordingPolicy
from .recorder import StepCallback, record, silenced_progress, using, warn_at_caller
from .request import MAX_SEED, SIZE_LIMIT, Request
from .run import Run, RunConfig
from .schedulers import build_scheduler

__all__ = [
    "MAX_SEED",
    "as_request",
    "call_again",
    "draw_noise",
    "generate",
    "generate_batch",
    "loop_length",
    "loop_steps",
    "replay",
]


def as_request(request: Request | str, fields: dict) -> Request:
    """A ``Request`` from a request or a prompt, with ``fields`` set on top (validated)."""
    if isinstance(request, Request):
        return request.replace(**fields) if fields else request
    if not isinstance(request, str):
        raise TypeError(f"prompt must be a str (or pass a Request), got {type(request).__name__}")
    unknown = sorted(set(fields) - {f.name for f in dataclasses.fields(Request)})
    if unknown:
        raise TypeError(f"unknown generation settings {unknown}; Request fields are prompt, seed, steps, ...")
    if "seed" not in fields:
        raise TypeError("generate needs seed= (it fixes the initial noise), e.g. seed=0")
    return Request(prompt=request, **fields)


def draw_noise(pipe, seed: int, height: int, width: int) -> tuple[torch.Tensor, torch.Generator]:
    """The initial latent noise for ``seed``, drawn exactly as the pipeline draws it.

    A CPU generator gives the same noise on any device. Returns the noise (1, C, h, w) on the pipeline's
    device and dtype, and the generator in the state the pipeline would leave it after drawing.
    """
    adapter = adapter_for(pipe)
    gen = torch.Generator("cpu").manual_seed(seed)
    denoiser = adapter.denoiser
    param = next(denoiser.parameters())
    noise = adapter.draw_noise(1, adapter.latent_channels, height, width, param.dtype, param.device, gen)
    return noise, gen


def loop_length(scheduler, steps: int) -> int:
    """How many denoising-loop iterations ``steps`` inference steps make for this scheduler.

    Most schedulers make one per step; PNDM's PLMS repeats a timestep and second-order schedulers
    (Heun, DPM-2) evaluate twice per step. Asked of a copy, so the pipeline's scheduler is untouched.
    """
    probe = copy.deepcopy(scheduler)
    probe.set_timesteps(steps, device="cpu")
    return len(probe.timesteps)


def loop_steps(pipe, request: Request) -> int | None:
    """How many loop iterations ``request``'s call on ``pipe`` makes (``loop_length`` of the scheduler it
    asks for); None where the scheduler's timesteps need the call's own settings (Flux's
    resolution-dependent shift)."""
    scheduler = build_scheduler(request.scheduler, pipe.scheduler.config) or pipe.scheduler
    try:
        return loop_length(scheduler, request.steps)
    except (TypeError, ValueError):
        return None


def generate(
    pipe,
    request: Request | str,
    *,
    policy: RecordingPolicy | None = None,
    progress: bool = True,
    cancel: threading.Event | None = None,
    on_step: StepCallback | None = None,
    size_limit: float | None = SIZE_LIMIT,
    **fields,
) -> Run:
    """Run the stock pipeline once for ``request`` and record every denoising step.

    Args:
        pipe: a pipeline from ``load_pipeline``.
        request: a ``Request``, or the prompt with the request's other fields as keywords
            (``seed=``, ``steps=``, ``guidance_scale=``, ``negative_prompt=``, ``height=``, ``width=``,
            ``scheduler=``; see ``Request``). Keywords given with a ``Request`` replace its fields.
        policy: what attention to keep (default ``RecordingPolicy()``: every step and layer, heads
            averaged, float16 on CPU).
        progress: show a progress bar over the steps.
        cancel: a ``threading.Event``; setting it stops after the current step (the run is kept, marked
            incomplete).
        on_step: called as ``on_step(step, x0, latent)`` with (C, h, w) tensors after every step
            (for live previews).
        size_limit: the largest image side allowed, as a multiple of the model's native size; None
            lifts the bound (the memory pre-flight still refuses what cannot fit).

    Returns:
        The ``Run``. On Ctrl-C the run so far is returned, marked ``complete=False``.

    Example:
        >>> run = generate(pipe, "a red circle left of a blue square", seed=3, steps=25)  # doctest: +SKIP
        >>> run = generate(pipe, Request("a red circle", seed=3, scheduler="euler"))  # doctest: +SKIP
    """
    step_hook = None if on_step is None else (lambda s, x0, latent: on_step(s, x0[0], latent[0]))
    return _generate(pipe, [as_request(request, fields)], policy, progress, cancel, step_hook, size_limit)[0]


def generate_batch(
    pipe,
    requests: Sequence[Request | str],
    *,
    seeds: Sequence[int] | None = None,
    policy: RecordingPolicy | None = None,
    progress: bool = True,
    cancel: threading.Event | None = None,
    on_step: StepCallback | None = None,
    size_limit: float | None = SIZE_LIMIT,
    **fields,
) -> list[Run]:
    """Several images in one batched pipeline call, each recorded into its own ``Run``.

    ``requests`` are ``Request`` values, or prompts paired with ``seeds`` (equal lengths) and the
    shared fields as keywords. The requests may differ only in prompt and seed (one stock call makes
    them all). Each image starts from the noise its seed gives in ``generate``; the images equal the
    stock batched call's. ``on_step`` gets (batch, C, h, w) tensors.

    Example:
        >>> runs = generate_batch(pipe, ["a red circle"] * 4, seeds=[0, 1, 2, 3])  # doctest: +SKIP
    """
    if isinstance(requests, (str, Request)) or not isinstance(requests, Sequence):
        raise TypeError("prompts must be a list of str (or requests a list of Request values)")
    if not requests:
        raise ValueError("requests must not be empty")
    if all(isinstance(r, str) for r in requests):
        if seeds is None or isinstance(seeds, int) or len(seeds) != len(requests):
            raise ValueError(f"seeds must be a list as long as prompts ({len(requests)}), got {seeds!r}")
        built = [as_request(p, {**fields, "seed": s}) for p, s in zip(requests, seeds)]
    elif all(isinstance(r, Request) for r in requests):
        if seeds is not None:
            raise TypeError("seeds= goes with prompts; Request values carry their own seed")
        built = [as_request(r, fields) for r in requests]
    else:
        raise TypeError("prompts must be a list of str (or requests a list of Request values), not a mix")
    shared = {k: v for k, v in built[0].to_dict().items() if k not in ("prompt", "seed")}
    for r in built[1:]:
        other = {k: v for k, v in r.to_dict().items() if k not in ("prompt", "seed")}
        if other != shared:
            diff = sorted(k for k in shared if shared[k] != other[k])
            raise ValueError(
                f"requests in one batch may differ only in prompt and seed; these differ: {diff}"
            )
    return _generate(pipe, built, policy, progress, cancel, on_step, size_limit)


def _generate(pipe, requests: list[Request], policy, progress, cancel, on_step, size_limit) -> list[Run]:
    adapter = adapter_for(pipe)
    requests = [r.for_model(adapter, size_limit=size_limit) for r in requests]
    missing = [r.prompt for r in requests if r.seed is None]
    if missing:
        raise ValueError(f"generate needs a seed for every request; none for {missing}")
    first = requests[0]
    for note in dict.fromkeys(n for r in requests for n in r.notes):
        warn_at_caller(note)
    scheduler = build_scheduler(first.scheduler, pipe.scheduler.config)
    generators = [torch.Generator("cpu").manual_seed(r.seed) for r in requests]
    single = len(requests) == 1
    interrupted = False
    with record(pipe, policy, progress=progress, cancel=cancel, on_step=on_step, scheduler=scheduler) as rec:
        rec.requests = requests  # the runs carry these, as asked (checked and filled in above)
        try:
            guidance = adapter.call_arguments(first)
            if not single and guidance.get("negative_prompt") is not None:
                guidance["negative_prompt"] = [guidance["negative_prompt"]] * len(requests)
            pipe(
                prompt=first.prompt
                if single
                else [r.prompt for r in requests],  # Flux.2 [klein] takes image first
                num_inference_steps=first.steps,
                height=first.height,
                width=first.width,
                generator=generators[0] if single else generators,
                **guidance,
            )
        except KeyboardInterrupt:
            interrupted = True  # the steps done are kept; the runs say they are incomplete
    if not rec.runs:  # stopped before the pipeline drew its noise: there is nothing to keep
        raise KeyboardInterrupt if interrupted else RuntimeError("the pipeline call made no run")
    return rec.runs


def call_again(pipe, config: RunConfig, *, output_type: str, denoiser_hook=None, **text):
    """A run's pipeline call made again, unrecorded: same noise, scheduler, steps, guidance and size.

    ``text`` replaces the run's prompt (``prompt=`` or ``prompt_embeds=``); ``denoiser_hook`` is a
    forward pre-hook (with kwargs) on the denoiser for the call's duration. The pipeline is held
    (see ``using``), its scheduler and progress bar put back afterwards. Returns the pipeline's output.
    """
    if config.seed is None:
        raise ValueError("this run's noise did not come from a seed, so it cannot be made again")
    adapter = adapter_for(pipe)
    with using(pipe), silenced_progress(pipe):
        old = pipe.scheduler
        handle = None
        try:
            if denoiser_hook is not None:
                handle = adapter.denoiser.register_forward_pre_hook(denoiser_hook, with_kwargs=True)
            pipe.scheduler = build_scheduler(config.scheduler_spec(), pipe.scheduler.config)
            return pipe(
                **(text or {"prompt": config.prompt}),
                **adapter.call_arguments(config.request),
                num_inference_steps=config.steps,
                height=config.height,
                width=config.width,
                generator=torch.Generator("cpu").manual_seed(config.seed),
                output_type=output_type,
            )
        finally:
            if handle is not None:
                handle.remove()
            pipe.scheduler = old


def replay(pipe, config: RunConfig, *, prompt_embeds: torch.Tensor | None = None) -> np.ndarray:
    """A run's pipeline call made again, unrecorded (see ``call_again``), optionally with other prompt
    embeddings (1, T, D), e.g. with a word occluded.

    Returns:
        The image as (H, W, 3) float64 in [0, 1].
    """
    text = {"prompt_embeds": prompt_embeds} if prompt_embeds is not None else {}
    out = call_again(pipe, config, output_type="np", **text)
    return np.asarray(out.images[0], dtype=np.float64)
