"""Loading pipelines: the embedded toy model, a local diffusers folder, or a hub id."""

from __future__ import annotations

import hashlib
import json
import os
import weakref
from pathlib import Path

import torch

SUPPORTED = {"StableDiffusionPipeline"}
PLANNED = {
    "StableDiffusionXLPipeline": "SDXL",
    "StableDiffusion3Pipeline": "SD3",
    "FluxPipeline": "Flux",
}


class ModelNotAvailableError(OSError):
    """The weights cannot be found locally and the hub cannot be reached."""


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _resolve_dtype(dtype, device: str) -> torch.dtype:
    if dtype is None:
        return torch.float16 if device.startswith("cuda") else torch.float32
    if isinstance(dtype, str):
        named = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
        if dtype not in named:
            raise ValueError(f"dtype must be one of {sorted(named)} or a torch.dtype, got {dtype!r}")
        return named[dtype]
    if isinstance(dtype, torch.dtype):
        return dtype
    raise TypeError(f"dtype must be a str or torch.dtype, got {type(dtype).__name__}")


_NAMED: dict[str, tuple[Path, str]] = {}  # name -> (folder, what to do when its weights are missing)


def register_model(name: str, folder: str | os.PathLike, *, missing_hint: str = "") -> None:
    """Make ``load_pipeline(name)`` load the diffusers folder ``folder`` (e.g. ``"toy"``, the embedded model)."""
    if not isinstance(name, str) or not name or "/" in name:
        raise ValueError(f"a model name must be a non-empty str without '/', got {name!r}")
    _NAMED[name] = (Path(folder), missing_hint)


def _named_folder(name: str) -> Path:
    folder, hint = _NAMED[name]
    if not (folder / "model_index.json").exists():
        raise ModelNotAvailableError(
            f"the weights of the named model {name!r} are missing from {folder}"
            + (f"; {hint}" if hint else "")
        )
    return folder


def _pipeline_class(folder: Path) -> str:
    index = folder / "model_index.json"
    if not index.exists():
        raise ValueError(f"{folder} is not a diffusers pipeline folder (no model_index.json)")
    return json.loads(index.read_text())["_class_name"]


def load_pipeline(source: str | os.PathLike = "toy", device: str | None = None, dtype=None):
    """Load a stock diffusers pipeline the workbench can record.

    Args:
        source: ``"toy"`` (the embedded model), a local diffusers folder, or a hub id such as
            ``"stable-diffusion-v1-5/stable-diffusion-v1-5"``. Only safetensors weights are loaded and
            no remote code is run.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``; defaults to CUDA when available.
        dtype: ``torch.float32`` / ``"float16"`` / ...; defaults to float16 on CUDA, float32 elsewhere.

    Returns:
        The stock ``StableDiffusionPipeline`` on ``device``, with the safety checker off.

    Example:
        >>> pipe = load_pipeline("toy")  # doctest: +SKIP
    """
    from diffusers import DiffusionPipeline, StableDiffusionPipeline

    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"source must be 'toy', a folder or a hub id, got {type(source).__name__}")
    device = device or _default_device()
    torch_dtype = _resolve_dtype(dtype, device)
    label = str(source)
    if str(source) in _NAMED:
        path: str | Path = _named_folder(str(source))
    elif Path(source).expanduser().exists():
        path = Path(source).expanduser()
    else:
        path = str(source)
    if isinstance(path, Path):
        cls_name = _pipeline_class(path)
        if cls_name not in SUPPORTED:
            kind = PLANNED.get(cls_name, cls_name)
            raise NotImplementedError(
                f"{kind} pipelines ({cls_name}) are not supported yet; supported: {sorted(SUPPORTED)}"
            )
    kwargs = dict(dtype=torch_dtype, use_safetensors=True, safety_checker=None, requires_safety_checker=False)
    try:
        if isinstance(path, Path):
            pipe = StableDiffusionPipeline.from_pretrained(path, **kwargs)
        else:
            pipe = DiffusionPipeline.from_pretrained(path, **kwargs)
    except OSError as err:
        if isinstance(path, Path):
            raise
        raise ModelNotAvailableError(
            f"the weights of {label!r} are not available locally and the hub could not be reached ({err.__class__.__name__}). "
            f"On a machine with internet run `hf download {label}` (or `huggingface-cli download {label}`), "
            "then pass the downloaded folder or set HF_HOME to the cache that holds it"
        ) from None
    if type(pipe).__name__ not in SUPPORTED:
        raise NotImplementedError(
            f"{type(pipe).__name__} is not supported yet; supported: {sorted(SUPPORTED)}"
        )
    pipe = pipe.to(device)
    _SOURCES[pipe] = label
    return pipe


_SOURCES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_HASHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def model_source(pipe) -> str:
    """Where a pipeline was loaded from (``"in-memory"`` for pipelines built by hand)."""
    return _SOURCES.get(pipe, getattr(pipe.config, "_name_or_path", None) or "in-memory")


def weights_hash(pipe) -> str:
    """SHA-256 over every weight of the UNet, text encoder and VAE (computed once per pipeline)."""
    if pipe in _HASHES:
        return _HASHES[pipe]
    h = hashlib.sha256()
    for part in ("text_encoder", "unet", "vae"):
        module = getattr(pipe, part)
        for name, tensor in sorted(module.state_dict().items()):
            h.update(f"{part}.{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
            h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    _HASHES[pipe] = h.hexdigest()
    return _HASHES[pipe]
