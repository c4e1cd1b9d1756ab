"""Runs save and load exactly, without pickle; damaged folders fail with a clear error."""

import json
import os

import numpy as np
import pytest
import torch

from workbench import RecordingPolicy, RunLoadError, generate, load_run, save_run
from workbench.store import runs as store


@pytest.fixture(scope="module")
def run(tiny_pipe):
    policy = RecordingPolicy(negative=True, heads="all")
    return generate(
        tiny_pipe,
        "a yellow triangle, below",
        negative_prompt="blue",
        seed=9,
        steps=3,
        guidance_scale=3.0,
        policy=policy,
        progress=False,
    )


def assert_runs_equal(a, b):
    assert vars(a.config) == vars(b.config)
    assert a.complete == b.complete
    assert a.tokens.equals(b.tokens) and a.negative_tokens.equals(b.negative_tokens)
    for name in ("timesteps", "noise", "latents", "x0"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and torch.equal(x, y), name
    for sa, sb in ((a.attention, b.attention), (a.negative_attention, b.negative_attention)):
        assert sa.steps == sb.steps and sa.shapes == sb.shapes and sa.heads == sb.heads
        assert list(sa.probs) == list(sb.probs)
        for k in sa.probs:
            assert sa.probs[k].dtype == sb.probs[k].dtype and torch.equal(sa.probs[k], sb.probs[k])
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))


def test_round_trip(run, tmp_path):
    path = save_run(run, tmp_path / "r")
    assert sorted(p.name for p in path.iterdir()) == ["image.png", "run.json", "tensors.safetensors"]
    assert_runs_equal(run, load_run(path))


