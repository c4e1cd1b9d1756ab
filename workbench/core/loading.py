"""Loading pipelines: the embedded toy model, a local diffusers folder, or a hub id."""

from __future__ import annotations

import hashlib
import json
import os
import re
import weakref
from pathlib import Path

import torch

from workbench.names import NAMED_MODELS as _NAMED
from workbench.names import register_model  # noqa: F401  (named models are registered here too)

from .adapters import ADAPTERS, MODEL_DEFAULTS_FILE, set_model_defaults
from .errors import FieldError, FieldTypeError, first_line

SUPPORTED = set(ADAPTERS)  # pipeline classes with an adapter: SD 1.x/2.x, SDXL, SD3/3.5, Flux.1


class ModelNotAvailableError(OSError):
    """The weights cannot be found locally and the hub cannot be reached."""


# A hub id is ``owner/name``: no leading ``.`` or ``/``, no ``..``; anything else is a local path.
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")
_PICKLED = (".bin", ".pt", ".pth", ".ckpt", ".pkl")  # weight files that unpickle (and may run code)


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def device_available(device: str) -> bool:
    """Whether torch can use ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``, ...) here."""
    try:
        check_device(device)
    except (TypeError, ValueError):
        return False
    return True


def check_device(device, name: str = "device") -> str:
    """``device`` as a string when torch can run on it here, else a ``ValueError`` saying what would work.

    ``None`` gives the default device (CUDA when available, else CPU). Messages call the value ``name``
    (an option such as ``--device``, or a policy field).

    Example:
        >>> check_device("cpu")
        'cpu'
    """
    if device is None:
        return _default_device()
    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str):
        raise TypeError(f"{name} must be a str such as 'cpu' or 'cuda', got {type(device).__name__}")
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(
            f"{name} {device!r} is not a device torch knows; use 'cpu', 'cuda', 'cuda:1' or 'mps'"
        ) from None
    if parsed.type == "cpu":
        return device
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch is a CPU-only build" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ValueError(f"{name} {device!r} is not available here ({why}); use 'cpu'")
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise ValueError(
                f"{name} {device!r} is not available here: this machine has {count} CUDA device(s)"
            )
        return device
    backend = getattr(torch.backends, parsed.type, None) or getattr(torch, parsed.type, None)
    available = getattr(backend, "is_available", None)
    if available is None or not available():
        raise ValueError(f"{name} {device!r} is not available here; use 'cpu'")
    return device


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


def _named_folder(name: str) -> Path:
    folder, hint = _NAMED[name]
    if not (folder / "model_index.json").exists():
        raise ModelNotAvailableError(
            f"the weights of the named model {name!r} are missing from {folder}"
            + (f"; {hint}" if hint else "")
        )
    return folder


def _resolve_source(source) -> Path | str:
    """A registered name's folder, an existing local folder, or a hub id; anything else is an error."""
    if not isinstance(source, (str, os.PathLike)):
        raise FieldTypeError("source", f"must be 'toy', a folder or a hub id, got {type(source).__name__}")
    text = os.fspath(source)
    if isinstance(text, bytes) or not text.strip():
        raise FieldError(
            "source",
            f"must name a model: 'toy', a diffusers folder or a hub id such as 'owner/name', got {text!r}",
        )
    if isinstance(source, str) and text in _NAMED:
        return _named_folder(text)
    path = Path(text).expanduser()
    if path.exists():
        return path
    if isinstance(source, str) and _HUB_ID.fullmatch(text) and ".." not in text:
        return text
    names = ", ".join(sorted(_NAMED)) or "none"
    hint = "" if "/" in text or os.sep in text else f" or named model (named models: {names})"
    raise FileNotFoundError(f"no such folder{hint}: {text}")


def _model_index(folder: Path) -> dict:
    """The folder's ``model_index.json``, checked to name a pipeline class."""
    index = folder / "model_index.json"
    if not index.is_file():
        raise ValueError(f"{folder} is not a diffusers pipeline folder (no model_index.json)")
    try:
        data = json.loads(index.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{index} cannot be read as JSON ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("_class_name"), str):
        raise ValueError(
            f'{index} names no pipeline class (no "_class_name"); it is not a diffusers model index'
        )
    return data


