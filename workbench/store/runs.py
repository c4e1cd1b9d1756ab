"""Saving and loading runs: a folder of JSON + safetensors + PNG, no pickle anywhere.

Layout of a run folder::

    run.json             config, token tables, store metadata, checksums
    tensors.safetensors  noise, latents, x0, timesteps, attention (one tensor per layer and branch)
    image.png            the final image (absent for an incomplete run)

Saving writes a hidden folder ``.NAME.<writer>.tmp`` beside the target and renames it into place. An
overwrite first renames the old folder aside to ``.NAME.<writer>.old``; if the writer dies between the
two renames, ``load_run`` reads the run from there and the next save into the folder puts it back.
``<writer>`` names the host and process, so leftovers of dead saves are told apart from live ones and
removed by the next save into the same parent folder.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import reprlib
import secrets
import shutil
import socket
import stat
import time
from pathlib import Path

import pandas as pd
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from workbench.core.attention import AttentionStore
from workbench.core.errors import FieldError
from workbench.core.policy import RecordingPolicy
from workbench.core.run import SCHEMA_VERSION, Run, RunConfig
from workbench.core.tokens import KINDS

RUN_JSON, TENSORS, IMAGE = "run.json", "tensors.safetensors", "image.png"


class RunLoadError(ValueError):
    """A run folder is missing, incomplete or corrupted."""


# ------------------------------------------------------------------ reading small files

MAX_JSON_BYTES = 64 * 1000**2  # run.json, re-run specs, sweep specs and plan records: a few MB at most


class FileRefusedError(OSError):
    """A file not read because it is not a regular file or is over its size limit (an ``OSError``
    whose ``strerror`` says which, so it is reported like the file system's own refusals)."""


def _check_small(st: os.stat_result, path: Path, limit: int) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise FileRefusedError(errno.EINVAL, "not a regular file", str(path))
    if st.st_size > limit:
        raise FileRefusedError(
            errno.EFBIG,
            f"{st.st_size / 1000**2:,.0f} MB, over the {limit / 1000**2:,.0f} MB such a file may hold",
            str(path),
        )


def read_small_file(path: str | os.PathLike, *, limit: int = MAX_JSON_BYTES) -> str:
    """The UTF-8 text of a small file (run.json, a spec), read only when it is a regular file of at most
    ``limit`` bytes: a link to ``/dev/zero``, a FIFO or a file grown to gigabytes is refused before a
    byte is read, with ``FileRefusedError``. The file system's own refusals raise ``OSError``."""
    path = Path(path)
    _check_small(path.stat(), path, limit)  # follows links: a link to a device is a device
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    fd = os.open(path, flags)  # O_NONBLOCK: a FIFO put in its place meanwhile does not wait for a writer
    with os.fdopen(fd, "rb") as f:
        _check_small(os.fstat(f.fileno()), path, limit)  # what was opened, should it have changed
        data = f.read(limit + 1)
    if len(data) > limit:  # it grew while it was read
        raise FileRefusedError(
            errno.EFBIG, f"over the {limit / 1000**2:,.0f} MB such a file may hold", str(path)
        )
    return data.decode("utf-8")


def cannot_read(path: str | os.PathLike, err: OSError) -> str:
    """The one wording of a file that cannot be read: ``"PATH cannot be read (Permission denied)"``."""
    return f"{err.filename or path} cannot be read ({err.strerror or err.__class__.__name__})"


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
        "head_counts": dict(store.head_counts),
    }


def _tables(table: pd.DataFrame | None) -> list[dict] | None:
    return None if table is None else table.to_dict(orient="records")


# ------------------------------------------------------------------ side folders of saves

_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]
# ".NAME.<host>-<pid>-<random>.tmp" (a save being written) or ".old" (the folder it replaces)
_SIDE = re.compile(r"\.(?P<name>.+)\.(?P<host>[0-9a-f]{6})-(?P<pid>\d+)-[0-9a-f]{8}\.(?P<kind>tmp|old)")
STALE_AFTER_S = 3600.0  # a side folder this old is a leftover whoever wrote it (pids get reused)


