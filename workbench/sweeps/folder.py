"""A sweep's output folder: run folders, the index of how every run ended, and what each sweep planned.

    OUT/
      index.parquet          one row per ended run and sweep: sweep_id, request_id, status, error, ...
      sweeps/<sweep_id>.json the spec, the weights' hash and every planned request with its id
      runs/<request_id>/     one run folder per finished run (written atomically by ``save_run``)

The run folders are the truth: a run whose folder holds a run.json is finished, whatever the index
says, so a sweep killed between saving a run and writing the index loses nothing (the next start reads
the run back into the index). Failed runs live only in the index. The index is written atomically
(a temporary file renamed into place), at most every couple of seconds while a sweep runs and once
at its end. One sweep writes into a folder at a time (a lock file, ``OUT/.sweep.lock``).

Runs are shared by id: a second sweep into the same folder that plans a run the first one finished
does not run it again; the index then holds a row for each sweep.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pandas as pd

from .worker import RUNS_DIR, run_path

INDEX_FILE = "index.parquet"
SWEEPS_DIR = "sweeps"
LOCK_FILE = ".sweep.lock"
COLUMNS = [
    "sweep_id",
    "request_id",
    "status",
    "error",
    "path",
    "prompt",
    "prompt_index",
    "base_prompt",
    "negative_prompt",
    "seed",
    "steps",
    "guidance",
    "scheduler",
    "height",
    "width",
    "image_sha256",
    "attention_sha256",
    "model",
    "weights_sha256",
    "worker",
    "seconds",
    "finished",
    "thumb",
    "words",
    "word_mass",
]


def _schema():
    import pyarrow as pa

    text, whole = pa.string(), pa.int64()
    types = {
        "prompt_index": whole,
        "seed": whole,
        "steps": whole,
        "height": whole,
        "width": whole,
        "guidance": pa.float64(),
        "seconds": pa.float64(),
        "finished": pa.timestamp("us", tz="UTC"),
        "thumb": pa.binary(),
        "words": pa.list_(text),
        "word_mass": pa.list_(pa.float64()),
    }
    return pa.schema([(c, types.get(c, text)) for c in COLUMNS])


class SweepBusyError(RuntimeError):
    """Another sweep is writing into the same folder."""


def read_index(out: str | os.PathLike) -> pd.DataFrame:
    """The sweep index of ``out`` (an empty one with the index's columns when there is none yet).

    Example:
        >>> df = read_index("runs/sweep"); df.status.value_counts()  # doctest: +SKIP
    """
    path = Path(out) / INDEX_FILE
    if not path.is_file():
        return pd.DataFrame({c: pd.Series(dtype=object) for c in COLUMNS})
    df = pd.read_parquet(path)
    for c in ("prompt_index", "seed", "steps", "height", "width"):
        df[c] = df[c].astype("Int64")
    return df


class SweepFolder:
    """The folder one sweep writes: its lock, its index rows, and which planned runs are finished.

    ``out=None`` keeps the rows in memory only (a sweep whose runs stay in memory).
    """

    FLUSH_EVERY_S = 2.0

    def __init__(self, out: str | os.PathLike | None):
        self.out = None if out is None else Path(out)
        self.rows: dict[tuple[str, str], dict] = {}
        self.done: dict[str, dict] = {}  # request id -> a done row (of any sweep)
        self._lock = None
        self._last_flush = 0.0
        self._dirty = False
        if self.out is not None:
            self.out.mkdir(parents=True, exist_ok=True)
            self._acquire()
            old = read_index(self.out)
            for row in old.astype(object).where(old.notna(), None).to_dict(orient="records"):
                for key in ("words", "word_mass"):  # arrays as parquet gives them back
                    row[key] = None if row[key] is None else list(row[key])
                self._keep(row)

    # ------------------------------------------------------------ lock

    def _acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # not a POSIX system: no lock
            return
        handle = open(self.out / LOCK_FILE, "a+")  # noqa: SIM115  (held open until close)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise SweepBusyError(
                f"another sweep ({holder}) is writing into {self.out}; wait for it or choose another folder"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        self._lock = handle

    def close(self) -> None:
        self.flush(force=True)
        if self._lock is not None:
            self._lock.close()  # closing the file releases the lock
            self._lock = None

    # ------------------------------------------------------------ what is finished

    def finished(self, sweep_id: str, request_id: str, *, retry_failed: bool) -> dict | None:
        """The row of a planned run that needs no running (None: run it).

        A run folder on disk is a finished run: its row is taken from any sweep's done row or read back
        from the folder. A failed row of this sweep counts too, unless ``retry_failed``.
        """
        row = self.rows.get((sweep_id, request_id))
        if self.out is None:
            return row if row is not None and (row["status"] == "done" or not retry_failed) else None
        folder = run_path(self.out, request_id)
        if (folder / "run.json").is_file():
            done = self.done.get(request_id)
            return done if done is not None else self._read_back(folder)
        if row is not None and row["status"] == "failed" and not retry_failed:
            return row
        return None

    def _read_back(self, folder: Path) -> dict | None:
        """The index fields of a run folder that has no row (its sweep stopped before writing one)."""
        from workbench.analysis.sweeps import run_summary
        from workbench.store.runs import RunLoadError, attention_hash, image_hash, load_run

        try:
            run = load_run(folder)
        except RunLoadError:
            return None  # damaged: run it again
        if not run.complete:
            return None
        return {
            "status": "done",
            "path": f"{RUNS_DIR}/{folder.name}",
            "image_sha256": image_hash(run.image),
            "attention_sha256": attention_hash(run.attention),
            "height": run.config.height,
            "width": run.config.width,
            "model": run.config.model.get("source"),
            "weights_sha256": run.config.model.get("weights_sha256"),
            "worker": "read back",
            **run_summary(run),
        }

    # ------------------------------------------------------------ rows and the index file

    def _keep(self, row: dict) -> None:
        self.rows[(row["sweep_id"], row["request_id"])] = row
        if row["status"] == "done":
            self.done[row["request_id"]] = row

    def add(self, row: dict) -> None:
        self._keep({c: row.get(c) for c in COLUMNS})
        self._dirty = True
        if time.monotonic() - self._last_flush >= self.FLUSH_EVERY_S:
            self.flush()

    def frame(self, sweep_id: str | None = None) -> pd.DataFrame:
        rows = [r for (sid, _), r in self.rows.items() if sweep_id is None or sid == sweep_id]
        df = pd.DataFrame(rows, columns=COLUMNS)
        for c in ("prompt_index", "seed", "steps", "height", "width"):
            df[c] = df[c].astype("Int64")
        return df

    def flush(self, force: bool = False) -> None:
        """Write the index (atomically) when rows changed; ``force`` writes it even when they did not."""
        if self.out is None or not (self._dirty or force):
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        from workbench.store.runs import side_path

        table = pa.Table.from_pylist(list(self.rows.values()), schema=_schema())
        path = self.out / INDEX_FILE
        tmp = side_path(path)
        try:
            pq.write_table(table, tmp)
            os.replace(tmp, path)  # readers see the old index or the new one, never half a file
        finally:
            tmp.unlink(missing_ok=True)
        self._dirty = False
        self._last_flush = time.monotonic()

    def record_plan(self, sweep_id: str, record: dict) -> None:
        """Write ``sweeps/<sweep_id>.json``: the spec and every planned request with its id."""
        if self.out is None:
            return
        from workbench.store.runs import side_path

        folder = self.out / SWEEPS_DIR
        folder.mkdir(exist_ok=True)
        path = folder / f"{sweep_id}.json"
        tmp = side_path(path)
        tmp.write_text(json.dumps(record, indent=1))
        os.replace(tmp, path)