def test_refuses_to_overwrite_and_overwrites_atomically(run, tmp_path, monkeypatch):
    path = save_run(run, tmp_path / "r")
    with pytest.raises(FileExistsError):
        save_run(run, path)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(store, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        save_run(run, path, overwrite=True)
    assert_runs_equal(run, load_run(path))  # the earlier save is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]  # no temp folders left behind


def test_incomplete_run_round_trip(tiny_pipe, tmp_path):
    def ctrl_c(step, x0, latent):
        if step == 1:
            raise KeyboardInterrupt

    with pytest.warns(UserWarning):
        partial = generate(tiny_pipe, "a red circle", seed=1, steps=4, progress=False, on_step=ctrl_c)
    loaded = load_run(save_run(partial, tmp_path / "p"))
    assert not loaded.complete and loaded.image is None and loaded.steps_done == 2


def test_truncated_tensors(run, tmp_path):
    path = save_run(run, tmp_path / "r")
    data = (path / "tensors.safetensors").read_bytes()
    (path / "tensors.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(RunLoadError, match="corrupted or truncated"):
        load_run(path)
    with pytest.raises(RunLoadError, match="cannot be read"):
        load_run(path, verify=False)


def test_flipped_byte(run, tmp_path):
    path = save_run(run, tmp_path / "r")
    data = bytearray((path / "tensors.safetensors").read_bytes())
    data[-10] ^= 0xFF
    (path / "tensors.safetensors").write_bytes(bytes(data))
    with pytest.raises(RunLoadError, match="checksum"):
        load_run(path)


def test_damaged_or_missing_json(run, tmp_path):
    path = save_run(run, tmp_path / "r")
    (path / "run.json").write_text('{"schema": 1, "config": ')
    with pytest.raises(RunLoadError, match="run.json is damaged"):
        load_run(path)
    (path / "run.json").unlink()
    with pytest.raises(RunLoadError, match="run.json is missing"):
        load_run(path)
    with pytest.raises(RunLoadError, match="not a run folder"):
        load_run(tmp_path / "nothing")


def test_no_pickle_on_disk(run, tmp_path):
    path = save_run(run, tmp_path / "r")
    meta = json.loads((path / "run.json").read_text())
    assert meta["schema"] == 1 and meta["config"]["prompt"] == "a yellow triangle, below"
    for f in path.iterdir():
        assert b"\x80\x04\x95" not in f.read_bytes()[:64]  # no pickle protocol header


# ------------------------------------------------------------------ what load_run checks


def _rewrite_tensors(folder, change) -> None:
    """Replace the tensors file with ``change(tensors)`` and record its new checksum in run.json, as a
    careful tamperer would (the checksum alone no longer tells)."""
    from safetensors.torch import load_file, save_file

    tensors = change(load_file(folder / "tensors.safetensors"))
    save_file({k: v.contiguous() for k, v in tensors.items()}, folder / "tensors.safetensors")
    meta = json.loads((folder / "run.json").read_text())
    meta["hashes"]["tensors_file"] = store._sha256(folder / "tensors.safetensors")
    (folder / "run.json").write_text(json.dumps(meta))


def _first_layer(t: dict) -> str:
    return next(k for k in t if k.startswith("attention.cond."))


SHAPE_TAMPERING = {
    "latents cropped": (lambda t: {**t, "latents": t["latents"][:, :, :4]}, "latents"),
    "noise flattened": (lambda t: {**t, "noise": t["noise"].reshape(-1)}, "noise"),
    "x0 one step short": (lambda t: {**t, "x0": t["x0"][:-1]}, "latents"),
    "timesteps one too many": (
        lambda t: {**t, "timesteps": torch.cat([t["timesteps"], t["timesteps"][:1]])},
        "timesteps",
    ),
    "all latents cropped alike": (
        lambda t: {**t, **{k: t[k][..., :4, :] for k in ("noise", "latents", "x0")}},
        "latents of 4x8, which does not fit a 16x16 image",
    ),
    "attention without its last tokens": (
        lambda t: {**t, _first_layer(t): t[_first_layer(t)][..., :4]},
        "tokens",
    ),
}


@pytest.mark.parametrize("name", sorted(SHAPE_TAMPERING))
def test_tensor_shapes_are_checked_against_the_config_and_each_other(run, tmp_path, name):
    change, words = SHAPE_TAMPERING[name]
    path = save_run(run, tmp_path / "r")
    _rewrite_tensors(path, change)
    with pytest.raises(RunLoadError, match="does not fit") as err:
        load_run(path)
    assert words in str(err.value)


def test_a_run_with_tampered_latents_gives_the_report_command_one_line(run, tmp_path, capsys):
    from workbench.cli import main

    path = save_run(run, tmp_path / "r")
    _rewrite_tensors(path, SHAPE_TAMPERING["all latents cropped alike"][0])  # crashed in heatmaps before
    with pytest.raises(SystemExit) as exit_info:
        main(["report", str(path), "-o", str(tmp_path / "r.html")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "which does not fit a 16x16 image" in err


def test_a_replaced_image_does_not_load(run, tmp_path):
    path = save_run(run, tmp_path / "r")
    image = np.asarray(run.image).copy()
    image[0, 0] ^= 1  # one pixel, one bit: the PNG still reads well
    from PIL import Image

    Image.fromarray(image).save(path / "image.png")
    with pytest.raises(RunLoadError, match="image.png does not match the image hash in run.json"):
        load_run(path)


def test_an_image_of_another_size_is_refused_before_decoding(run, tmp_path, monkeypatch):
    from PIL import Image

    path = save_run(run, tmp_path / "r")
    Image.new("RGB", (64, 48)).save(path / "image.png")
    decoded = []
    monkeypatch.setattr(Image.Image, "copy", lambda self: decoded.append(self) or pytest.fail("decoded"))
    with pytest.raises(RunLoadError, match=r"image.png is 64x48, which does not fit the run's 16x16"):
        load_run(path)
    assert decoded == []


def test_an_altered_attention_tensor_does_not_load_nor_verify_nor_index(run, tmp_path):
    """The attention hash is recomputed wherever the image hash is checked: one attention value altered,
    and the tensors file's checksum rewritten to match, is refused by load_run, verify_run and the index."""
    from workbench.store.index import build_index

    path = save_run(run, tmp_path / "runs" / "r")
    _rewrite_tensors(path, lambda t: {**t, _first_layer(t): t[_first_layer(t)] * 0.5})
    assert store.tensor_shapes(path) == store.tensor_shapes(save_run(run, tmp_path / "intact"))
    words = "tensors.safetensors does not match the attention hash in run.json"
    with pytest.raises(RunLoadError, match=words):
        load_run(path)
    with pytest.raises(RunLoadError, match=words):
        store.verify_run(path)
    row = build_index(tmp_path / "runs").iloc[0]
    assert (row.intact, row.complete) == (False, False)
    assert load_run(tmp_path / "intact").attention.steps == run.attention.steps  # an intact run loads


def test_unreadable_files_are_worded_alike(run, tmp_path, monkeypatch):
    """run.json that cannot be read says "cannot be read (...)", as the tensors file and the image do."""
    import pathlib
    import warnings

    from workbench.store.index import build_index

    path = save_run(run, tmp_path / "runs" / "r")
    real_os_open, real_path_open = os.open, pathlib.Path.open

    def refused(file):
        return PermissionError(13, "Permission denied", str(file))

    def os_open(file, *args, **kwargs):
        if str(file).endswith("run.json"):
            raise refused(file)
        return real_os_open(file, *args, **kwargs)

    def path_open(self, *args, **kwargs):
        if self.name == "run.json":
            raise refused(self)
        return real_path_open(self, *args, **kwargs)

    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(pathlib.Path, "open", path_open)
    with pytest.raises(RunLoadError) as err:
        load_run(path)
    assert str(err.value) == f"{path / 'run.json'} cannot be read (Permission denied)"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert build_index(tmp_path / "runs").empty
    assert [str(w.message) for w in caught] == [
        f"the index leaves out 1 damaged run folder(s): {path / 'run.json'} cannot be read (Permission denied)"
    ]
    monkeypatch.undo()
    (path / "run.json").unlink()
    (path / "run.json").mkdir()  # a folder where the file belongs
    with pytest.raises(RunLoadError) as err:
        load_run(path)
    assert str(err.value) == f"{path / 'run.json'} cannot be read (not a regular file)"


def test_a_complete_run_without_its_image_does_not_load(run, tmp_path):
    path = save_run(run, tmp_path / "r")
    (path / "image.png").unlink()
    with pytest.raises(RunLoadError, match="image.png is missing, and the run is complete"):
        load_run(path)


# ------------------------------------------------------------------ folders and files the system refuses


def _refuse_stat_inside(monkeypatch, folder):
    """Make every ``stat`` of a path inside ``folder`` fail with EACCES, as it does for a user who is not
    root when the folder is ``chmod 000`` (root reads through permissions, so tests simulate it)."""
    import errno
    import pathlib

    real = pathlib.Path.stat

    def stat(self, *args, **kwargs):
        if self.parent == folder:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "stat", stat)


def test_an_unreadable_run_folder_is_a_run_load_error(run, tmp_path, monkeypatch):
    path = save_run(run, tmp_path / "r")
    _refuse_stat_inside(monkeypatch, path)
    with pytest.raises(RunLoadError, match=r"run.json cannot be read \(Permission denied\)"):
        load_run(path)


def test_an_unreadable_tensors_file_is_a_run_load_error(run, tmp_path, monkeypatch):
    """``open`` of the tensors file fails with EACCES (what chmod 000 gives a user who is not root)."""
    import builtins
    import errno

    path = save_run(run, tmp_path / "r")

    def refusing_open(file, *args, **kwargs):
        if str(file).endswith("tensors.safetensors"):
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return builtins.open(file, *args, **kwargs)

    monkeypatch.setattr(store, "open", refusing_open, raising=False)  # the module's own `open` calls
    with pytest.raises(RunLoadError, match=r"tensors.safetensors cannot be read \(Permission denied\)"):
        load_run(path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads through file permissions")
def test_chmod_000_is_a_run_load_error(run, tmp_path):
    path = save_run(run, tmp_path / "r")
    (path / "tensors.safetensors").chmod(0)
    try:
        with pytest.raises(RunLoadError, match="Permission denied"):
            load_run(path)
        path.chmod(0)
        with pytest.raises(RunLoadError, match="Permission denied"):
            load_run(path)
    finally:
        path.chmod(0o755)
        (path / "tensors.safetensors").chmod(0o644)


# ------------------------------------------------------------------ two saves to one folder


def _saves_at_once(run, path, **kwargs) -> list:
    """Two threads saving ``run`` to ``path`` together: what each returned or raised."""
    import threading

    start = threading.Barrier(2)
    outcomes = [None, None]

    def save(i):
        start.wait()
        try:
            outcomes[i] = save_run(run, path, **kwargs)
        except Exception as err:  # noqa: BLE001 - the outcome is the test's to judge
            outcomes[i] = err

    threads = [threading.Thread(target=save, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


def test_two_saves_at_once_one_wins_the_other_is_refused_cleanly(run, tmp_path):
    outcomes = _saves_at_once(run, tmp_path / "r")
    refused = [o for o in outcomes if isinstance(o, Exception)]
    assert len(refused) == 1 and isinstance(refused[0], store.RunExistsError)
    assert isinstance(refused[0], FileExistsError) and refused[0].path == tmp_path / "r"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]  # nothing half-written left
    assert_runs_equal(run, load_run(tmp_path / "r"))


def test_two_saves_at_once_beside_keep_both_runs(run, tmp_path):
    outcomes = _saves_at_once(run, tmp_path / "r", beside=True)
    assert sorted(outcomes) == [tmp_path / "r", tmp_path / "r-2"]
    for folder in outcomes:
        assert_runs_equal(run, load_run(folder))
    assert save_run(run, tmp_path / "r", beside=True) == tmp_path / "r-3"


def test_a_folder_saved_meanwhile_is_never_replaced(run, tiny_pipe, tmp_path, monkeypatch):
    other = generate(tiny_pipe, "a blue square", seed=1, steps=2, progress=False)
    real = store._write
    path = tmp_path / "r"

    def other_writer_first(r, folder):
        real(r, folder)
        if not path.exists():
            monkeypatch.setattr(store, "_write", real)
            save_run(other, path)  # finishes while this save is still writing

    monkeypatch.setattr(store, "_write", other_writer_first)
    with pytest.raises(store.RunExistsError, match="was saved by another writer while this run was written"):
        save_run(run, path)
    assert load_run(path).prompt == "a blue square"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]
    monkeypatch.setattr(store, "_write", other_writer_first)
    path = tmp_path / "s"
    assert save_run(run, path, beside=True) == tmp_path / "s-2"  # the loser's run, kept
    assert load_run(path).prompt == "a blue square" and load_run(tmp_path / "s-2").prompt == run.prompt
