"""Damaged run folders: load_run raises only RunLoadError, the index leaves them out with a warning,
saves clean up after dead writers, and folders follow the umask."""

import copy
import errno
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import time
import warnings
import zlib

import numpy as np
import pandas as pd
import pytest

from workbench import RecordingPolicy, RunLoadError, generate, load_run, save_run
from workbench.store import index as index_module
from workbench.store import runs as store
from workbench.store.index import COLUMNS, build_index, load_index


@pytest.fixture(scope="module")
def run(tiny_pipe):
    return generate(
        tiny_pipe,
        "a red circle",
        negative_prompt="blue",
        seed=4,
        steps=2,
        policy=RecordingPolicy(negative=True),
        progress=False,
    )


@pytest.fixture(scope="module")
def saved(run, tmp_path_factory):
    return save_run(run, tmp_path_factory.mktemp("good") / "r")


@pytest.fixture(scope="module")
def base_meta(saved):
    return json.loads((saved / "run.json").read_text())


def _copy(saved, folder, meta=None, text=None):
    shutil.copytree(saved, folder)
    if text is None and meta is not None:
        text = json.dumps(meta)
    if text is not None:
        (folder / "run.json").write_text(text)
    return folder


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _edit(meta, path, value=None, delete=False):
    meta = copy.deepcopy(meta)
    node = meta
    for key in path[:-1]:
        node = node[key]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return meta


DAMAGE = {
    "empty list": "[]",
    "null": "null",
    "unreadable": '{"schema": 1, "config": ',
    "not utf-8": b"\xff\xfe{".decode("latin-1"),
    "string schema": ("schema", "1"),
    "bool schema": ("schema", True),
    "no tokens": ("tokens", None, True),
    "no complete": ("complete", None, True),
    "no shapes": (("attention", "shapes"), None, True),
    "string complete": ("complete", "yes"),
    "tokens a string": ("tokens", "a red circle"),
    "token row garbage": (("tokens", 1), [1, 2]),
    "token id a string": (("tokens", 1, "token_id"), "34"),
    "seed a string": (("config", "seed"), "4"),
    "steps a float": (("config", "steps"), 2.5),
    "prompt a list": (("config", "prompt"), ["a"]),
    "config a list": ("config", []),
    "device a number": (("config", "device"), 0),
    "model source a list": (("config", "model", "source"), ["x"]),
    "policy heads": (("config", "policy", "heads"), 3),
    "policy unknown key": (("config", "policy", "nope"), 1),
    "layers a string": (("attention", "layers"), "abc"),
    "steps one short": (("attention", "steps"), [0]),
    "shape of three": (("attention", "shapes"), {}),
    "hashes a list": ("hashes", []),
    "hash a number": (("hashes", "tensors_file"), 5),
    "huge width": (("config", "width"), 10**30),
    "newer schema": ("schema", 99),
}


def _damaged_text(base, how):
    if isinstance(how, str):
        return how
    path, value, *delete = how
    path = path if isinstance(path, tuple) else (path,)
    return json.dumps(_edit(base, path, value, delete=bool(delete)))


@pytest.mark.parametrize("name", sorted(DAMAGE))
def test_damaged_run_json_raises_run_load_error(saved, base_meta, tmp_path, name):
    folder = _copy(saved, tmp_path / "r", text=_damaged_text(base_meta, DAMAGE[name]))
    with pytest.raises(RunLoadError, match="damaged|newer workbench|does not fit|lacks"):
        load_run(folder)


def test_index_skips_damaged_runs_with_one_warning_naming_them(saved, base_meta, tmp_path):
    root = tmp_path / "runs"
    _copy(saved, root / "good")
    for i, name in enumerate(sorted(DAMAGE)):
        _copy(saved, root / f"bad{i:02d}", text=_damaged_text(base_meta, DAMAGE[name]))
    with pytest.warns(UserWarning, match="leaves out") as record:
        df = load_index(root).set_index("path")
    # a run.json that reads well but does not fit its tensors is listed, as not intact
    misfit = f"bad{sorted(DAMAGE).index('steps one short'):02d}"
    assert df.intact.to_dict() == {"good": True, misfit: False}
    assert df.complete.to_dict() == {"good": True, misfit: False}
    message = str(record[0].message)
    left_out = [f"bad{i:02d}" for i in range(len(DAMAGE)) if f"bad{i:02d}" != misfit]
    assert all(str(root / name / "run.json") in message for name in left_out)
    assert f"{len(left_out)} damaged run folder(s)" in message


