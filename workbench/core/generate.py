"""``generate``: one stock pipeline call, recorded step by step into a ``Run``."""

from __future__ import annotations

import copy
import numbers
import threading
import warnings
from collections.abc import Sequence

import torch
from diffusers.utils.torch_utils import randn_tensor

from .adapters import adapter_for
from .attention import AttentionSink, AttentionStore
from .loading import model_source, weights_hash
from .policy import RecordingPolicy, check_budget
from .recorder import StepCallback, record
from .run import Run, RunConfig
from .schedulers import make_scheduler
from .tokens import cut_message, token_table

MAX_SEED = 2**63 - 1


def versions() -> dict[str, str]:
    import diffusers
    import transformers

    from workbench import __version__

    return {
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "workbench": __version__,
    }


def _check_int(name: str, value, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < low or (high is not None and value > high):
        span = f">= {low}" if high is None else f"in {low}..{high}"
        raise ValueError(f"{name} must be {span}, got {value!r}")
    return int(value)


def _check_size(name: str, value, multiple: int) -> int:
    value = _check_int(name, value, 1)
    if value % multiple:
        lower, upper = value - value % multiple, value - value % multiple + multiple
        raise ValueError(
            f"{name} must be a multiple of {multiple} for this model, got {value}; try {lower or upper} or {upper}"
        )
    return value


def _device(pipe) -> torch.device:
    # The denoiser's device; cheaper than ``pipe.device``, which walks every module of every component.
    return next(pipe.unet.parameters()).device


def draw_noise(pipe, seed: int, height: int, width: int) -> tuple[torch.Tensor, torch.Generator]:
    """The initial latent noise for ``seed``, drawn exactly as the pipeline draws it.

    A CPU generator gives the same noise on any device. Returns the noise (1, C, h, w) on the pipeline's
    device and dtype, and the generator in the state the pipeline would leave it after drawing.
    """
    adapter = adapter_for(pipe)
    gen = torch.Generator("cpu").manual_seed(seed)
    h, w = adapter.latent_hw(height, width)
    shape = (1, adapter.latent_channels, h, w)
    noise = randn_tensor(shape, generator=gen, device=_device(pipe), dtype=pipe.unet.dtype)
    return noise, gen


def loop_length(scheduler, steps: int) -> int:
    """How many denoising-loop iterations ``steps`` inference steps make for this scheduler.

    Most schedulers make one per step; PNDM's PLMS repeats a timestep and second-order schedulers
    (Heun, DPM-2) evaluate twice per step. Asked of a copy, so the pipeline's scheduler is untouched.
    """
    probe = copy.deepcopy(scheduler)
    probe.set_timesteps(steps, device="cpu")
    return len(probe.timesteps)


def generate(
    pipe,
    prompt: str,
    *,
    seed: int,
    steps: int = 25,
    guidance_scale: float = 7.5,
    negative_prompt: str | None = None,
    height: int | None = None,
    width: int | None = None,
    scheduler=None,
    policy: RecordingPolicy | None = None,
    progress: bool = True,
    cancel: threading.Event | None = None,
    on_step: StepCallback | None = None,
) -> Run:
    """Run the stock pipeline once and record every denoising step.

    Args:
        pipe: a pipeline from ``load_pipeline`` (or any ``StableDiffusionPipeline``).
        prompt: the text prompt.
        seed: fixes the initial noise (0 <= seed < 2**63); the same seed gives the same noise for any
            prompt, so runs that differ only in the prompt start from the same latent.
        steps: number of denoising steps (>= 1).
        guidance_scale: classifier-free guidance weight (>= 0; <= 1 turns guidance off).
        negative_prompt: text for the unconditional branch.
        height, width: image size in pixels, multiples of the model's factor; default: the model's native size.
        scheduler: a name from ``workbench.core.schedulers.SCHEDULERS`` (``"ddim"``, ``"euler"``,
            ``"dpm++"``, ...) or a diffusers scheduler; default: the pipeline's own.
        policy: what attention to keep (default ``RecordingPolicy()``: every step and layer, heads
            averaged, float16 on CPU).
        progress: show a progress bar over the steps.
        cancel: a ``threading.Event``; setting it stops after the current step (the run is kept, marked
            incomplete).
        on_step: called as ``on_step(step, x0, latent)`` with (C, h, w) tensors after every step
            (for live previews).

    Returns:
        The ``Run``. On Ctrl-C the run so far is returned, marked ``complete=False``.

    Example:
        >>> run = generate(pipe, "a red circle left of a blue square", seed=3, steps=25)  # doctest: +SKIP
    """
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    return _generate(
        pipe,
        [prompt],
        [seed],
        steps,
        guidance_scale,
        negative_prompt,
        height,
        width,
        scheduler,
        policy,
        progress,
        cancel,
        on_step,
    )[0]


def generate_batch(
    pipe,
    prompts: Sequence[str],
    *,
    seeds: Sequence[int],
    steps: int = 25,
    guidance_scale: float = 7.5,
    negative_prompt: str | None = None,
    height: int | None = None,
    width: int | None = None,
    scheduler=None,
    policy: RecordingPolicy | None = None,
    progress: bool = True,
    cancel: threading.Event | None = None,
    on_step: StepCallback | None = None,
) -> list[Run]:
    """Several images in one batched pipeline call, each recorded into its own ``Run``.

    ``prompts`` and ``seeds`` pair up (equal lengths). Each image starts from the noise its seed gives
    in ``generate``; the batch runs as one stock call, so the images equal the stock batched call's.
    ``on_step`` gets (batch, C, h, w) tensors. Other arguments as in ``generate``.

    Example:
        >>> runs = generate_batch(pipe, ["a red circle"] * 4, seeds=[0, 1, 2, 3])  # doctest: +SKIP
    """
    if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
        raise TypeError("prompts must be a list of str")
    if isinstance(seeds, int) or len(seeds) != len(prompts):
        raise ValueError(f"seeds must be a list as long as prompts ({len(prompts)}), got {seeds!r}")
    if not prompts:
        raise ValueError("prompts must not be empty")
    return _generate(
        pipe,
        list(prompts),
        list(seeds),
        steps,
        guidance_scale,
        negative_prompt,
        height,
        width,
        scheduler,
        policy,
        progress,
        cancel,
        on_step,
        single=False,
    )


def _generate(
    pipe,
    prompts: list[str],
    seeds: list[int],
    steps,
    guidance_scale,
    negative_prompt,
    height,
    width,
    scheduler,
    policy,
    progress,
    cancel,
    on_step,
    single: bool = True,
) -> list[Run]:
    adapter = adapter_for(pipe)
    if negative_prompt is not None and not isinstance(negative_prompt, str):
        raise TypeError(f"negative_prompt must be a str or None, got {type(negative_prompt).__name__}")
    seeds = [_check_int("seed", s, 0, MAX_SEED) for s in seeds]
    steps = _check_int("steps", steps, 1, 1000)
    if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, numbers.Real):
        raise TypeError(f"guidance_scale must be a number, got {guidance_scale!r}")
    if not guidance_scale >= 0:
        raise ValueError(f"guidance_scale must be >= 0, got {guidance_scale!r}")
    height = _check_size("height", adapter.default_size if height is None else height, adapter.size_multiple)
    width = _check_size("width", adapter.default_size if width is None else width, adapter.size_multiple)
    policy = RecordingPolicy() if policy is None else policy
    if not isinstance(policy, RecordingPolicy):
        raise TypeError(f"policy must be a RecordingPolicy, got {type(policy).__name__}")
    new_scheduler = None if scheduler is None else make_scheduler(scheduler, pipe.scheduler.config)

    batch = len(prompts)
    latent_hw = adapter.latent_hw(height, width)
    layers = adapter.layers()
    loop = loop_length(new_scheduler or pipe.scheduler, steps)
    check_budget(policy, layers, latent_hw, adapter.text_limit, loop, batch)  # validates layers and steps
    tables = [token_table(pipe.tokenizer, p, adapter.text_limit, warn=False) for p in prompts]
    neg_table = token_table(pipe.tokenizer, negative_prompt or "", adapter.text_limit, warn=False)
    for label, table in [("prompt", t) for t in tables] + [("negative_prompt", neg_table)]:
        message = cut_message(table, adapter.text_limit)
        if message:
            warnings.warn(message.replace("prompt", label, 1), stacklevel=3)
    guided = adapter.uses_guidance(float(guidance_scale))
    if policy.negative and not guided:
        warnings.warn(
            "policy.negative is set but guidance is off: there is no negative branch to record", stacklevel=3
        )
    sink = (
        AttentionSink(policy, layers, latent_hw, adapter.text_limit, loop, batch=batch)
        if policy.record_attention
        else None
    )

    old_scheduler = pipe.scheduler
    if new_scheduler is not None:
        pipe.scheduler = new_scheduler
    drawn = [draw_noise(pipe, s, height, width) for s in seeds]
    noise = torch.cat([n for n, _ in drawn])  # (batch, C, h, w)
    generator = drawn[0][1] if single else [g for _, g in drawn]
    output, interrupted = None, False
    try:
        with record(
            pipe, sink, total_steps=loop, progress=progress, cancel=cancel, on_step=on_step, single=single
        ) as rec:
            try:
                output = pipe(
                    prompts[0] if single else prompts,
                    negative_prompt=negative_prompt
                    if single or negative_prompt is None
                    else [negative_prompt] * batch,
                    num_inference_steps=steps,
                    guidance_scale=guidance_scale,
                    height=height,
                    width=width,
                    generator=generator,
                    latents=noise,
                    callback_on_step_end=rec.on_step_end,
                    callback_on_step_end_tensor_inputs=[],
                )
            except KeyboardInterrupt:
                interrupted = True
        used_scheduler = pipe.scheduler
    finally:
        pipe.scheduler = old_scheduler

    complete = not interrupted and rec.steps_done == loop
    if not complete:
        warnings.warn(
            f"generation stopped after {rec.steps_done} of {loop} steps; the run keeps those steps "
            "and is marked incomplete",
            stacklevel=3,
        )
    stores = sink.finish(rec.steps_done) if sink is not None else [{} for _ in prompts]
    shared = dict(
        steps=steps,
        guidance_scale=float(guidance_scale),
        negative_prompt=negative_prompt,
        height=height,
        width=width,
        scheduler=type(used_scheduler).__name__,
        scheduler_config=_jsonable(dict(used_scheduler.config)),
        model={
            "source": model_source(pipe),
            "pipeline": type(pipe).__name__,
            "weights_sha256": weights_hash(pipe),
        },
        dtype=str(pipe.unet.dtype).removeprefix("torch."),
        device=str(_device(pipe)),
        versions=versions(),
        policy=policy.to_dict(),
    )
    if not single:
        shared["batch"] = {"size": batch, "prompts": prompts, "seeds": seeds}
    empty = torch.zeros((0, *noise.shape[1:]))
    latents = torch.stack(rec.latents, dim=1) if rec.latents else None  # (batch, steps + 1, C, h, w)
    x0 = torch.stack(rec.x0, dim=1) if rec.x0 else None  # (batch, steps, C, h, w)
    runs = []
    for i, (prompt, seed) in enumerate(zip(prompts, seeds)):
        runs.append(
            Run(
                config=RunConfig(prompt=prompt, seed=seed, **shared),
                tokens=tables[i],
                negative_tokens=neg_table,
                timesteps=torch.tensor(rec.timesteps, dtype=torch.float64),
                noise=noise[i].detach().float().cpu(),
                latents=latents[i] if latents is not None else empty,
                x0=x0[i] if x0 is not None else empty,
                image=output.images[i] if (output is not None and complete) else None,
                attention=stores[i].get("cond", AttentionStore(heads=policy.heads)),
                negative_attention=stores[i].get("uncond"),
                complete=complete,
            )
        )
    return runs


def _jsonable(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, (str, int, float, bool)) or v is None:
            out[k] = v
        elif isinstance(v, (list, tuple)):
            out[k] = [x if isinstance(x, (str, int, float, bool)) or x is None else str(x) for x in v]
        else:
            out[k] = str(v)
    return out