def _check_safetensors(folder: Path, index: dict) -> None:
    """Refuse a folder whose components have only pickled weights (``.bin``), before diffusers sees it."""
    for part, entry in index.items():
        if part.startswith("_") or not (isinstance(entry, list) and entry and entry[0]):
            continue
        sub = folder / part
        if not sub.is_dir():
            continue
        names = sorted(p.name for p in sub.iterdir() if p.is_file())
        pickled = [n for n in names if n.endswith(_PICKLED)]
        if pickled and not any(n.endswith(".safetensors") for n in names):
            raise ValueError(
                f"{sub} holds only pickled weights ({', '.join(pickled)}); the workbench loads safetensors "
                "only, since a pickled file can run code when loaded. Convert the folder once where you "
                "trust its files: diffusers.DiffusionPipeline.from_pretrained(folder)"
                ".save_pretrained(folder, safe_serialization=True)"
            )


MAX_CONFIG_BYTES = 64 * 1024**2  # a config file is a few KB; anything this large is not one


def _read_json(file: Path) -> dict:
    """A model folder's JSON file, read only when it is a regular file of a config's size."""
    import stat

    try:
        info = file.stat()
    except OSError as err:
        raise ValueError(f"{file} cannot be read ({err.strerror or err})") from None
    if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_CONFIG_BYTES:
        raise ValueError(
            f"{file} is not a config file (not a regular file, or over {MAX_CONFIG_BYTES:,} bytes)"
        )
    try:
        data = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{file} cannot be read as JSON ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{file} is not a JSON object")
    return data


def _check_folder_configs(folder: Path, index: dict) -> None:
    """Refuse, before anything is built from them, configs that would allocate without bound: the
    scheduler's (a scheduler class only, its config bounded as a request's scheduler spec is) and the
    tokenizers' context lengths (no longer than their text encoders' position tables)."""
    from .schedulers import check_scheduler_class, check_scheduler_config

    entry = index.get("scheduler")
    file = folder / "scheduler" / "scheduler_config.json"
    if isinstance(entry, list) and file.is_file():
        config = _read_json(file)
        try:
            check_scheduler_class(str(config.get("_class_name", entry[-1])))
            check_scheduler_config({k: v for k, v in config.items() if not k.startswith("_")})
        except (TypeError, ValueError) as err:
            raise ValueError(f"{file}: {err}") from None
    for tokenizer, encoder in (("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2")):
        tok_file, enc_file = folder / tokenizer / "tokenizer_config.json", folder / encoder / "config.json"
        if not (tok_file.is_file() and enc_file.is_file()):
            continue
        length = _read_json(tok_file).get("model_max_length")
        positions = _read_json(enc_file).get("max_position_embeddings")
        if isinstance(positions, int) and isinstance(length, (int, float)) and length > positions:
            raise ValueError(
                f"{tok_file}: model_max_length {length:,} is beyond the {positions} positions of "
                f"{enc_file.parent.name}; set it to {positions} at most"
            )


def check_source(source) -> tuple[Path | str, dict | None]:
    """What ``load_pipeline`` checks of a source before loading anything: it names a registered model,
    an existing folder or a hub id, and a folder holds a supported pipeline with safetensors weights
    and readable configs. Returns the resolved folder (or hub id) and the folder's model index (None
    for a hub id); raises as ``load_pipeline`` does."""
    path = _resolve_source(source)
    if not isinstance(path, Path):
        return path, None
    index = _model_index(path)
    cls_name = index["_class_name"]
    if cls_name not in SUPPORTED:
        raise NotImplementedError(f"{cls_name} pipelines are not supported; supported: {sorted(SUPPORTED)}")
    _check_safetensors(path, index)
    _check_folder_configs(path, index)
    return path, index


