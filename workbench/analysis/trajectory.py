"""How the image forms: decoded x0 and latents at every step, and how far each step is from the end."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from workbench.core.adapters import adapter_for
from workbench.core.run import Run

from .checks import check_pipe

# x0 within a quarter of the initial noise's distance from the final latent: the layout has committed.
COMMIT_THRESHOLD = 0.25


def decode_latents(pipe, latents: torch.Tensor, *, batch_size: int = 1) -> np.ndarray:
    """Decode latents to images exactly as the stock pipeline decodes its final latent.

    The model family's own decoding (``vae.decode(latents / scaling_factor (+ shift))``) then ``pipe.image_processor.postprocess`` to PIL,
    so the decoded final latent of a run is bit-identical to ``run.image``. ``batch_size=1`` (the
    default) decodes one latent per call as the pipeline does; larger batches are faster but may
    differ from it by float rounding.

    Args:
        pipe: the pipeline that made the latents.
        latents: (N, C, h, w) or (C, h, w).

    Returns:
        (N, H, W, 3) uint8.

    Example:
        >>> frames = decode_latents(pipe, run.x0)  # doctest: +SKIP
    """
    if not isinstance(latents, torch.Tensor):
        raise TypeError(f"latents must be a torch.Tensor, got {type(latents).__name__}")
    if latents.ndim == 3:
        latents = latents[None]
    channels = adapter_for(pipe).latent_channels
    if latents.ndim != 4 or latents.shape[1] != channels:
        raise ValueError(f"latents must be (N, {channels}, h, w) for this VAE, got {tuple(latents.shape)}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    adapter = adapter_for(pipe)
    out = []
    with torch.no_grad():
        for chunk in latents.split(batch_size):
            image = adapter.decode(chunk)  # (n, 3, H, W) in [-1, 1], as the pipeline decodes
            pil = pipe.image_processor.postprocess(
                image, output_type="pil", do_denormalize=[True] * len(chunk)
            )
            out.extend(np.asarray(p) for p in pil)
    return np.stack(out)  # (N, H, W, 3) uint8


@dataclass(frozen=True)
class Filmstrip:
    """Decoded frames of a run, one per moment: the initial noise, then after every step.

    Attributes:
        x0: (steps + 1, H, W, 3) uint8: frame 0 is the decoded initial noise, frame i + 1 the
            predicted clean image at step i.
        latent: (steps + 1, H, W, 3) uint8: frame 0 the decoded initial noise, frame i + 1 the
            decoded latent after step i; the last frame is the run's image.
        steps: the step index of each frame (-1 for the initial noise).
        timesteps: the scheduler timestep of each frame (NaN for the initial noise).
        edited: the run's edits in words (``RunConfig.edit_label``); "" for an unedited run.
    """

    x0: np.ndarray
    latent: np.ndarray
    steps: list[int]
    timesteps: list[float]
    edited: str = ""


def filmstrip(pipe, run: Run, *, batch_size: int = 1) -> Filmstrip:
    """Decode the initial noise, x0 at every step and the latent after every step.

    The initial noise is ``run.noise`` as drawn from the seed (before the scheduler's
    ``init_noise_sigma``): "random blobs of colour". The latent track's last frame is decoded the way
    the pipeline decodes, so it equals ``np.asarray(run.image)``. For sigma-parameterized schedulers
    (Euler, LMS) intermediate latents carry noise of scale sigma and decode as such.

    Example:
        >>> strip = filmstrip(pipe, run)  # doctest: +SKIP
    """
    _check_pipe_matches(pipe, run)
    n = run.steps_done
    if n == 0:
        raise ValueError("the run has no completed steps to show")
    noise = decode_latents(pipe, run.noise[None], batch_size=batch_size)  # (1, H, W, 3)
    x0 = decode_latents(pipe, run.x0, batch_size=batch_size)  # (n, H, W, 3)
    lat = decode_latents(pipe, run.latents[1:], batch_size=batch_size)  # (n, H, W, 3)
    ts = [float("nan")] + [float(t) for t in run.timesteps[:n]]
    return Filmstrip(
        x0=np.concatenate([noise, x0]),
        latent=np.concatenate([noise, lat]),
        steps=[-1, *range(n)],
        timesteps=ts,
        edited=run.config.edit_label,
    )


def _check_pipe_matches(pipe, run: Run) -> None:
    check_pipe(pipe, run)
    channels = adapter_for(pipe).latent_channels
    if run.latents.ndim != 4 or run.latents.shape[1] != channels:
        raise ValueError(
            f"the run's latents have {run.latents.shape[1] if run.latents.ndim == 4 else '?'} channels but "
            f"this pipeline's VAE expects {channels}: decode with the pipeline that made the run "
            f"({run.config.model.get('source', '?')})"
        )


def _rms(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Root-mean-square difference over all but the first axis: (N, ...) -> (N,)."""
    return (a.float() - b.float()).pow(2).flatten(1).mean(dim=1).sqrt()


