"""A finished run as a sweep keeps it: its folder (``OUT/runs/<name>``) and its row in ``index.parquet``.

The index's columns and their types are declared once, in ``ROW_TYPES``; ``save_finished`` is the one
place a finished run is written, ``finished_fields`` the one place its row's fields are taken from it,
``index_row`` the one place a row is made, and ``verified_fields`` what resume relies on: a run folder
counts as finished only when it loads, is complete, and its image and attention hash to what was
recorded.

Example:
    >>> COLUMNS[:4]
    ['sweep_id', 'request_id', 'status', 'error']
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

import pandas as pd

RUNS_DIR = "runs"  # run folders live in OUT/runs/<request id>

#: Every index column, in order, with its Arrow type.
ROW_TYPES: dict[str, str] = {
    "sweep_id": "string",
    "request_id": "string",
    "status": "string",  # done / failed
    "error": "string",
    "path": "string",  # the run folder, relative to OUT
    "prompt": "string",
    "prompt_index": "int64",
    "base_prompt": "string",
    "negative_prompt": "string",
    "seed": "int64",
    "steps": "int64",
    "guidance": "float64",  # what the run used (the model's default where the request left it open)
    "scheduler": "string",
    "height": "int64",
    "width": "int64",
    "image_sha256": "string",
    "attention_sha256": "string",
    "model": "string",
    "edits": "string",  # what the run's edits did, in words ("" unedited)
    "weights_sha256": "string",
    "worker": "string",
    "seconds": "float64",
    "finished": "timestamp",
    "thumb": "binary",
    "words": "list<string>",
    "word_mass": "list<float64>",
}
COLUMNS = list(ROW_TYPES)
INT_COLUMNS = [c for c, t in ROW_TYPES.items() if t == "int64"]
LIST_COLUMNS = [c for c, t in ROW_TYPES.items() if t.startswith("list")]


def arrow_schema():
    """``ROW_TYPES`` as a pyarrow schema."""
    import pyarrow as pa

    types = {
        "string": pa.string(),
        "int64": pa.int64(),
        "float64": pa.float64(),
        "timestamp": pa.timestamp("us", tz="UTC"),
        "binary": pa.binary(),
        "list<string>": pa.list_(pa.string()),
        "list<float64>": pa.list_(pa.float64()),
    }
    return pa.schema([(c, types[t]) for c, t in ROW_TYPES.items()])


def typed(df: pd.DataFrame) -> pd.DataFrame:
    """The index's integer columns as nullable ints (a failed row may lack them)."""
    for c in INT_COLUMNS:
        df[c] = df[c].astype("Int64")
    return df


def empty_index() -> pd.DataFrame:
    return typed(pd.DataFrame({c: pd.Series(dtype=object) for c in COLUMNS}))


def run_path(out: str | os.PathLike, name: str) -> Path:
    return Path(out) / RUNS_DIR / name


def scheduler_label(spec) -> str:
    """A scheduler spec as one word for the index: its name, its class, or ``default``."""
    if spec is None:
        return "default"
    return spec if isinstance(spec, str) else str(spec.get("class"))


def hashes(run) -> dict:
    """The image and attention hashes a row holds of a run."""
    from workbench.store.runs import attention_hash, image_hash

    return {"image_sha256": image_hash(run.image), "attention_sha256": attention_hash(run.attention)}


def finished_fields(run) -> dict:
    """What the index row keeps of a finished run: hashes, the settings it ran with, the thumbnail and
    per-word attention mass (``analysis.sweeps.run_summary``)."""
    from workbench.analysis.sweeps import run_summary

    c = run.config
    return {
        **hashes(run),
        "guidance": c.guidance_scale,
        "height": c.height,
        "width": c.width,
        "model": c.model.get("source"),
        "weights_sha256": c.model.get("weights_sha256"),
        **run_summary(run),
    }


def save_finished(run, out: str | os.PathLike, name: str) -> dict:
    """Write a finished run to ``OUT/runs/<name>`` (atomically, replacing what was there) and return the
    row's ``path``."""
    from workbench.store.runs import save_run

    save_run(run, run_path(out, name), overwrite=True)
    return {"path": f"{RUNS_DIR}/{name}"}


def index_row(sweep_id: str, request_id: str, planned, fields: dict, status: str) -> dict:
    """The index row of one planned run (a ``spec.PlannedRun``) that ended with ``status``; ``fields``
    are what the run told (``finished_fields``, ``error``, ``worker``, ...) and win over the request's."""
    r = planned.request
    row = {
        "prompt": r.prompt,
        "negative_prompt": r.negative_prompt,
        "seed": r.seed,
        "steps": r.steps,
        "guidance": r.guidance_scale,
        "scheduler": scheduler_label(r.scheduler),
        "height": r.height,
        "width": r.width,
        "edits": "; ".join(e.describe(short=False) for e in getattr(planned, "edits", ())),  # grouped by
    }
    row.update({k: v for k, v in fields.items() if k in ROW_TYPES and v is not None})
    row.update(
        sweep_id=sweep_id,
        request_id=request_id,
        status=status,
        prompt_index=planned.prompt_index,
        base_prompt=planned.base_prompt,
        finished=fields.get("finished") or datetime.now(timezone.utc),
    )
    return {c: row.get(c) for c in COLUMNS}


class Verified(NamedTuple):
    """What ``verified_fields`` found: the row's fields of a run folder that counts as finished (None:
    it does not, and ``problem`` says why), and the numerics its run recorded ({} for runs saved before
    numerics were kept; None when it does not count)."""

    fields: dict | None
    problem: str | None = None
    numerics: dict | None = None


def verified_fields(folder: Path, row: dict | None) -> Verified:
    """Whether a run folder counts as finished, with its row's fields and its run's numerics.

    The folder must pass ``store.runs.verify_run`` (run.json checked; the tensors file there, matching
    its recorded checksum and shapes, its attention matching the recorded attention hash; the image
    there and matching its recorded hash; nothing kept in memory), hold a complete run, and its recorded
    image and attention hashes must be the ones ``row`` (its index row, if any) holds. With a row, the
    row's fields are returned; without one, they are read from the run.
    """
    from workbench.store.runs import RunLoadError, load_run, read_meta, run_folder, verify_run

    place = run_folder(folder)
    if place is None:
        return Verified(None, "its folder is gone")
    try:
        config = verify_run(place)
        meta, _ = read_meta(place)
    except (RunLoadError, OSError, ValueError) as err:
        return Verified(None, str(err))
    if not meta["complete"]:
        return Verified(None, "the run in it is incomplete")
    recorded = meta.get("hashes") or {}
    for key, name in (("image_sha256", "image"), ("attention_sha256", "attention")):
        if row is not None and row.get(key) is not None and row[key] != recorded.get(name, row[key]):
            return Verified(None, f"its {name} hash is not the one its index row holds")
    numerics = dict(config.provenance.numerics)
    if row is not None:
        return Verified(row, None, numerics)
    try:
        run = load_run(place)  # a run with no row (its sweep stopped before writing one): read it back
    except (RunLoadError, OSError, ValueError) as err:
        return Verified(None, str(err))
    fields = {"status": "done", "path": f"{RUNS_DIR}/{folder.name}", "worker": "read back"}
    return Verified({**fields, **finished_fields(run)}, None, numerics)
