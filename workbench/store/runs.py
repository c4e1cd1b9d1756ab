"""Saving and loading runs: a folder of JSON + safetensors + PNG, no pickle anywhere.

Layout of a run folder::

    run.json             config, token tables, store metadata, checksums
    tensors.safetensors  noise, latents, x0, timesteps, attention (one tensor per layer and branch)
    image.png            the final image (absent for an incomplete run)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import pandas as pd
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from workbench.core.attention import AttentionStore
from workbench.core.run import SCHEMA_VERSION, Run, RunConfig

RUN_JSON, TENSORS, IMAGE = "run.json", "tensors.safetensors", "image.png"


class RunLoadError(ValueError):
    """A run folder is missing, incomplete or corrupted."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def image_hash(image: Image.Image | None) -> str | None:
    """SHA-256 of an image's pixels (mode and size included), independent of PNG encoding."""
    if image is None:
        return None
    h = hashlib.sha256(f"{image.mode}:{image.size}".encode())
    h.update(image.tobytes())
    return h.hexdigest()


def attention_hash(store: AttentionStore | None) -> str | None:
    """SHA-256 over an attention store's tensors, in layer order."""
    if store is None:
        return None
    h = hashlib.sha256()
    for name in sorted(store.probs):
        t = store.probs[name].detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _store_meta(store: AttentionStore | None) -> dict | None:
    if store is None:
        return None
    return {
        "steps": list(store.steps),
        "heads": store.heads,
        "layers": list(store.probs),
        "shapes": {n: list(s) for n, s in store.shapes.items()},
    }


def _tables(table: pd.DataFrame | None) -> list[dict] | None:
    return None if table is None else table.to_dict(orient="records")


def save_run(run: Run, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``run`` to the folder ``path`` atomically (a crash leaves any earlier folder intact).

    Returns the folder's path.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    tensors: dict[str, torch.Tensor] = {
        "noise": run.noise,
        "latents": run.latents,
        "x0": run.x0,
        "timesteps": run.timesteps,
    }
    for branch, store in (("cond", run.attention), ("uncond", run.negative_attention)):
        if store is not None:
            for name, t in store.probs.items():
                tensors[f"attention.{branch}.{name}"] = t
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        save_file(tensors, tmp / TENSORS, metadata={"schema": str(SCHEMA_VERSION)})
        if run.image is not None:
            run.image.save(tmp / IMAGE)
        meta = {
            "schema": SCHEMA_VERSION,
            "config": run.config.to_dict(),
            "complete": run.complete,
            "tokens": _tables(run.tokens),
            "negative_tokens": _tables(run.negative_tokens),
            "attention": _store_meta(run.attention),
            "negative_attention": _store_meta(run.negative_attention),
            "hashes": {
                "tensors_file": _sha256(tmp / TENSORS),
                "image": image_hash(run.image),
                "attention": attention_hash(run.attention),
            },
        }
        (tmp / RUN_JSON).write_text(json.dumps(meta, indent=1))
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def _store(meta: dict | None, tensors: dict[str, torch.Tensor], branch: str) -> AttentionStore | None:
    if meta is None:
        return None
    probs = {}
    for name in meta["layers"]:
        key = f"attention.{branch}.{name}"
        if key not in tensors:
            raise RunLoadError(f"{TENSORS} lacks the attention of layer {name}")
        probs[name] = tensors[key]
    shapes = {n: tuple(s) for n, s in meta["shapes"].items()}
    return AttentionStore(probs=probs, steps=list(meta["steps"]), shapes=shapes, heads=meta["heads"])


def load_run(path: str | os.PathLike, *, verify: bool = True) -> Run:
    """Load a run folder written by ``save_run``; a damaged folder raises ``RunLoadError``.

    Args:
        path: the run folder.
        verify: check the tensors file against its recorded SHA-256 (catches corruption anywhere).
    """
    path = Path(path)
    if not path.is_dir():
        raise RunLoadError(f"{path} is not a run folder")
    for name in (RUN_JSON, TENSORS):
        if not (path / name).is_file():
            raise RunLoadError(f"{path} is not a complete run folder: {name} is missing")
    try:
        meta = json.loads((path / RUN_JSON).read_text())
        schema = meta["schema"]
        config = RunConfig.from_dict(meta["config"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, UnicodeDecodeError) as err:
        raise RunLoadError(f"{path / RUN_JSON} is damaged ({err.__class__.__name__}: {err})") from None
    if schema > SCHEMA_VERSION:
        raise RunLoadError(f"{path} was written by a newer workbench (schema {schema}); upgrade to load it")
    if verify and meta.get("hashes", {}).get("tensors_file") not in (None, _sha256(path / TENSORS)):
        raise RunLoadError(
            f"{path / TENSORS} is corrupted or truncated: its checksum does not match run.json"
        )
    try:
        tensors = load_file(path / TENSORS)
    except Exception as err:  # safetensors raises its own error types for damaged files
        raise RunLoadError(f"{path / TENSORS} cannot be read ({err.__class__.__name__}: {err})") from None
    for key in ("noise", "latents", "x0", "timesteps"):
        if key not in tensors:
            raise RunLoadError(f"{path / TENSORS} lacks the tensor {key!r}")
    image = None
    if (path / IMAGE).exists():
        try:
            with Image.open(path / IMAGE) as im:
                image = im.copy()
        except OSError as err:
            raise RunLoadError(f"{path / IMAGE} cannot be read ({err})") from None
    neg = meta.get("negative_tokens")
    return Run(
        config=config,
        tokens=pd.DataFrame(meta["tokens"]),
        negative_tokens=None if neg is None else pd.DataFrame(neg),
        timesteps=tensors["timesteps"],
        noise=tensors["noise"],
        latents=tensors["latents"],
        x0=tensors["x0"],
        image=image,
        attention=_store(meta["attention"], tensors, "cond") or AttentionStore(),
        negative_attention=_store(meta.get("negative_attention"), tensors, "uncond"),
        complete=bool(meta["complete"]),
    )