def load_pipeline(source: str | os.PathLike = "toy", device: str | None = None, dtype=None):
    """Load a stock diffusers pipeline the workbench can record.

    Args:
        source: ``"toy"`` (the embedded model), a local diffusers folder, or a hub id such as
            ``"stable-diffusion-v1-5/stable-diffusion-v1-5"``. Only safetensors weights are loaded and
            no remote code is run.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``; defaults to CUDA when available.
        dtype: ``torch.float32`` / ``"float16"`` / ...; defaults to float16 on CUDA, float32 elsewhere.

    Returns:
        The stock pipeline (``StableDiffusionPipeline``, ``StableDiffusionXLPipeline``,
        ``StableDiffusion3Pipeline`` or ``FluxPipeline``) on ``device``; a Stable Diffusion safety checker off.

    Raises:
        ValueError: an empty source, a device torch cannot use here, a folder that is not a loadable
            diffusers pipeline (no or bad ``model_index.json``, only pickled weights).
        FileNotFoundError: a local path that does not exist.
        ModelNotAvailableError: a hub id whose weights are not cached and the hub cannot be reached.

    Example:
        >>> pipe = load_pipeline("toy")  # doctest: +SKIP
    """
    from diffusers import DiffusionPipeline

    _resolve_source(source)  # the source first (a named model's folder, an existing one or a hub id),
    device = check_device(device)  # then the device, before any file of the model is read
    path, index = check_source(source)
    torch_dtype = _resolve_dtype(dtype, device)
    label = os.fspath(source)
    kwargs = dict(dtype=torch_dtype, use_safetensors=True)
    try:
        if isinstance(path, Path):
            import diffusers

            cls_name = index["_class_name"]
            if cls_name == "StableDiffusionPipeline":
                kwargs.update(safety_checker=None, requires_safety_checker=False)
            pipe = getattr(diffusers, cls_name).from_pretrained(path, **kwargs)
        else:  # the class is known only once loaded: keep a Stable Diffusion safety checker off
            pipe = DiffusionPipeline.from_pretrained(
                path, safety_checker=None, requires_safety_checker=False, **kwargs
            )
    except OSError as err:
        if isinstance(path, Path):
            raise ValueError(f"{path} cannot be loaded as a diffusers pipeline: {first_line(err)}") from None
        raise ModelNotAvailableError(
            f"the weights of {label!r} are not available locally (there is no folder of that name here) "
            f"and the hub could not be reached ({err.__class__.__name__}). "
            f"On a machine with internet run `hf download {label}` (or `huggingface-cli download {label}`), "
            "then pass the downloaded folder or set HF_HOME to the cache that holds it"
        ) from None
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as err:  # a damaged folder (configs of the wrong type, weights of the wrong shape)
        if not isinstance(path, Path):
            raise
        raise ValueError(
            f"{path} cannot be loaded as a diffusers pipeline ({type(err).__name__}: {first_line(err)})"
        ) from None
    if type(pipe).__name__ not in SUPPORTED:
        raise NotImplementedError(f"{type(pipe).__name__} is not supported; supported: {sorted(SUPPORTED)}")
    if isinstance(path, Path):
        _check_all_weights_loaded(pipe, path)
        _check_sizes(pipe, path)
    pipe = pipe.to(device)
    _SOURCES[pipe] = label
    if isinstance(path, Path):
        set_model_defaults(pipe, _model_defaults(path))
    return pipe


def _check_sizes(pipe, folder: Path) -> None:
    """The sizes the adapter reads from the configs (native size, latent channels, text length) are
    numbers: refuse a folder whose configs say otherwise now, not at its first generation."""
    from .adapters import adapter_for

    adapter = adapter_for(pipe)
    try:
        sizes = (adapter.default_size, adapter.latent_channels, adapter.text_limit, adapter.size_multiple)
    except (TypeError, ValueError, AttributeError) as err:
        raise ValueError(f"{folder} has a config the workbench cannot read sizes from ({err})") from None
    if not all(isinstance(v, int) and v > 0 for v in sizes):
        raise ValueError(f"{folder} has a config with sizes that are not positive numbers: {sizes}")


