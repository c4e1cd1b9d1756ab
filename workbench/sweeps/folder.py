"""A sweep's output folder: run folders, the index of how every run ended, and what each sweep planned.

    OUT/
      index.parquet          one row per ended run and sweep: sweep_id, request_id, status, error, ...
      sweeps/<sweep_id>.json the spec, the weights' hash and every planned request with its id
      runs/<request_id>/     one run folder per finished run (written atomically by ``save_run``)

The run folders are the truth: a run whose folder loads and whose image and attention hash to what
was recorded is finished, whatever the index says, so a sweep killed between saving a run and writing
the index loses nothing (the next start reads the run back into the index); a damaged folder is run
again. Failed runs live only in the index. The index is written atomically
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

from .record import (
    COLUMNS,
    LIST_COLUMNS,
    RUNS_DIR,
    arrow_schema,
    empty_index,
    run_path,
    typed,
    verified_fields,
)

INDEX_FILE = "index.parquet"
SWEEPS_DIR = "sweeps"
LOCK_FILE = ".sweep.lock"


KEY_COLUMNS = ("sweep_id", "request_id", "status")  # what makes an index.parquet a sweep's


class SweepBusyError(RuntimeError):
    """Another sweep is writing into the same folder."""


class SweepIndexError(ValueError):
    """The folder's index.parquet is not a sweep's index (``workbench index`` wrote it, say) or cannot be
    read; the sweep does not write over it."""


def read_index(out: str | os.PathLike) -> pd.DataFrame:
    """The sweep index of ``out`` (an empty one with the index's columns when there is none yet).

    Raises:
        SweepIndexError: ``out/index.parquet`` is not a sweep's index, or cannot be read.

    Example:
        >>> df = read_index("runs/sweep"); df.status.value_counts()  # doctest: +SKIP
    """
    path = Path(out) / INDEX_FILE
    if not os.path.lexists(path):
        return empty_index()
    away = "move it away (the sweep reads its finished run folders back) or choose another folder"
    if not path.is_file():
        raise SweepIndexError(f"{path} is not a regular file; {away}")
    try:
        df = pd.read_parquet(path)
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise SweepIndexError(f"{path} cannot be read as a sweep's index ({first}); {away}") from None
    missing = [c for c in KEY_COLUMNS if c not in df.columns]
    if missing:
        raise SweepIndexError(
            f"{path} is not a sweep's index (it has no {', '.join(missing)} column: `workbench index` "
            f"writes such a file); {away}"
        )
    return typed(df.reindex(columns=COLUMNS))  # columns added since it was written are empty


class SweepFolder:
    """The folder one sweep writes: its lock, its index rows, and which planned runs are finished.

    ``out=None`` keeps the rows in memory only (a sweep whose runs stay in memory).
    """

    FLUSH_EVERY_S = 2.0

    def __init__(self, out: str | os.PathLike | None):
        self.out = None if out is None else Path(out)
        self.rows: dict[tuple[str, str], dict] = {}
        self.done: dict[str, dict] = {}  # request id -> a done row (of any sweep)
        self.damaged: dict[str, str] = {}  # request id -> why its run folder cannot count as finished
        self.made_with: dict[str, dict] = {}  # request id -> the numerics its finished run recorded
        self._saved: set[str] | None = None  # names in OUT/runs, listed once (``finished``)
        self._lock = None
        self._last_flush = 0.0
        self._dirty = False
        if self.out is not None:
            self.out.mkdir(parents=True, exist_ok=True)
            self._acquire()
            try:
                old = read_index(self.out)
            except BaseException:
                self._release()
                raise
            for row in old.astype(object).where(old.notna(), None).to_dict(orient="records"):
                for key in LIST_COLUMNS:  # arrays as parquet gives them back
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

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the file releases the lock
            self._lock = None

    def close(self) -> None:
        self.flush()  # only when rows changed: a sweep refused before its first run leaves no index
        self._release()

    # ------------------------------------------------------------ what is finished

    def finished(self, sweep_id: str, request_id: str, *, retry_failed: bool) -> dict | None:
        """The row of a planned run that needs no running (None: run it).

        A run folder on disk that checks out (``record.verified_fields``: it loads, is complete, and its
        image and attention hash to what was recorded) is a finished run: its row is taken from any
        sweep's done row or read back from the folder, and the numerics it was made with are noted in
        ``made_with``. A damaged folder is run again (and noted in ``damaged``). A failed row of this sweep counts too, unless ``retry_failed``.
        """
        row = self.rows.get((sweep_id, request_id))
        if self.out is None:
            return row if row is not None and (row["status"] == "done" or not retry_failed) else None
        if self._saved is None:  # one listing of the run folders for all of a plan's runs
            from workbench.store.runs import saved_names

            self._saved = saved_names(self.out / RUNS_DIR)
        if request_id in self._saved or request_id in self.done:
            verified = verified_fields(run_path(self.out, request_id), self.done.get(request_id))
            if verified.fields is not None:
                self.made_with[request_id] = verified.numerics
                return verified.fields
            self.damaged[request_id] = verified.problem
            return None
        if row is not None and row["status"] == "failed" and not retry_failed:
            return row
        return None

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
        return typed(pd.DataFrame(rows, columns=COLUMNS))

    def flush(self, force: bool = False) -> None:
        """Write the index (atomically) when rows changed; ``force`` writes it even when they did not."""
        if self.out is None or not (self._dirty or force):
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        from workbench.store.runs import side_path

        table = pa.Table.from_pylist(list(self.rows.values()), schema=arrow_schema())
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

    def planned_before(self, sweep_id: str) -> dict | None:
        """What an earlier call wrote into ``sweeps/<sweep_id>.json`` (None: nothing, or unreadable)."""
        from workbench.store.runs import read_small_file

        path = None if self.out is None else self.out / SWEEPS_DIR / f"{sweep_id}.json"
        if path is None or not os.path.lexists(path):
            return None
        try:
            record = json.loads(read_small_file(path))  # a regular file under the size cap only
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            return None
        return record if isinstance(record, dict) else None