def _tag() -> str:
    return f"{_HOST}-{os.getpid()}-{secrets.token_hex(4)}"


def side_path(path: str | os.PathLike, kind: str = "tmp", tag: str | None = None) -> Path:
    """A hidden sibling of ``path`` for a write in progress: ``.NAME.<host>-<pid>-<random>.<kind>``.

    ``tidy`` removes it once the writing process is gone.
    """
    path = Path(path)
    return path.with_name(f".{path.name}.{tag or _tag()}.{kind}")


def _writer_alive(host: str, pid: int) -> bool:
    """Whether the save that made a side folder may still be running (unknown hosts count as alive)."""
    if host != _HOST:
        return True
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # the process exists but belongs to someone else
        return True
    return True


def _leftovers(parent: Path):
    """(side path, target, kind) for every side folder or file in ``parent`` whose write is over."""
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return
    now = time.time()
    for entry in entries:
        m = _SIDE.fullmatch(entry.name)
        if m is None:
            continue
        try:
            age = now - entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        if age > STALE_AFTER_S or not _writer_alive(m["host"], int(m["pid"])):
            yield Path(entry.path), parent / m["name"], m["kind"]


def tidy(parent: str | os.PathLike) -> None:
    """Clean up after writes into ``parent`` that died: put back a run folder that was renamed aside and
    never replaced, and remove unfinished and replaced folders and files. Writes that may still run are
    left alone."""
    for side, target, kind in _leftovers(Path(parent)):
        if kind == "old" and not os.path.lexists(target):
            try:
                os.replace(side, target)  # the writer died between its two renames: the old run returns
                continue
            except OSError:
                pass
        if side.is_dir() and not side.is_symlink():
            shutil.rmtree(side, ignore_errors=True)
        else:
            side.unlink(missing_ok=True)


def _recovered(path: Path) -> Path | None:
    """The folder renamed aside by an overwrite that never finished, when ``path`` itself is missing."""
    if os.path.lexists(path):
        return None
    try:
        candidates = [
            p
            for p in path.parent.iterdir()
            if (m := _SIDE.fullmatch(p.name)) and m["kind"] == "old" and m["name"] == path.name
        ]
    except OSError:
        return None
    dated = []
    for p in candidates:
        try:
            dated.append(((p / RUN_JSON).stat().st_mtime, p))
        except OSError:  # not a run folder (or removed meanwhile)
            continue
    return max(dated)[1] if dated else None


def set_aside_for(folder: str | os.PathLike) -> Path | None:
    """For a folder an interrupted overwrite set aside, the run folder it stands in for (when that is
    missing and this is the copy ``load_run`` reads); else None."""
    folder = Path(folder)
    m = _SIDE.fullmatch(folder.name)
    if m is None or m["kind"] != "old":
        return None
    target = folder.parent / m["name"]
    return target if _recovered(target) == folder else None


def saved_names(parent: str | os.PathLike) -> set[str]:
    """The names under which ``parent`` may hold a run (``run_folder`` of ``parent / name`` may find
    one): its entries, and the names an interrupted overwrite set aside. One listing, for callers that
    look for many runs in one folder (a sweep's thousands)."""
    try:
        entries = os.listdir(parent)
    except OSError:
        return set()
    names = set()
    for name in entries:
        m = _SIDE.fullmatch(name)
        if m is None or m["kind"] == "old":
            names.add(name if m is None else m["name"])
    return names


def run_folder(path: str | os.PathLike) -> Path | None:
    """Where the run saved at ``path`` can be read: ``path``, or the copy an interrupted overwrite left
    aside; None when there is neither."""
    path = Path(path)
    if path.is_dir():
        return path
    return _recovered(path)


# ------------------------------------------------------------------ saving


class RunExistsError(FileExistsError):
    """The folder a run was to be saved in exists, and the save did not replace it.

    Attributes:
        path: that folder.
    """

    def __init__(self, path: Path, message: str):
        super().__init__(message)
        self.path = path