def test_corrupted_tensors_are_listed_as_not_intact(saved, tmp_path):
    root = tmp_path / "runs"
    for name in ("a", "b", "c"):
        _copy(saved, root / name)
    data = bytearray((root / "b" / "tensors.safetensors").read_bytes())
    data[-10] ^= 0xFF  # same size: only the checksum can tell
    (root / "b" / "tensors.safetensors").write_bytes(bytes(data))
    (root / "c" / "image.png").unlink()  # a finished run without its image
    df = build_index(root).set_index("path")
    assert list(df.reset_index().columns) == COLUMNS
    assert df.intact.to_dict() == {"a": True, "b": False, "c": False}
    assert df.complete.to_dict() == {"a": True, "b": False, "c": False}


def test_a_refresh_verifies_only_changed_folders(saved, tmp_path, monkeypatch):
    root = tmp_path / "runs"
    for name in ("a", "b", "c"):
        _copy(saved, root / name)
    load_index(root)
    calls = []
    real = index_module.verify_files
    monkeypatch.setattr(index_module, "verify_files", lambda f, m: calls.append(f.name) or real(f, m))
    assert load_index(root).intact.all() and calls == []  # verdicts reused for unchanged files
    data = bytearray((root / "b" / "tensors.safetensors").read_bytes())
    data[-10] ^= 0xFF
    (root / "b" / "tensors.safetensors").write_bytes(bytes(data))
    _replace_image(root / "c")
    df = load_index(root).set_index("path")
    assert sorted(calls) == ["b", "c"] and df.intact.to_dict() == {"a": True, "b": False, "c": False}


