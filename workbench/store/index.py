"""The experiment index: one row per saved run under a folder, as a pandas DataFrame.

Only each run's ``run.json`` is read (no tensors), so indexing hundreds of runs is quick. The index is
saved as ``index.parquet`` beside the runs.

Example:
    df = build_index("runs/")
    df[df.prompt.str.contains("circle")].sort_values("created")
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from workbench.store.runs import RUN_JSON

INDEX_FILE = "index.parquet"
COLUMNS = [
    "path",
    "prompt",
    "negative_prompt",
    "seed",
    "steps",
    "guidance",
    "scheduler",
    "width",
    "height",
    "model",
    "complete",
    "created",
    "image_hash",
]


def _row(folder: Path, root: Path) -> dict | None:
    try:
        meta = json.loads((folder / RUN_JSON).read_text())
        cfg = meta["config"]
    except (OSError, json.JSONDecodeError, KeyError, UnicodeDecodeError):
        return None  # not a readable run folder: left out of the index
    created = datetime.fromtimestamp((folder / RUN_JSON).stat().st_mtime, tz=timezone.utc)
    return {
        "path": str(folder.relative_to(root)) if folder != root else ".",
        "prompt": cfg.get("prompt"),
        "negative_prompt": cfg.get("negative_prompt"),
        "seed": cfg.get("seed"),
        "steps": cfg.get("steps"),
        "guidance": cfg.get("guidance_scale"),
        "scheduler": cfg.get("scheduler"),
        "width": cfg.get("width"),
        "height": cfg.get("height"),
        "model": (cfg.get("model") or {}).get("source"),
        "complete": bool(meta.get("complete", False)),
        "created": created,
        "image_hash": (meta.get("hashes") or {}).get("image"),
    }


def build_index(root: str | os.PathLike) -> pd.DataFrame:
    """Scan ``root`` (recursively) for run folders and return the index, newest first."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder of runs")
    rows = [
        r
        for f in sorted(root.rglob(RUN_JSON))
        if not f.parent.name.startswith(".")
        for r in [_row(f.parent, root)]
        if r
    ]
    df = pd.DataFrame(rows, columns=COLUMNS)
    df["created"] = pd.to_datetime(df["created"], utc=True)
    return df.sort_values("created", ascending=False, kind="stable").reset_index(drop=True)


def save_index(root: str | os.PathLike) -> Path:
    """Build the index of ``root`` and write it to ``root/index.parquet``; returns the file."""
    root = Path(root)
    path = root / INDEX_FILE
    build_index(root).to_parquet(path, index=False)
    return path


def load_index(root: str | os.PathLike, *, refresh: bool = True) -> pd.DataFrame:
    """The index of ``root``: rebuilt and saved when ``refresh`` (default), else read from the parquet file."""
    root = Path(root)
    if refresh or not (root / INDEX_FILE).exists():
        save_index(root)
    return pd.read_parquet(root / INDEX_FILE)


def filter_index(
    df: pd.DataFrame, text: str = "", *, sort_by: str = "created", ascending: bool = False
) -> pd.DataFrame:
    """Rows whose prompt contains ``text`` (case-insensitive), sorted by a column."""
    if sort_by not in df.columns:
        raise ValueError(f"sort_by must be one of {list(df.columns)}, got {sort_by!r}")
    out = df
    if text:
        out = out[out.prompt.fillna("").str.contains(text, case=False, regex=False)]
    return out.sort_values(sort_by, ascending=ascending, kind="stable").reset_index(drop=True)