BESIDE_TRIES = 100  # NAME-2 .. NAME-101: where ``save_run(..., beside=True)`` looks for a free name


def _write(run: Run, folder: Path) -> None:
    """Write ``run``'s files into the new, empty ``folder``."""
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
    save_file(tensors, folder / TENSORS, metadata={"schema": str(SCHEMA_VERSION)})
    if run.image is not None:
        run.image.save(folder / IMAGE)
    meta = {
        "schema": SCHEMA_VERSION,
        "config": run.config.to_dict(),
        "complete": run.complete,
        "failure": run.failure,
        "tokens": _tables(run.tokens),
        "negative_tokens": _tables(run.negative_tokens),
        **({"switch_tokens": _tables(run.switch_tokens)} if run.switch_tokens is not None else {}),
        "attention": _store_meta(run.attention),
        "negative_attention": _store_meta(run.negative_attention),
        "hashes": {
            "tensors_file": _sha256(folder / TENSORS),
            "image": image_hash(run.image),
            "attention": attention_hash(run.attention),
        },
    }
    (folder / RUN_JSON).write_text(json.dumps(meta, indent=1))
    # safetensors creates its file private (0o600); give it the mode the umask gave run.json
    os.chmod(folder / TENSORS, (folder / RUN_JSON).stat().st_mode & 0o777)


def _replace(tmp: Path, path: Path, tag: str) -> None:
    """Put the finished folder ``tmp`` at ``path`` in place of the run there."""
    old = side_path(path, "old", tag)
    os.replace(path, old)  # until the next rename the run lives at `old`; load_run reads it there
    try:
        os.replace(tmp, path)
    except BaseException:
        os.replace(old, path)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _place(tmp: Path, path: Path, beside: bool) -> Path:
    """Rename the finished folder ``tmp`` to ``path`` (or, with ``beside``, to the first free name
    ``NAME-2``, ``NAME-3``, ...) without replacing a folder another save put there meanwhile."""
    names = [path] + (
        [path.with_name(f"{path.name}-{k}") for k in range(2, BESIDE_TRIES + 2)] if beside else []
    )
    for target in names:
        if os.path.lexists(target):
            continue
        try:
            os.rename(tmp, target)
        except OSError as err:
            if err.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
                continue  # another save got there between the look and the rename
            raise
        return target
    if beside:
        raise RunExistsError(path, f"{path} and the {BESIDE_TRIES} names beside it exist")
    raise RunExistsError(
        path, f"{path} was saved by another writer while this run was written; pass beside=True to keep both"
    )


def save_run(run: Run, path: str | os.PathLike, *, overwrite: bool = False, beside: bool = False) -> Path:
    """Write ``run`` to the folder ``path`` atomically (a crash leaves any earlier folder loadable).

    The folder and its files get the permissions the umask gives new files. Leftovers of earlier saves
    into the same parent folder that died are cleaned up first (see ``tidy``). A save never replaces a
    folder it was not told to: when ``path`` exists (also when another save put it there while this one
    was writing), it raises ``RunExistsError`` (a ``FileExistsError``) unless ``overwrite`` or ``beside``.

    Args:
        run: the run.
        path: the folder to write.
        overwrite: replace the run at ``path``.
        beside: when ``path`` exists, save under the first free name ``NAME-2``, ``NAME-3``, ... instead
            (two saves to one folder at once both keep their run).

    Returns:
        The folder written: ``path``, or the name beside it.
    """
    if overwrite and beside:
        raise ValueError("pass overwrite=True or beside=True, not both")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tidy(path.parent)
    if os.path.lexists(path) and not (overwrite or beside):
        raise RunExistsError(path, f"{path} exists; pass overwrite=True to replace it")
    tag = _tag()
    tmp = side_path(path, "tmp", tag)
    os.mkdir(tmp)  # mode 0o777 less the umask, like any new folder
    try:
        _write(run, tmp)
        if overwrite and os.path.lexists(path):
            _replace(tmp, path, tag)
        elif overwrite:
            os.replace(tmp, path)
        else:
            path = _place(tmp, path, beside)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


