"""Memory pre-flight: will one generation at this size fit, before anything large is allocated?

The estimate is of the largest activations a call holds at once — the denoiser's widest feature map at
the latent size (times the guidance batch) and the VAE decoder's first feature map at the image size —
times a safety factor for the tensors alive beside them, in the denoiser's dtype. It is a floor, not a
promise; its purpose is to refuse, with numbers, the sizes that cannot fit, instead of letting a call
swap or hang for minutes.
"""

from __future__ import annotations

import os

import torch

LIVE_TENSORS = 8  # feature maps alive at once around the widest one (inputs, norms, residuals, outputs)


class MemoryPreflightError(MemoryError):
    """A generation would need more memory than the device has free."""


def available_bytes(device: torch.device) -> int | None:
    """Free memory on ``device`` (CUDA: the driver's count; CPU: the OS's available pages), or None."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
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
    vae_width = int(vae.config.block_out_channels[-1]) if vae.config.block_out_channels else 512
    decode = batch * vae_width * height * width * next(vae.parameters()).element_size()
    return LIVE_TENSORS * max(denoise, decode)


def check_memory(adapter, height: int, width: int, batch: int) -> int:
    """Return the estimate, or raise ``MemoryPreflightError`` with it and the largest size that fits."""
    device = next(adapter.denoiser.parameters()).device
    free = available_bytes(device)
    need = peak_bytes(adapter, height, width, batch)
    if free is None or need <= free:
        return need
    scale = (free / need) ** 0.5
    m = adapter.size_multiple
    fit_h, fit_w = max(m, int(height * scale) // m * m), max(m, int(width * scale) // m * m)
    raise MemoryPreflightError(
        f"a {width}x{height} image (batch {batch}) needs about {need / 1024**3:.1f} GB of activations on "
        f"{device}, which has {free / 1024**3:.1f} GB free; try {fit_w}x{fit_h} or smaller"
    )