def test_index_file_is_replaced_atomically(saved, tmp_path, monkeypatch):
    root = tmp_path / "runs"
    _copy(saved, root / "a")
    before = load_index(root)
    _copy(saved, root / "b")

    def half_written(self, path, **kwargs):
        with open(path, "wb") as f:
            f.write(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", half_written)
    with pytest.raises(OSError, match="disk full"):
        load_index(root)
    monkeypatch.undo()
    pd.testing.assert_frame_equal(before, load_index(root, refresh=False))  # the old index, whole
    assert sorted(p.name for p in root.iterdir()) == ["a", "b", "index.parquet"]


def test_index_tolerates_an_unreadable_index_file(saved, tmp_path):
    root = tmp_path / "runs"
    _copy(saved, root / "a")
    (root / "index.parquet").write_bytes(b"not parquet")
    assert load_index(root, refresh=False).path.tolist() == ["a"]


def test_run_folders_and_files_follow_the_umask(run, tmp_path):
    old = os.umask(0o027)
    try:
        folder = save_run(run, tmp_path / "r")
        index = index_module.save_index(tmp_path)
    finally:
        os.umask(old)
    assert folder.stat().st_mode & 0o777 == 0o750
    assert {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir()} == {
        "run.json": 0o640,
        "tensors.safetensors": 0o640,
        "image.png": 0o640,
    }
    assert index.stat().st_mode & 0o777 == 0o640


def test_a_save_cleans_leftovers_of_dead_saves_only(run, tmp_path):
    host = store._HOST
    dead, live = _dead_pid(), os.getppid()
    leftovers = {
        "dead tmp": f".x.{host}-{dead}-0000aaaa.tmp",
        "dead old, its run present": f".r.{host}-{dead}-0000bbbb.old",
        "live tmp": f".y.{host}-{live}-0000cccc.tmp",
        "other host tmp": f".z.ffffff-{dead}-0000dddd.tmp",
        "stale other host": f".w.ffffff-{dead}-0000eeee.tmp",
    }
    for name in leftovers.values():
        (tmp_path / name).mkdir()
        (tmp_path / name / "tensors.safetensors").write_bytes(b"partial")
    (tmp_path / f".index.parquet.{host}-{dead}-0000ffff.tmp").write_bytes(b"half")
    hours_ago = time.time() - 2 * store.STALE_AFTER_S
    os.utime(tmp_path / leftovers["stale other host"], (hours_ago, hours_ago))
    (tmp_path / "r").mkdir()
    save_run(run, tmp_path / "r", overwrite=True)
    kept = sorted(p.name for p in tmp_path.iterdir())
    assert kept == sorted(["r", leftovers["live tmp"], leftovers["other host tmp"]])


def test_an_overwrite_killed_between_its_renames_is_recovered(run, saved, tmp_path):
    target = _copy(saved, tmp_path / "r")
    aside = store.side_path(target, "old", f"{store._HOST}-{_dead_pid()}-0000abcd")
    os.replace(target, aside)  # the state a writer leaves when killed between its two renames
    assert not target.exists()
    loaded = load_run(target)  # read from the copy set aside
    assert loaded.prompt == run.prompt and loaded.complete
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert build_index(tmp_path).path.tolist() == ["r"]
    save_run(run, tmp_path / "other")  # any save into the folder puts the run back
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other", "r"]
    assert load_run(target).prompt == run.prompt
    with pytest.raises(FileExistsError):
        save_run(run, target)


def test_a_failed_second_rename_puts_the_old_run_back(run, saved, tmp_path, monkeypatch):
    target = _copy(saved, tmp_path / "r")
    real = os.replace
    calls = []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError("no")
        return real(src, dst)

    monkeypatch.setattr(store.os, "replace", replace)
    with pytest.raises(OSError, match="no"):
        save_run(run, target, overwrite=True)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"] and load_run(target).complete


# ------------------------------------------------------------------ fuzzing run.json

GARBAGE = [[], None, "", "x", 0, -1, 1.5, True, {}, [[[]]], {"a": [1, {"b": None}]}, 10**30, float("nan")]


def _paths(node, prefix=()):
    """Every (path) to a value inside a parsed JSON document."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, value in items:
        yield (*prefix, key)
        yield from _paths(value, (*prefix, key))


def _mutate(meta, rng: random.Random):
    """A parsed run.json with one random damage: a key deleted, a value retyped or replaced."""
    paths = list(_paths(meta))
    path = rng.choice(paths)
    parent = meta
    for key in path[:-1]:
        parent = parent[key]
    value = parent[path[-1]]
    op = rng.choice(["delete", "garbage", "garbage", "retype"])
    if op == "delete":
        del parent[path[-1]]
    elif op == "garbage":
        parent[path[-1]] = copy.deepcopy(rng.choice(GARBAGE))
    elif isinstance(value, bool):
        parent[path[-1]] = int(value)
    elif isinstance(value, (int, float)):
        parent[path[-1]] = str(value)
    elif isinstance(value, str):
        parent[path[-1]] = [value] if rng.random() < 0.5 else (int(value) if value.isdigit() else None)
    elif isinstance(value, list):
        parent[path[-1]] = {str(i): v for i, v in enumerate(value)}
    elif isinstance(value, dict):
        parent[path[-1]] = list(value.values())
    return meta


def _fuzz_cases(base, n, seed):
    rng = random.Random(seed)
    for _ in range(n):
        meta = copy.deepcopy(base)
        for _ in range(rng.choice([1, 1, 2, 3])):
            meta = _mutate(meta, rng) if isinstance(meta, dict) and meta else meta
        text = json.dumps(meta)
        roll = rng.random()
        if roll < 0.1:
            text = text[: rng.randrange(len(text))]  # truncated
        elif roll < 0.15:
            text = json.dumps(copy.deepcopy(rng.choice(GARBAGE)))  # the whole document replaced
        yield text


def test_fuzzed_run_json_loads_or_raises_run_load_error(saved, base_meta, tmp_path):
    folder = _copy(saved, tmp_path / "r")
    outcomes = {"loaded": 0, "refused": 0}
    for text in _fuzz_cases(base_meta, 400, seed=11):
        (folder / "run.json").write_text(text)
        try:
            loaded = load_run(folder)
        except RunLoadError:
            outcomes["refused"] += 1
        else:
            outcomes["loaded"] += 1
            repr(loaded)  # a loaded run is usable
            assert set(loaded.tokens.columns) >= {"position", "token_id", "kind", "word_index"}
    assert outcomes["refused"] > 200 and outcomes["loaded"] > 5  # the damage was varied


def test_fuzzed_run_json_never_breaks_the_index(saved, base_meta, tmp_path):
    cases = list(_fuzz_cases(base_meta, 200, seed=12))
    for batch in range(0, len(cases), 50):
        root = tmp_path / f"batch{batch}"
        for i, text in enumerate(cases[batch : batch + 50]):
            _copy(saved, root / f"r{i:02d}", text=text)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            df = load_index(root)
        said = " ".join(str(w.message) for w in caught)
        for i in range(len(cases[batch : batch + 50])):  # each folder is listed or named as left out
            name = f"r{i:02d}"
            assert (name in set(df.path)) != (str(root / name / "run.json") in said), name


# ------------------------------------------------------------------ the index checks what load_run checks


def _replace_image(folder) -> None:
    """A different image of the same size and mode in place of the run's (one bit of one pixel)."""
    from PIL import Image

    with Image.open(folder / "image.png") as im:
        pixels = np.asarray(im).copy()
    pixels[0, 0] ^= 1
    Image.fromarray(pixels).save(folder / "image.png")


def _png_bomb(path, side: int = 100_000) -> None:
    """A valid-looking PNG that declares ``side``² pixels in a few dozen bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\\x89PNG\\r\\n\\x1a\\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\\0" * 64))
        + chunk(b"IEND", b"")
    )


def _retensor(folder, change) -> None:
    """``change`` the tensors and record the new file's checksum in run.json (a careful tamperer)."""
    from safetensors.torch import load_file, save_file

    save_file(change(load_file(folder / "tensors.safetensors")), folder / "tensors.safetensors")
    meta = json.loads((folder / "run.json").read_text())
    meta["hashes"]["tensors_file"] = store._sha256(folder / "tensors.safetensors")
    (folder / "run.json").write_text(json.dumps(meta))


FILE_DAMAGE = {
    "intact": lambda f: None,
    "png bomb": lambda f: _png_bomb(f / "image.png"),
    "replaced image": _replace_image,
    "image removed": lambda f: (f / "image.png").unlink(),
    "image hash edited": lambda f: (f / "run.json").write_text(
        (f / "run.json")
        .read_text()
        .replace(json.loads((f / "run.json").read_text())["hashes"]["image"], "0" * 64)
    ),
    "latents cropped": lambda f: _retensor(
        f, lambda t: {**t, "latents": t["latents"][:, :, :2].contiguous()}
    ),
    "flipped byte": lambda f: (f / "tensors.safetensors").write_bytes(
        (f / "tensors.safetensors").read_bytes()[:-10] + b"\\0" * 10
    ),
    "tensors a folder": lambda f: ((f / "tensors.safetensors").unlink(), (f / "tensors.safetensors").mkdir()),
    "attention altered": lambda f: _retensor(
        f, lambda t: {k: v * 0.5 if k.startswith("attention.cond.") else v for k, v in t.items()}
    ),
}


def test_the_index_lists_intact_exactly_what_load_run_loads(saved, tmp_path):
    root = tmp_path / "runs"
    for name, damage in FILE_DAMAGE.items():
        damage(_copy(saved, root / name.replace(" ", "-")))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # file damage is a row marked not intact, never a skipped folder
        df = load_index(root).set_index("path")
    loads = {}
    for name in df.index:
        try:
            load_run(root / name)
            loads[name] = True
        except RunLoadError:
            loads[name] = False
    assert df.intact.to_dict() == loads
    assert loads == {name.replace(" ", "-"): name == "intact" for name in FILE_DAMAGE}


def test_a_png_bomb_is_refused_by_load_run_and_the_index(saved, tmp_path):
    folder = _copy(saved, tmp_path / "runs" / "bomb")
    _png_bomb(folder / "image.png")
    with pytest.raises(RunLoadError, match="image.png cannot be read"):
        load_run(folder)
    df = build_index(tmp_path / "runs")
    assert df.intact.tolist() == [False] and df.complete.tolist() == [False]


def test_fuzzed_run_json_is_intact_in_the_index_only_where_it_loads(saved, base_meta, tmp_path):
    root = tmp_path / "runs"
    for i, text in enumerate(_fuzz_cases(base_meta, 60, seed=13)):
        _copy(saved, root / f"r{i:02d}", text=text)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        df = load_index(root)
    for path, intact in zip(df.path, df.intact):
        try:
            load_run(root / path)
            loaded = True
        except RunLoadError:
            loaded = False
        assert intact == loaded, path


# ------------------------------------------------------------------ folders the index cannot look into


def _refuse_listing(monkeypatch, folder) -> None:
    """Make listing ``folder`` fail with EACCES, as it does for a user who is not root when the folder is
    ``chmod 000`` (root lists through permissions, so the test simulates it)."""
    real = os.scandir

    def scandir(path="."):
        if os.fspath(path) == os.fspath(folder):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)