# ------------------------------------------------------------------ reading and checking run.json


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_scalar(x) -> bool:
    return x is None or isinstance(x, (str, int, float, bool))


_TOKEN_TYPES = {
    "position": _is_int,
    "token_id": _is_int,
    "token": lambda x: isinstance(x, str),
    "word_index": _is_int,
    "word": lambda x: isinstance(x, str),
    "kind": lambda x: x in KINDS,
}
_CONFIG_TYPES = {  # a run config's JSON fields beside the request's, and what each must be
    "policy": dict,
    "scheduler": str,
    "scheduler_config": dict,
    "model": dict,
    "dtype": str,
    "device": str,
    "versions": dict,
    "noise": str,
    "batch": (dict, type(None)),
    "numerics": dict,
}


def _fits_int64(value) -> bool:
    """Every int anywhere in a parsed JSON value fits 64 bits (what tensors and tables can hold)."""
    if isinstance(value, dict):
        return all(_fits_int64(v) for v in value.values())
    if isinstance(value, list):
        return all(_fits_int64(v) for v in value)
    return not _is_int(value) or -(2**63) <= value < 2**63


def _check_tokens(rows, key: str) -> str | None:
    if not isinstance(rows, list) or not rows:
        return f"{key!r} must be a non-empty list of token rows"
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            return f"{key}[{i}] must be an object"
        for column, ok in _TOKEN_TYPES.items():
            if column not in row or not ok(row[column]):
                return f"{key}[{i}] has a missing or wrong {column!r}"
        if not all(_is_scalar(v) for v in row.values()):
            return f"{key}[{i}] holds a nested value"
    return None


def _check_store(store, key: str) -> str | None:
    if store is None:
        return None
    if not isinstance(store, dict):
        return f"{key!r} must be an object or null"
    steps, layers, shapes = store.get("steps"), store.get("layers"), store.get("shapes")
    if not isinstance(steps, list) or not all(_is_int(s) and s >= 0 for s in steps):
        return f"{key}.steps must be a list of step indices"
    if store.get("heads") not in ("mean", "all"):
        return f"{key}.heads must be 'mean' or 'all'"
    if not isinstance(layers, list) or not all(isinstance(n, str) for n in layers):
        return f"{key}.layers must be a list of layer names"
    if not isinstance(shapes, dict) or not set(layers) <= set(shapes):
        return f"{key}.shapes must give the grid of every layer"
    for name, shape in shapes.items():
        if not (isinstance(shape, list) and len(shape) == 2 and all(_is_int(v) and v > 0 for v in shape)):
            return f"{key}.shapes[{name!r}] must be [rows, cols]"
    counts = store.get("head_counts", {})  # absent in runs saved before head counts were kept
    if not isinstance(counts, dict) or not all(
        isinstance(n, str) and _is_int(c) and c > 0 for n, c in counts.items()
    ):
        return f"{key}.head_counts must map layer names to positive head counts"
    return None


class ConfigError(FieldError):
    """A run config's JSON form that cannot be used, with the field as data.

    Attributes:
        field: the field refused, as JSON names it from the run folder's or recipe's top:
            ``"config.seed"``, ``"config.model.source"``, ``"config.policy"``; ``"config"`` for the
            config as a whole.
        problem: what is wrong, without the field's name.
    """