def _renamed(module, keys: set[str]) -> set[str]:
    """Stored weight names as transformers names them once loaded: some models' checkpoints use other
    names (Qwen2.5-VL's ``model.layers...`` loads as ``model.language_model.layers...``); the model's
    own renaming rules are applied, as its loading applies them."""
    import re

    try:
        from transformers.conversion_mapping import get_model_conversion_mapping

        rules = [
            (src, dst)
            for rule in get_model_conversion_mapping(module)
            if type(rule).__name__ in ("WeightRenaming", "PrefixChange")
            for src, dst in zip(rule.source_patterns, rule.target_patterns * len(rule.source_patterns))
        ]
    except Exception:  # not a transformers model, or a transformers without renaming rules
        return keys
    out = set()
    for key in keys:  # the rules in turn, and the first rule that applies alone (some apply to a scope)
        chained = key
        for src, dst in rules:
            chained = re.sub(src, dst, chained, count=1)
        first = next((re.sub(src, dst, key, count=1) for src, dst in rules if re.search(src, key)), key)
        out |= {chained, first}
    return keys | out


def _check_all_weights_loaded(pipe, folder: Path) -> None:
    """Refuse a folder whose weight files lack tensors its models need.

    diffusers and transformers initialise such tensors at random with only a log line, and the model
    then makes noise (or NaN at the first step). Tensors tied to a loaded one (T5's shared embedding)
    count as loaded.
    """
    from safetensors import safe_open

    for part, module in sorted(pipe.components.items()):
        if not isinstance(module, torch.nn.Module) or not (folder / part).is_dir():
            continue
        stored: set[str] = set()
        for file in (folder / part).glob("*.safetensors"):
            with safe_open(file, "pt") as handle:
                stored |= set(handle.keys())
        state = module.state_dict()
        stored = _renamed(module, stored)
        found = [k for k in state if k in stored]
        loaded = {state[k].data_ptr() for k in found}
        missing = [k for k in state if k not in found and state[k].data_ptr() not in loaded]
        if missing:
            raise ValueError(
                f"{folder / part} does not hold {len(missing)} of the {len(state)} weights its config needs "
                f"(e.g. {', '.join(missing[:3])}); they would be random. Use weights saved with this config"
            )


DEFAULT_KEYS = ("guidance_scale", "size", "max_sequence_length", "true_cfg_scale", "negative_prompt")


def _model_defaults(folder: Path) -> dict:
    """The generation defaults a model folder declares (``workbench_defaults.json``), checked:
    ``guidance_scale`` (a number, checked as a request checks it), ``size`` (the native image side in
    pixels, 8..4096), ``max_sequence_length`` (the T5 length the model was made for, 1..512) and, for
    pipelines whose negative branch is a separate call (Flux), ``true_cfg_scale`` with the
    ``negative_prompt`` it was trained for (both checked as a request checks them)."""
    from .request import Request, _check_guidance

    file = folder / MODEL_DEFAULTS_FILE
    if not file.exists():
        return {}
    data = _read_json(file)
    try:
        if not isinstance(data, dict) or set(data) - set(DEFAULT_KEYS):
            raise ValueError(f"it may hold only the keys {list(DEFAULT_KEYS)}")
        if "guidance_scale" in data:
            _check_guidance(data["guidance_scale"])  # the value checked as a request checks it
        Request(  # the true-CFG pair checked as a request checks it
            "", 0, true_cfg_scale=data.get("true_cfg_scale"), negative_prompt=data.get("negative_prompt")
        )
        for key, low, high in (("size", 8, 4096), ("max_sequence_length", 1, 512)):
            value = data.get(key)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high
            ):
                raise ValueError(f"{key} must be an int in {low}..{high}, got {value!r}")
    except (ValueError, TypeError) as err:
        raise ValueError(f"{file} cannot be used ({err})") from None
    return data


_SOURCES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_HASHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def model_source(pipe) -> str:
    """Where a pipeline was loaded from (``"in-memory"`` for pipelines built by hand)."""
    return _SOURCES.get(pipe, getattr(pipe.config, "_name_or_path", None) or "in-memory")


def weights_hash(pipe) -> str:
    """SHA-256 over every weight of the pipeline's models (denoiser, text encoders, VAE), in component
    name order (computed once per pipeline)."""
    if pipe in _HASHES:
        return _HASHES[pipe]
    h = hashlib.sha256()
    models = {k: v for k, v in pipe.components.items() if isinstance(v, torch.nn.Module)}
    for part, module in sorted(models.items()):
        for name, tensor in sorted(module.state_dict().items()):
            h.update(f"{part}.{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
            h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    _HASHES[pipe] = h.hexdigest()
    return _HASHES[pipe]