def change_curves(run: Run, pipe=None, *, strip: Filmstrip | None = None) -> pd.DataFrame:
    """How far each step's prediction is from the final result: the step at which the layout commits.

    Latent columns need only the run: ``x0_latent_rms`` is the RMS distance of x0 at each step to the
    final latent, ``latent_rms`` that of the current latent. Pixel columns need decoded frames (pass
    ``pipe`` or a ``strip`` from ``filmstrip``): ``x0_pixel_rms`` / ``latent_pixel_rms`` are RMS
    distances to the final image in [0, 1] intensity units. ``*_rel`` columns divide by the
    initial noise's distance, so 1 means "as far as the noise" and 0 "already the final image".

    Returns:
        DataFrame, one row per step: ``step``, ``timestep``, then the distance columns.

    Example:
        >>> change_curves(run, pipe).plot(x="step", y="x0_pixel_rms")  # doctest: +SKIP
    """
    n = run.steps_done
    if n == 0:
        raise ValueError("the run has no completed steps")
    final = run.latents[-1][None]  # (1, C, h, w)
    noise_d = float(_rms(run.noise[None], final)[0])
    df = pd.DataFrame({"step": range(n), "timestep": [float(t) for t in run.timesteps[:n]]})
    df["x0_latent_rms"] = _rms(run.x0, final).numpy()
    df["latent_rms"] = _rms(run.latents[1:], final).numpy()
    df["x0_latent_rel"] = df.x0_latent_rms / max(noise_d, 1e-12)
    if strip is None and pipe is not None:
        strip = filmstrip(pipe, run)
    if strip is not None:
        end = torch.from_numpy(strip.latent[-1]).float()[None] / 255  # (1, H, W, 3)
        x0 = torch.from_numpy(strip.x0[1:]).float() / 255  # (n, H, W, 3)
        lat = torch.from_numpy(strip.latent[1:]).float() / 255  # (n, H, W, 3)
        noise_px = float(_rms(torch.from_numpy(strip.x0[:1]).float() / 255, end)[0])
        df["x0_pixel_rms"] = _rms(x0, end).numpy()
        df["latent_pixel_rms"] = _rms(lat, end).numpy()
        df["x0_pixel_rel"] = df.x0_pixel_rms / max(noise_px, 1e-12)
    df.attrs["edited"] = run.config.edit_label  # what edits changed the run ("" for none)
    return df


def commit_step(
    curves: pd.DataFrame, column: str = "x0_latent_rel", threshold: float = COMMIT_THRESHOLD
) -> int | None:
    """The first step from which ``column`` stays at or below ``threshold`` to the end (None if never).

    With the default ``x0_latent_rel`` and ``COMMIT_THRESHOLD`` (0.25): the step after which the
    predicted clean latent is always within a quarter of the initial noise's distance from the final latent.

    Example:
        >>> commit_step(change_curves(run))  # doctest: +SKIP
    """
    if column not in curves.columns:
        raise ValueError(f"column {column!r} is not in the curves; columns are {list(curves.columns)}")
    values = curves[column].to_numpy()
    above = np.nonzero(values > threshold)[0]
    if len(above) == 0:
        return int(curves.step.iloc[0])
    last = int(above[-1])
    return None if last == len(values) - 1 else int(curves.step.iloc[last + 1])


def commit_steps(runs: Sequence[Run], threshold: float = COMMIT_THRESHOLD) -> pd.DataFrame:
    """The commitment step of every run (``commit_step`` of its latent change curves).

    Returns:
        DataFrame, one row per run: ``prompt``, ``seed``, ``commitment_step`` (None if never),
        ``steps`` (steps done); ``attrs["threshold"]``.

    Example:
        >>> commit_steps(grid.flat())  # doctest: +SKIP
    """
    rows = [
        {
            "prompt": r.prompt,
            "seed": r.seed,
            "commitment_step": commit_step(change_curves(r), threshold=threshold),
            "steps": r.steps_done,
        }
        for r in runs
    ]
    df = pd.DataFrame(rows)
    df.attrs["threshold"] = threshold
    return df


STRIP_COLUMNS = 6  # the steps a side-by-side filmstrip shows per run


def strip_steps(run: Run, columns: int = STRIP_COLUMNS, commit: int | None = None) -> list[int]:
    """``columns`` of the run's finished steps at the same fractions of its schedule (the first and last
    step included), with ``commit`` (its commitment step) in place of the nearest one when given; runs of
    different lengths are so shown at the same points of their schedules."""
    n = run.steps_done
    if n == 0:
        raise ValueError("the run has no completed steps to show")
    steps = sorted({int(round(f * (n - 1))) for f in np.linspace(0.0, 1.0, min(columns, n))})
    if commit is not None and 0 <= commit < n and commit not in steps:
        nearest = min(range(len(steps)), key=lambda k: abs(steps[k] - commit))
        steps[nearest] = int(commit)
    return sorted(set(steps))


def x0_frames(pipe, run: Run, steps: Sequence[int]) -> np.ndarray:
    """The predicted clean image (x0) at each of ``steps``, decoded as the pipeline decodes: (k, H, W, 3)."""
    _check_pipe_matches(pipe, run)
    bad = [s for s in steps if not 0 <= int(s) < run.steps_done]
    if bad:
        raise ValueError(f"steps {bad} are not among the run's {run.steps_done} finished steps")
    return decode_latents(pipe, run.x0[[int(s) for s in steps]])


def as_pipes(pipes) -> list:
    """``pipes`` (one pipeline, or a list or tuple of them) as a list; ``FieldTypeError`` naming ``pipes``
    for anything that is not a loaded pipeline."""
    from diffusers import DiffusionPipeline

    from workbench.core.errors import FieldTypeError

    items = list(pipes) if isinstance(pipes, (list, tuple)) else [pipes]
    for i, pipe in enumerate(items):
        if not isinstance(pipe, DiffusionPipeline):
            where = "" if len(items) == 1 and not isinstance(pipes, (list, tuple)) else f" (item {i})"
            raise FieldTypeError(
                "pipes",
                f"must hold pipelines from load_pipeline; got a {type(pipe).__name__}{where}",
            )
    return items


def pipe_for(run: Run, pipes: Sequence) -> object | None:
    """The first of ``pipes`` that holds the weights ``run`` was made with (None when none does)."""
    for pipe in pipes:
        try:
            _check_pipe_matches(pipe, run)
        except ValueError:
            continue
        return pipe
    return None