def _config_problem(config) -> tuple[str, str] | None:
    """(field, problem) for the first field beside the request's in a run config's JSON form that is of
    the wrong type (fields named inside the config: ``"model.source"``)."""
    if not isinstance(config, dict):
        return "", f"must be an object, got {type(config).__name__}"
    for key, kind in _CONFIG_TYPES.items():
        if key in config and not isinstance(config[key], kind):
            return key, f"has the wrong type ({type(config[key]).__name__})"
    for key in ("source", "pipeline", "weights_sha256"):
        if not isinstance(config.get("model", {}).get(key, ""), str):
            return f"model.{key}", "must be a string"
    if not all(_is_scalar(v) for v in config.get("versions", {}).values()):
        return "versions", "must map library names to versions"
    numerics = config.get("numerics", {})
    for key, value in numerics.items():
        if key == "versions":
            if not isinstance(value, dict) or not all(_is_scalar(v) for v in value.values()):
                return "numerics.versions", "must map library names to versions"
        elif not _is_scalar(value):
            return f"numerics.{key}", "must be a number, a string or a flag"
    return None


def config_from_dict(config) -> RunConfig:
    """A ``RunConfig`` from its JSON form (run.json's or a re-run recipe's ``config``), checked field by
    field; anything of the wrong type or value raises ``ConfigError`` naming the field."""

    def refuse(field: str, problem: str) -> ConfigError:
        return ConfigError(f"config.{field}" if field else "config", problem)

    try:
        problem = _config_problem(config) if _fits_int64(config) else ("", "holds a number out of range")
    except RecursionError:
        problem = ("", "holds values nested too deeply")
    if problem is not None:
        raise refuse(*problem)
    try:
        RecordingPolicy.from_dict(config.get("policy") or {})
    except FieldError as err:  # a PolicyError: its field as data
        raise refuse(f"policy.{err.field}" if err.field else "policy", err.problem) from None
    except (TypeError, ValueError) as err:
        raise refuse("policy", str(err)) from None
    try:
        return RunConfig.from_dict(config)
    except FieldError as err:  # a request field (a RequestError)
        raise refuse(err.field, err.problem) from None
    except (TypeError, ValueError, KeyError) as err:
        raise refuse("", str(err)) from None


def _check_meta(meta) -> str | None:
    """What is wrong with a parsed run.json (schema already checked), or None."""
    if not isinstance(meta.get("complete"), bool):
        return "'complete' must be true or false"
    if not isinstance(meta.get("failure"), (str, type(None))):
        return "'failure' must be text or null"
    config = meta.get("config")
    if not isinstance(config, dict):
        return "'config' must be an object"
    problem = _config_problem(config)
    if problem is not None:
        return f"config.{problem[0]} {problem[1]}"
    for problem in (
        _check_tokens(meta.get("tokens"), "tokens"),
        None
        if meta.get("negative_tokens") is None
        else _check_tokens(meta["negative_tokens"], "negative_tokens"),
        None if meta.get("switch_tokens") is None else _check_tokens(meta["switch_tokens"], "switch_tokens"),
        _check_store(meta.get("attention"), "attention"),
        _check_store(meta.get("negative_attention"), "negative_attention"),
    ):
        if problem:
            return problem
    hashes = meta.get("hashes", {})
    if not isinstance(hashes, dict) or not all(v is None or isinstance(v, str) for v in hashes.values()):
        return "'hashes' must map names to hex digests"
    return None


def read_meta(path: str | os.PathLike) -> tuple[dict, RunConfig]:
    """A run folder's ``run.json``, checked field by field, and its ``RunConfig``.

    Reads no tensors. Anything missing, malformed or of the wrong type raises ``RunLoadError`` naming
    the file and the field.
    """
    file = Path(path) / RUN_JSON
    try:
        meta = json.loads(read_small_file(file))
    except OSError as err:  # the file system's refusal, or not a regular file of a sane size
        raise RunLoadError(cannot_read(file, err)) from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise RunLoadError(f"{file} is damaged ({err.__class__.__name__}: {err})") from None
    if not isinstance(meta, dict):
        raise RunLoadError(f"{file} is damaged (not a JSON object but {type(meta).__name__})")
    schema = meta.get("schema")
    if not _is_int(schema) or schema < 1:
        raise RunLoadError(f"{file} is damaged ('schema' must be a positive int, got {reprlib.repr(schema)})")
    if schema > SCHEMA_VERSION:
        raise RunLoadError(f"{file} was written by a newer workbench (schema {schema}); upgrade to load it")
    try:
        problem = _check_meta(meta) if _fits_int64(meta) else "a number is out of range"
    except RecursionError:
        problem = "values are nested too deeply"
    if problem is None:
        try:
            config = config_from_dict(meta["config"])
        except ConfigError as err:
            problem = str(err)
    if problem is not None:
        raise RunLoadError(f"{file} is damaged ({problem})")
    return meta, config


