"""Training checkpoints without pickle: tensors in safetensors, everything else in JSON."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def _flat_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Optimizer state as flat tensors plus a JSON-able remainder."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict] = {}
    for idx, state in sd["state"].items():
        for k, v in state.items():
            if torch.is_tensor(v):
                tensors[f"opt.{idx}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[k] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        if key.startswith("opt."):
            _, idx, k = key.split(".", 2)
            state.setdefault(int(idx), {})[k] = v
    for idx, d in meta["scalars"].items():
        state.setdefault(int(idx), {}).update(d)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(
    folder: Path,
    modules: dict[str, torch.nn.Module],
    optimizer: torch.optim.Optimizer | None,
    meta: dict,
) -> Path:
    """Write modules (+ optimizer, torch RNG) to ckpt.safetensors and meta to ckpt.json, atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    for name, module in modules.items():
        for k, v in module.state_dict().items():
            tensors[f"{name}.{k}"] = v.detach().cpu().contiguous()
    meta = dict(meta)
    if optimizer is not None:
        opt_tensors, meta["optimizer"] = _flat_optimizer(optimizer)
        tensors.update(opt_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    tmp = folder / "ckpt.safetensors.tmp"
    save_file(tensors, str(tmp))
    os.replace(tmp, folder / "ckpt.safetensors")
    (folder / "ckpt.json.tmp").write_text(json.dumps(meta, indent=1))
    os.replace(folder / "ckpt.json.tmp", folder / "ckpt.json")
    return folder


def load_checkpoint(
    folder: Path,
    modules: dict[str, torch.nn.Module],
    optimizer: torch.optim.Optimizer | None = None,
) -> dict | None:
    """Restore what save_checkpoint wrote; returns the meta dict, or None if there is no checkpoint."""
    if not (folder / "ckpt.json").exists() or not (folder / "ckpt.safetensors").exists():
        return None
    meta = json.loads((folder / "ckpt.json").read_text())
    tensors = load_file(str(folder / "ckpt.safetensors"))
    for name, module in modules.items():
        prefix = f"{name}."
        sd = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        if sd:
            module.load_state_dict(sd)
    if optimizer is not None and "optimizer" in meta:
        _load_optimizer(optimizer, tensors, meta["optimizer"])
    torch.set_rng_state(tensors["rng.torch"])
    return meta
