"""The experiment index: one row per saved run under a folder, as a pandas DataFrame.

Only each run's ``run.json`` is read (no tensors), so indexing hundreds of runs is quick. The index is
saved as ``index.parquet`` beside the runs.

Example:
    df = build_index("runs/")
    df[df.prompt.str.contains("circle")].sort_values("created")
"""

from __future__ import annotations

import os
import re
import warnings
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from workbench.store.runs import (
    IMAGE,
    RUN_JSON,
    TENSORS,
    RunLoadError,
    read_meta,
    set_aside_for,
    side_path,
    tidy,
    verify_files,
)

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
    "edits",
    "complete",
    "intact",
    "created",
    "image_hash",
]
# What marks a sweep's output folder (``workbench.sweeps.folder``), whose index.parquet is the sweep's own
_SWEEP_PLANS, _SWEEP_COLUMN = "sweeps", "sweep_id"
_PLAN_RECORD = re.compile(r"[0-9a-f]{12}\.json")


class SweepFolderError(ValueError):
    """The folder is a sweep's output folder: its index.parquet is the sweep's own (statuses, errors,
    failed runs) and is neither replaced nor read as a run index."""


# Saved in index.parquet beside COLUMNS: which files each ``intact`` verdict was computed on, so a refresh
# verifies again only the run folders whose files changed.
_STAMP = "files_stamp"
_DROPPED = [_STAMP, "tensors_stamp"]  # "tensors_stamp": the stamp of index files written before


def _stamp(folder: Path) -> str | None:
    """The size, time and inode of a run folder's run.json, tensors file and image (None if unreadable)."""
    parts = []
    for name in (RUN_JSON, TENSORS, IMAGE):
        try:
            st = (folder / name).stat()
        except FileNotFoundError:
            parts.append("-")
            continue
        except OSError:
            return None
        parts.append(f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}")
    return "/".join(parts)


def _intact(folder: Path, meta: dict) -> bool:
    """Whether the folder's files pass ``verify_files``, the checks ``load_run`` makes."""
    try:
        verify_files(folder, meta)
    except (RunLoadError, OSError):
        return False
    return True


def _row(folder: Path, shown: Path, root: Path, verdicts: dict[str, tuple[str, bool]]) -> dict:
    stamp = _stamp(folder)  # before reading: a file changed meanwhile gets verified again next time
    meta, config = read_meta(folder)  # raises RunLoadError for a damaged run.json
    path = str(shown.relative_to(root)) if shown != root else "."
    known = verdicts.get(path)
    intact = known[1] if known and stamp and known[0] == stamp else _intact(folder, meta)
    return {
        "path": path,
        "prompt": config.prompt,
        "negative_prompt": config.negative_prompt,
        "seed": config.seed,
        "steps": config.steps,
        "guidance": config.guidance_scale,
        "scheduler": config.scheduler,
        "width": config.width,
        "height": config.height,
        "model": config.model.get("source"),
        "edits": config.edit_label,
        "complete": bool(meta["complete"] and intact),
        "intact": bool(intact),
        "created": datetime.fromtimestamp((folder / RUN_JSON).stat().st_mtime, tz=timezone.utc),
        "image_hash": meta.get("hashes", {}).get("image"),
        _STAMP: stamp,
    }


def _saved_verdicts(root: Path) -> dict[str, tuple[str, bool]]:
    """path -> (tensors stamp, intact) from the index saved earlier, if it can be read."""
    try:
        saved = pd.read_parquet(root / INDEX_FILE)
    except (OSError, ValueError, ImportError):
        return {}
    if not {"path", "intact", _STAMP} <= set(saved.columns):
        return {}
    return {p: (s, bool(i)) for p, s, i in zip(saved["path"], saved[_STAMP], saved["intact"]) if s}


def _run_files(root: Path) -> tuple[list[Path], list[str]]:
    """Every run.json under ``root`` (symbolic links to folders are not followed), and a line for each
    folder that could not be read."""
    found, unreadable = [], []

    def refused(err: OSError) -> None:
        unreadable.append(f"{err.filename} ({err.strerror or err.__class__.__name__})")

    for folder, folders, files in os.walk(root, onerror=refused):
        if RUN_JSON in files or RUN_JSON in folders:
            found.append(Path(folder) / RUN_JSON)
    return sorted(found), unreadable