# ------------------------------------------------------------------ checking the files against run.json


def _latents_misfit(meta: dict, shapes: dict[str, tuple[int, ...]]) -> str | None:
    """What does not fit between the noise, latents, x0 and timesteps and the run's image size."""
    noise, latents, x0, timesteps = (tuple(shapes[k]) for k in ("noise", "latents", "x0", "timesteps"))
    if len(noise) != 3 or 0 in noise:
        return f"holds the noise as {noise}, which does not fit (channels, height, width)"
    if len(x0) != 4 or x0[1:] != noise:
        return f"holds x0 as {x0}, which does not fit the noise {noise}"
    iterations = x0[0]
    if latents != (iterations + 1, *noise):
        return f"holds the latents as {latents}, which does not fit {iterations} steps of the noise {noise}"
    if timesteps != (iterations,):
        return f"holds the timesteps as {timesteps}, which does not fit {iterations} steps"
    height, width = meta["config"].get("height"), meta["config"].get("width")
    _, h, w = noise
    if _is_int(height) and _is_int(width) and (height % h or width % w or height // h != width // w):
        return f"holds latents of {h}x{w}, which does not fit a {width}x{height} image"
    return None


def _attention_misfit(meta: dict, shapes: dict[str, tuple[int, ...]]) -> str | None:
    """What does not fit between the attention tensors, run.json's store records and the token tables."""
    iterations = shapes["x0"][0]
    for branch, key, tokens in (
        ("cond", "attention", meta["tokens"]),
        ("uncond", "negative_attention", meta.get("negative_tokens") or meta["tokens"]),
    ):
        store = meta.get(key) or {}
        steps = store.get("steps", [])
        if any(s >= iterations for s in steps):
            return f"holds {key} of step {max(steps)}, which does not fit a run of {iterations} steps"
        switched = meta.get("switch_tokens") if branch == "cond" else None
        # the positions the denoiser saw (a word cut off by the text encoder has none there)
        positions = 1 + max(row["position"] for row in tokens + (switched or []) if row.get("kind") != "cut")
        for name in store.get("layers", []):
            shape = shapes.get(f"attention.{branch}.{name}")
            if shape is None:
                return f"lacks the attention of layer {name}"
            rows, cols = store["shapes"][name]
            heads = 1 if store["heads"] == "mean" else store.get("head_counts", {}).get(name, shape[1])
            if len(shape) != 4 or shape[:3] != (len(steps), heads, rows * cols) or shape[3] < positions:
                return (
                    f"holds the attention of layer {name} as {tuple(shape)}, which does not fit "
                    f"{len(steps)} steps, {heads} head(s) on a {rows}x{cols} grid and {positions} tokens"
                )
    return None


def tensors_misfit(meta: dict, shapes: dict[str, tuple[int, ...]]) -> str | None:
    """What does not fit between a checked run.json and the tensor shapes of its tensors file (the noise,
    latents, x0 and timesteps with each other and the image size; the attention with the steps, grids,
    heads and token tables run.json records), or None."""
    shapes = {k: tuple(v) for k, v in shapes.items()}
    for key in ("noise", "latents", "x0", "timesteps"):
        if key not in shapes:
            return f"lacks the tensor {key!r}"
    return _latents_misfit(meta, shapes) or _attention_misfit(meta, shapes)


_NO_RECORD = object()  # run.json of a run saved before image hashes were kept


def _checked_image(folder: Path, meta: dict) -> Image.Image | None:
    """The run's image, when its file is there and matches what run.json records; else RunLoadError."""
    file = folder / IMAGE
    if not file.is_file():
        if meta["complete"]:
            raise RunLoadError(f"{file} is missing, and the run is complete")
        return None
    width, height = meta["config"].get("width"), meta["config"].get("height")
    sized = _is_int(width) and _is_int(height)
    try:
        with Image.open(file) as im:  # reads the header: the size is known before any pixel is decoded
            found = im.size
            image = im.copy() if not sized or found == (width, height) else None
    except (OSError, ValueError, Image.DecompressionBombError) as err:  # PIL's errors for damaged files
        raise RunLoadError(f"{file} cannot be read ({err})") from None
    if image is None:
        raise RunLoadError(f"{file} is {found[0]}x{found[1]}, which does not fit the run's {width}x{height}")
    recorded = meta.get("hashes", {}).get("image", _NO_RECORD)
    if recorded is not _NO_RECORD and image_hash(image) != recorded:
        raise RunLoadError(f"{file} does not match the image hash in run.json (replaced or altered)")
    return image


def verify_files(folder: str | os.PathLike, meta: dict, *, checksum: bool = True) -> Image.Image | None:
    """Check a run folder's files against its checked run.json (from ``read_meta``): what ``load_run``
    and the index both rely on.

    The tensors file is there, matches its recorded SHA-256 (when ``checksum``), and its tensor shapes
    (read from its header) fit run.json and each other (``tensors_misfit``); its attention hashes to
    the recorded attention hash; the image is there when the run is complete, has the run's size and
    matches its recorded pixel hash.

    Returns:
        The image (None for a run without one). Anything else raises ``RunLoadError`` naming the file.
    """
    folder = Path(folder)
    image = _verify_files(folder, meta, checksum)
    file = folder / TENSORS
    _check_attention(file, meta, _read_attention(file, meta))
    return image


def _verify_files(folder: Path, meta: dict, checksum: bool) -> Image.Image | None:
    """``verify_files`` less the attention hash (``load_run`` checks it on the tensors it loads)."""
    file = folder / TENSORS
    if not file.is_file():
        raise RunLoadError(f"{folder} is not a complete run folder: {TENSORS} is missing")
    expected = meta.get("hashes", {}).get("tensors_file")
    if checksum and expected is not None and expected != _sha256(file):
        raise RunLoadError(f"{file} is corrupted or truncated: its checksum does not match run.json")
    shapes = tensor_shapes(folder)
    if shapes is None:
        raise RunLoadError(f"{file} cannot be read (its header is damaged)")
    misfit = tensors_misfit(meta, shapes)
    if misfit:
        raise RunLoadError(f"{file} {misfit}")
    return _checked_image(folder, meta)


def _read_attention(file: Path, meta: dict) -> dict[str, torch.Tensor]:
    """The conditional attention tensors of a tensors file whose shapes were checked (nothing else read)."""
    from safetensors import safe_open

    names = [f"attention.cond.{n}" for n in (meta.get("attention") or {}).get("layers", [])]
    try:
        with safe_open(file, framework="pt") as f:
            return {name: f.get_tensor(name) for name in names}
    except OSError:
        raise  # the file system's refusal: _reading names it
    except Exception as err:  # safetensors raises its own error types for damaged files
        raise RunLoadError(f"{file} cannot be read ({err.__class__.__name__}: {err})") from None


def _check_attention(file: Path, meta: dict, tensors: dict[str, torch.Tensor]) -> AttentionStore:
    """The run's attention store, built from ``tensors``; ``RunLoadError`` when it does not hash to the
    attention hash run.json records (a tensor altered, and the tensors file's checksum rewritten)."""
    store = _store(meta.get("attention"), tensors, "cond") or AttentionStore()
    recorded = meta.get("hashes", {}).get("attention")
    if recorded is not None and attention_hash(store) != recorded:
        raise RunLoadError(f"{file} does not match the attention hash in run.json (replaced or altered)")
    return store


@contextlib.contextmanager
def _reading(path: Path):
    """Turn what the file system refuses (permissions, a folder where a file belongs) into RunLoadError."""
    try:
        yield
    except OSError as err:
        raise RunLoadError(cannot_read(path, err)) from None


def verify_run(path: str | os.PathLike, *, checksum: bool = True) -> RunConfig:
    """Check a run folder as ``load_run`` does, without loading its tensors; returns its config.

    A damaged, incomplete or unreadable folder raises ``RunLoadError``.
    """
    path = Path(path)
    with _reading(path):
        folder = _existing_run_folder(path)
        meta, config = read_meta(folder)
        verify_files(folder, meta, checksum=checksum)
    return config


# ------------------------------------------------------------------ loading


def _store(meta: dict | None, tensors: dict[str, torch.Tensor], branch: str) -> AttentionStore | None:
    if meta is None:
        return None
    probs = {name: tensors[f"attention.{branch}.{name}"] for name in meta["layers"]}
    shapes = {n: tuple(s) for n, s in meta["shapes"].items()}
    counts = {n: int(c) for n, c in meta.get("head_counts", {}).items()}
    return AttentionStore(
        probs=probs, steps=list(meta["steps"]), shapes=shapes, heads=meta["heads"], head_counts=counts
    )


def _existing_run_folder(path: Path) -> Path:
    folder = run_folder(path)
    if folder is None:
        raise RunLoadError(f"{path} is not a run folder")
    if not os.path.lexists(folder / RUN_JSON):  # anything else there is refused when it is read
        raise RunLoadError(f"{path} is not a complete run folder: {RUN_JSON} is missing")
    return folder


def _load_tensors(file: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(file)
    except OSError:
        raise  # the file system's refusal: _reading names it
    except Exception as err:  # safetensors raises its own error types for damaged files
        raise RunLoadError(f"{file} cannot be read ({err.__class__.__name__}: {err})") from None


def load_run(path: str | os.PathLike, *, verify: bool = True) -> Run:
    """Load a run folder written by ``save_run``; a damaged or unreadable folder raises ``RunLoadError``.

    Everything is checked before it is used (``verify_files``): run.json field by field, the tensor
    shapes against run.json and each other, the image and the attention against their recorded hashes. When ``path`` is
    missing because an overwrite was interrupted between its two renames, the run is read from the
    folder that overwrite set aside.

    Args:
        path: the run folder.
        verify: check the tensors file against its recorded SHA-256 (catches corruption anywhere).
    """
    path = Path(path)
    with _reading(path):
        folder = _existing_run_folder(path)
        meta, config = read_meta(folder)
        image = _verify_files(folder, meta, verify)
        tensors = _load_tensors(folder / TENSORS)
    misfit = tensors_misfit(meta, {k: tuple(t.shape) for k, t in tensors.items()})
    if misfit:  # the header was read again since it was checked
        raise RunLoadError(f"{folder / TENSORS} {misfit}")
    attention = _check_attention(folder / TENSORS, meta, tensors)  # one hash of tensors already read
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
        attention=attention,
        negative_attention=_store(meta.get("negative_attention"), tensors, "uncond"),
        complete=meta["complete"],
        failure=meta.get("failure"),
        switch_tokens=None if meta.get("switch_tokens") is None else pd.DataFrame(meta["switch_tokens"]),
    )


def tensor_shapes(path: str | os.PathLike) -> dict[str, tuple[int, ...]] | None:
    """The shape of every tensor in a run folder's tensors file, from its header alone (None when the
    header is damaged; the file system's refusals raise ``OSError``)."""
    with open(Path(path) / TENSORS, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        header = f.read(size) if 0 < size <= 100 * 1024**2 else b""
    try:
        shapes = {k: tuple(v["shape"]) for k, v in json.loads(header).items() if k != "__metadata__"}
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
        return None
    if not all(_is_int(n) and n >= 0 for shape in shapes.values() for n in shape):
        return None
    return shapes