def test_the_index_names_a_folder_it_cannot_read(saved, tmp_path, monkeypatch):
    root = tmp_path / "runs"
    _copy(saved, root / "good")
    _copy(saved, root / "locked" / "inner")
    _refuse_listing(monkeypatch, root / "locked")
    with pytest.warns(UserWarning) as record:
        df = build_index(root)
    assert df.path.tolist() == ["good"]
    assert [str(w.message) for w in record] == [
        f"the index cannot look into 1 folder(s): {root / 'locked'} (Permission denied)"
    ]


def test_the_index_command_warns_in_one_line(saved, tmp_path, monkeypatch, capsys):
    from workbench.cli import main

    root = tmp_path / "runs"
    _copy(saved, root / "good")
    (root / "locked").mkdir()
    _refuse_listing(monkeypatch, root / "locked")
    assert main(["index", str(root)]) == 0
    captured = capsys.readouterr()
    assert "(1 runs)" in captured.out
    assert captured.err == (
        f"workbench index: warning: the index cannot look into 1 folder(s): {root / 'locked'} (Permission denied)\n"
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root lists folders through their permissions")
def test_the_index_names_a_chmod_000_folder(saved, tmp_path):
    root = tmp_path / "runs"
    _copy(saved, root / "locked" / "inner")
    (root / "locked").chmod(0)
    try:
        with pytest.warns(UserWarning, match="cannot look into 1 folder"):
            build_index(root)
    finally:
        (root / "locked").chmod(0o755)


# ------------------------------------------------------------------ JSON files that are not small regular files

OVERSIZED_JSON = """
import json, os, resource, sys, warnings
from pathlib import Path

from workbench.store.index import build_index
from workbench.store.recipe import RecipeError, RerunRecipe
from workbench.store.runs import RunLoadError, load_run
from workbench.sweeps.spec import SpecError, load_spec

def vm_bytes():
    for line in open("/proc/self/status"):
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
cap = vm_bytes() + 1024**3  # everything imported; one more GB, far less than the 3 GB file
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
root = Path(sys.argv[1])
for name in ("zero", "big", "fifo"):
    try:
        load_run(root / name)
        print(name, "LOADED")
    except RunLoadError as err:
        print(name, "|", err)
for kind, load in (("recipe", RerunRecipe.load), ("spec", load_spec)):
    try:
        load(root / "zero.json")
    except (RecipeError, SpecError) as err:
        print(kind, "|", err)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    df = build_index(root)
print("index", sorted(df.path), len(caught), str(caught[0].message).count("cannot be read"))
"""


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs and /dev/zero")
def test_json_files_that_are_not_small_regular_files_are_refused_unread(saved, tmp_path):
    """A run.json linked to /dev/zero, grown to 3 GB or replaced by a FIFO is refused naming the file,
    before a byte is read (under a memory cap: reading one would fail the cap, or hang on the FIFO); the
    index leaves such folders out with its warning; re-run recipes and sweep specs are read the same way."""
    root = tmp_path / "runs"
    _copy(saved, root / "intact")
    for name in ("zero", "big", "fifo"):
        (_copy(saved, root / name) / "run.json").unlink()
    (root / "zero" / "run.json").symlink_to("/dev/zero")
    with open(root / "big" / "run.json", "wb") as f:
        f.truncate(3 * 1024**3)  # sparse: no disk used
    os.mkfifo(root / "fifo" / "run.json")
    (root / "zero.json").symlink_to("/dev/zero")
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.run(
        [sys.executable, "-c", OVERSIZED_JSON, str(root)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines() == [
        f"zero | {root / 'zero' / 'run.json'} cannot be read (not a regular file)",
        f"big | {root / 'big' / 'run.json'} cannot be read (3,221 MB, over the 64 MB such a file may hold)",
        f"fifo | {root / 'fifo' / 'run.json'} cannot be read (not a regular file)",
        f"recipe | {root / 'zero.json'} cannot be read (not a regular file)",
        f"spec | {root / 'zero.json'} cannot be read (not a regular file)",
        "index ['intact'] 1 3",
    ]