def _build(root: Path) -> tuple[pd.DataFrame, list[str], list[str]]:
    """The index with its stamp column, a line for each run folder left out as damaged, and one for each
    folder that could not be read."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder of runs")
    verdicts = _saved_verdicts(root)
    files, unreadable = _run_files(root)
    rows, skipped = [], []
    for file in files:
        folder = shown = file.parent
        if folder.name.startswith("."):  # a save's side folder: listed only when it stands in for its run
            shown = set_aside_for(folder)
            if shown is None:
                continue
        try:
            rows.append(_row(folder, shown, root, verdicts))
        except (RunLoadError, OSError) as err:
            skipped.append(str(err))
    df = pd.DataFrame(rows, columns=[*COLUMNS, _STAMP])
    df["created"] = pd.to_datetime(df["created"], utc=True)
    df = df.sort_values("created", ascending=False, kind="stable").reset_index(drop=True)
    return df, skipped, unreadable


def _warn_skipped(skipped: list[str], unreadable: list[str], stacklevel: int) -> None:
    if skipped:
        warnings.warn(
            f"the index leaves out {len(skipped)} damaged run folder(s): " + "; ".join(skipped),
            stacklevel=stacklevel + 1,
        )
    if unreadable:
        warnings.warn(
            f"the index cannot look into {len(unreadable)} folder(s): " + "; ".join(unreadable),
            stacklevel=stacklevel + 1,
        )


def build_index(root: str | os.PathLike) -> pd.DataFrame:
    """Scan ``root`` (recursively) for run folders and return the index, newest first.

    Run folders whose run.json is damaged are left out with one warning that names them, and folders
    that cannot be read with another. ``intact`` is true when the folder's files pass the checks
    ``load_run`` makes (``store.runs.verify_files``: the tensors file's checksum and shapes, the image's
    size and recorded hash); ``complete`` is true for a finished run that is intact.
    """
    df, skipped, unreadable = _build(Path(root))
    _warn_skipped(skipped, unreadable, stacklevel=2)
    return df.drop(columns=[_STAMP])


def _is_sweep_folder(root: Path) -> bool:
    """Whether ``root`` is a sweep's output folder: a plan record in ``sweeps/``, or an index.parquet
    with the sweep's columns."""
    try:
        with os.scandir(root / _SWEEP_PLANS) as entries:
            if any(_PLAN_RECORD.fullmatch(e.name) for e in entries):
                return True
    except OSError:
        pass
    try:
        if not (root / INDEX_FILE).is_file():  # a FIFO or a device is no index (and is not opened)
            return False
        import pyarrow.parquet as pq

        return _SWEEP_COLUMN in pq.read_schema(root / INDEX_FILE).names  # the footer only
    except (OSError, ValueError, ImportError):
        return False


def _refuse_sweep_folder(root: Path) -> None:
    if _is_sweep_folder(root):
        raise SweepFolderError(
            f"{root} is a sweep's folder: its {INDEX_FILE} is the sweep's own (status, errors, failed runs) "
            f"and is not replaced; read it with workbench.sweeps.read_index, or index {root / 'runs'}"
        )


def _save(root: Path) -> Path:
    _refuse_sweep_folder(root)
    df, skipped, unreadable = _build(root)
    _warn_skipped(skipped, unreadable, stacklevel=3)  # the caller of save_index / load_index
    path = root / INDEX_FILE
    tidy(root)  # temp files of index writes that died
    tmp = side_path(path)
    try:
        df.to_parquet(tmp, index=False)
        os.replace(tmp, path)  # readers see the old index or the new one, never half a file
    finally:
        tmp.unlink(missing_ok=True)
    return path


def save_index(root: str | os.PathLike) -> Path:
    """Build the index of ``root`` and write it to ``root/index.parquet``; returns the file.

    Raises:
        SweepFolderError: ``root`` is a sweep's output folder (its index.parquet is the sweep's own).
    """
    return _save(Path(root))


def load_index(root: str | os.PathLike, *, refresh: bool = True) -> pd.DataFrame:
    """The index of ``root``: rebuilt and saved when ``refresh`` (default), else read from the parquet file
    (rebuilt when that file is missing or unreadable).

    Raises:
        SweepFolderError: ``root`` is a sweep's output folder (``workbench.sweeps.read_index`` reads it).
    """
    root = Path(root)
    _refuse_sweep_folder(root)
    if not refresh:
        try:
            return pd.read_parquet(root / INDEX_FILE).drop(columns=_DROPPED, errors="ignore")
        except (OSError, ValueError, ImportError):
            pass
    _save(root)
    return pd.read_parquet(root / INDEX_FILE).drop(columns=_DROPPED, errors="ignore")


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
