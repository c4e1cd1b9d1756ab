"""Memory pre-flight: will one recorded call fit, before anything large is allocated?

Two checks, both before the allocations they are about:

* ``check_size`` (when the pipeline prepares its latents, before the noise is drawn): the largest
  activations a call holds at once — the denoiser's widest feature map at the latent size (times the
  guidance batch) and the VAE decoder's first feature map at the image size — times a safety factor
  for the tensors alive beside them, in the denoiser's dtype, against the memory the denoiser's device
  has available;
* ``check_call`` (before the first denoising step, when the number of steps and the text length are
  known): the same activations plus what the recording keeps — the attention store (on its device)
  and the latent and x0 trajectories (CPU, float32) — each against the memory of the device it lives
  on.

An estimate is a floor, not a promise; its purpose is to refuse, with numbers and what would fit, the
calls that cannot fit, instead of letting them swap, hang or die half way.
"""

from __future__ import annotations

import os

import torch

LIVE_TENSORS = 8  # feature maps alive at once around the widest one (inputs, norms, residuals, outputs)
_GB = 1024**3


class MemoryPreflightError(MemoryError):
    """A generation would need more memory than the device has available."""


def available_bytes(device: torch.device) -> int | None:
    """Memory that can still be used on ``device``: CUDA, the driver's free count plus what PyTorch's
    caching allocator holds unused; CPU, the kernel's ``MemAvailable`` (free pages plus what caches give
    back), else the free pages; None if unknown."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + cached)
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def _widest_channels(module, default: int) -> int:
    widths = getattr(module.config, "block_out_channels", None)
    if widths:
        return int(max(widths))
    inner = getattr(module.config, "num_attention_heads", 0) * getattr(module.config, "attention_head_dim", 0)
    return int(inner or default)


def peak_bytes(adapter, height: int, width: int, batch: int) -> int:
    """Estimated peak activation bytes of one call at ``height`` × ``width`` for ``batch`` images."""
    denoiser, vae = adapter.denoiser, adapter.pipe.vae
    itemsize = next(denoiser.parameters()).element_size()  # (``.dtype`` of a model walks every module)
    h, w = adapter.latent_hw(height, width)
    rows = 2 * batch  # a guidance batch doubles the rows
    denoise = rows * _widest_channels(denoiser, 1024) * h * w * itemsize
    vae_width = _widest_channels(vae, 512)  # block_out_channels, or a VAE's own width setting
    if vae_width == 512 and getattr(vae.config, "base_dim", None):  # Qwen-Image / Wan VAEs: base × mult
        vae_width = int(vae.config.base_dim) * int(max(getattr(vae.config, "dim_mult", None) or [1]))
    decode = batch * vae_width * height * width * next(vae.parameters()).element_size()
    return LIVE_TENSORS * max(denoise, decode)


def trajectory_bytes(adapter, height: int, width: int, batch: int, iterations: int) -> int:
    """Bytes of the latents (iterations + 1) and x0 (iterations) a run keeps: CPU float32."""
    h, w = adapter.latent_hw(height, width)
    return (2 * iterations + 1) * batch * adapter.latent_channels * h * w * 4


def _device_of(adapter) -> torch.device:
    return next(adapter.denoiser.parameters()).device


def _fitting_size(adapter, height: int, width: int, need: int, have: int) -> tuple[int, int]:
    """The largest size of this aspect whose estimate fits ``have``: the estimate is linear in the area,
    so the area shrinks by ``have / need``; a side held at the size multiple gives its share to the other."""
    m = adapter.size_multiple
    area = height * width * have / need
    h, w = (area * height / width) ** 0.5, (area * width / height) ** 0.5
    if h < m:
        h, w = m, area / m
    elif w < m:
        h, w = area / m, m
    return max(m, int(h) // m * m), max(m, int(w) // m * m)


def check_size(adapter, height: int, width: int, batch: int) -> int:
    """Return the activation estimate, or raise ``MemoryPreflightError`` with it and the largest size
    that fits. Cheap: called before the noise is drawn."""
    device = _device_of(adapter)
    have = available_bytes(device)
    need = peak_bytes(adapter, height, width, batch)
    if have is None or need <= have:
        return need
    fit_h, fit_w = _fitting_size(adapter, height, width, need, have)
    raise MemoryPreflightError(
        f"a {width}x{height} image (batch {batch}) needs about {need / _GB:.1f} GB of activations on "
        f"{device}, which has {have / _GB:.1f} GB available, counting caches it can free; try {fit_w}x{fit_h} or smaller"
    )


def check_call(
    adapter, height: int, width: int, batch: int, iterations: int, store_bytes: int, store_device
) -> int:
    """Check the whole recorded call against each device's available memory; return the bytes it needs.

    ``store_bytes`` is the attention store's estimate (``policy.estimate_bytes``) and ``store_device``
    where the policy keeps it. Raises ``MemoryPreflightError`` naming what does not fit and what would.
    """
    device = _same_key(_device_of(adapter))
    store_device = _same_key(torch.device(store_device))
    activations = peak_bytes(adapter, height, width, batch)
    kept = trajectory_bytes(adapter, height, width, batch, iterations)
    needs: dict[torch.device, int] = {device: activations}
    needs[torch.device("cpu")] = needs.get(torch.device("cpu"), 0) + kept
    needs[store_device] = needs.get(store_device, 0) + store_bytes
    for where, need in needs.items():
        have = available_bytes(where)
        if have is None or need <= have:
            continue
        parts = [("activations", activations if where == device else 0)]
        parts += [("the latent and x0 trajectories", kept if where.type == "cpu" else 0)]
        parts += [("the attention store", store_bytes if where == store_device else 0)]
        shown = ", ".join(f"{label} {n / _GB:.2f} GB" for label, n in parts if n)
        raise MemoryPreflightError(
            f"this recorded call needs about {need / _GB:.1f} GB on {where} ({shown}), which has "
            f"{have / _GB:.1f} GB available; {_what_fits(parts, have, iterations)}"
        )
    return sum(needs.values())


def _same_key(device: torch.device) -> torch.device:
    """``cuda`` and ``cuda:0`` (the current one) as one device, so their needs add up."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def _what_fits(parts: list[tuple[str, int]], have: int, iterations: int) -> str:
    """Advice for the largest part: fewer steps or layers kept, or a smaller image."""
    label, largest = max(parts, key=lambda p: p[1])
    rest = sum(n for _, n in parts) - largest
    if label == "the attention store":
        room = max(0, have - rest)
        return (
            f"record at most {room / _GB:.2f} GB of attention: fewer steps or layers "
            "(RecordingPolicy(steps=..., layers=...)), heads='mean' or dtype='float16'"
        )
    if label == "the latent and x0 trajectories":
        return f"make fewer than {iterations} steps or a smaller image"
    return "make a smaller image"
