"""Runs save and load exactly, without pickle; damaged folders fail with a clear error."""

import json

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
