"""Sweeps on the local executor: runs and index stream into the folder, resume, failures as rows,
the disk budget, cancel, and a driver killed mid-sweep."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import workbench
from workbench import Request, generate, load_run
from workbench.analysis.seeds import seed_grid
from workbench.store.runs import attention_hash, image_hash
from workbench.sweeps import DiskBudgetError, SpecError, SweepBusyError, SweepSpec, read_index
from workbench.sweeps.folder import SweepFolder
from workbench.sweeps.plan import NumericsChangedError
from workbench.sweeps.runner import SweepEvents

PROMPTS = ["a red circle left of a blue square", "a painting of a horse"]


def spec_for(model, **changes) -> SweepSpec:
    fields = {
        "model": str(model),
        "prompts": PROMPTS,
        "seeds": [0, 1, 2],
        "steps": 3,
        "guidance_scales": [4.0],
    }
    return SweepSpec.from_dict({**fields, **changes})


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.iterdir())


def test_sweep_streams_runs_and_index_and_resumes(tiny_folder, tiny_pipe, tmp_path, capsys):
    spec = spec_for(tiny_folder)
    result = workbench.sweep(spec, out=tmp_path)
    printed = capsys.readouterr().out
    assert "disk estimate: 6 runs" in printed and "6 done, 0 failed" in printed
    index = read_index(tmp_path)
    assert list(index.columns[:4]) == ["sweep_id", "request_id", "status", "error"]
    assert len(index) == 6 and set(index.status) == {"done"} and set(index.sweep_id) == {result.sweep_id}
    assert index.request_id.is_unique and set(index.path) == {f"runs/{r}" for r in index.request_id}
    # every run folder holds the run its row names; the hashes are the run's own
    for row in index.itertuples():
        run = load_run(tmp_path / row.path)
        assert (run.prompt, run.seed) == (row.prompt, row.seed)
        assert row.image_sha256 == image_hash(run.image) and row.attention_sha256 == attention_hash(
            run.attention
        )
        thumb = np.asarray(run.image.convert("RGB").resize((16, 16), Image.BOX)).tobytes()
        assert row.thumb == thumb and list(row.words) == run.words
        assert abs(sum(row.word_mass)) > 0
    # ... and equal a run made directly, outside any sweep
    direct = generate(tiny_pipe, Request(PROMPTS[1], seed=2, steps=3, guidance_scale=4.0), progress=False)
    row = index[(index.prompt == PROMPTS[1]) & (index.seed == 2)].iloc[0]
    assert row.image_sha256 == image_hash(direct.image)
    assert row.attention_sha256 == attention_hash(direct.attention)
    # the estimate is the run folders' size, from above and within 25%
    sizes = [folder_bytes(tmp_path / p) for p in index.path]
    per_run = result.estimate.total_bytes / 6
    assert max(sizes) <= per_run <= 1.25 * min(sizes)

    stamps = {p: (tmp_path / p / "run.json").stat().st_mtime_ns for p in index.path}
    again = workbench.sweep(spec, out=tmp_path, progress=False)
    assert (again.skipped, again.ran, again.done, again.sweep_id) == (6, 0, 6, result.sweep_id)
    assert {p: (tmp_path / p / "run.json").stat().st_mtime_ns for p in index.path} == stamps
    reread = read_index(tmp_path).set_index("request_id").loc[index.request_id]
    assert len(reread) == 6 and (reread.thumb.to_numpy() == index.thumb.to_numpy()).all()
    assert [list(w) for w in reread.words] == [list(w) for w in index.words]  # rows carried over intact


def test_a_setting_the_model_refuses_refuses_the_spec_before_any_run(tiny_folder, tmp_path):
    """Each distinct setting is checked against the model once, before any run: a size it refuses is the
    spec's error, named by its spec field (never a row telling the user to pass ``size_limit=None``)."""
    for sizes, words in (
        ([None, 20], "sizes must be a multiple of 8"),
        ([None, 48], "sizes 48x48 is more than 2x this model's native size 16x16; sizes up to 32x32"),
    ):
        spec = spec_for(tiny_folder, prompts=PROMPTS[:1], seeds=[0, 1], sizes=sizes)
        out = tmp_path / str(sizes[1])
        with pytest.raises(SpecError) as err:
            workbench.sweep(spec, out=out, progress=False, log=None)
        assert err.value.field == "sizes" and str(err.value).startswith(words), str(err.value)
        assert "size_limit" not in str(err.value) and "--no-size-limit" not in str(err.value)
        assert sorted(os.listdir(out)) == [".sweep.lock"]  # no run, no index, no plan record
    assert "(a sweep keeps to 2x the model's native size)" in str(err.value)


def test_a_request_error_inside_a_run_is_worded_for_the_spec(tiny_pipe):
    """A refusal met inside a run (past the driver's check) names the spec's field, not Python's."""
    from workbench.sweeps import Job, Worker

    worker = Worker("tiny", pipe=tiny_pipe)
    outcome = worker.run(Job("r", Request("a red circle", seed=0, steps=2, height=256, width=256)))
    assert outcome.status == "failed"
    assert outcome.fields["error"].startswith("RequestError: sizes 256x256 is more than 2x")
    assert "size_limit=None" not in outcome.fields["error"]


def test_a_failed_run_is_a_row_and_the_rest_finish(tiny_folder, tmp_path):
    spec = spec_for(tiny_folder, prompts=PROMPTS[:1], seeds=[0, 1], guidance_scales=[4.0, 1e30])
    result = workbench.sweep(spec, out=tmp_path, progress=False, log=None)
    index = read_index(tmp_path).sort_values(["seed", "guidance"])
    assert (result.done, result.failed) == (2, 2)
    failed = index[index.status == "failed"]
    assert list(failed.guidance) == [1e30, 1e30] and failed.path.isna().all()
    assert failed.error.str.contains("non-finite").all(), list(failed.error)
    done = index[index.status == "done"]
    assert list(done.guidance) == [4.0, 4.0] and all(
        (tmp_path / p / "image.png").is_file() for p in done.path
    )
    assert sorted(os.listdir(tmp_path / "runs")) == sorted(done.request_id)
    # failures are data: a rerun keeps them; retry_failed runs them again (they fail again)
    again = workbench.sweep(spec, out=tmp_path, progress=False, log=None)
    assert (again.skipped, again.ran) == (4, 0)
    retried = workbench.sweep(spec, out=tmp_path, progress=False, log=None, retry_failed=True)
    assert (retried.skipped, retried.ran, retried.failed) == (2, 2, 2)


def test_disk_budget_refuses_before_any_run(tiny_folder, tmp_path, capsys):
    spec = spec_for(tiny_folder, disk_budget="100KB")
    with pytest.raises(DiskBudgetError, match=r"over its disk budget of 100\.0 KB"):
        workbench.sweep(spec, out=tmp_path, progress=False)
    assert "disk estimate: 6 runs" in capsys.readouterr().out
    assert not (tmp_path / "runs").exists() and read_index(tmp_path).empty
    assert sorted(os.listdir(tmp_path)) == [".sweep.lock"]  # a refused sweep leaves no index behind
    result = workbench.sweep(spec, out=tmp_path, progress=False, log=None, disk_budget="1MB")
    assert result.done == 6
    before = (tmp_path / "index.parquet").read_bytes()
    with pytest.raises(DiskBudgetError):  # a larger sweep into the same folder, refused: the index stays
        workbench.sweep(spec.replace(seeds=(0, 1, 2, 3)), out=tmp_path, progress=False, log=None)
    assert (tmp_path / "index.parquet").read_bytes() == before


def test_cancel_keeps_finished_runs_and_a_rerun_finishes(tiny_folder, tmp_path):
    cancel = threading.Event()

    class CancelAfterTwo(SweepEvents):
        finished_runs = 0

        def finished(self, worker, outcome, row):
            self.finished_runs += 1
            if self.finished_runs == 2:
                cancel.set()

    spec = spec_for(tiny_folder)
    first = workbench.sweep(
        spec, out=tmp_path, progress=False, log=None, cancel=cancel, events=CancelAfterTwo()
    )
    assert first.cancelled and first.done == 2 and len(os.listdir(tmp_path / "runs")) == 2
    second = workbench.sweep(spec, out=tmp_path, progress=False, log=None)
    assert (second.skipped, second.ran, second.done, second.cancelled) == (2, 4, 6, False)


def test_a_second_sweep_into_a_busy_folder_is_refused(tmp_path):
    holder = SweepFolder(tmp_path)
    try:
        with pytest.raises(SweepBusyError, match=f"pid {os.getpid()}"):
            SweepFolder(tmp_path)
    finally:
        holder.close()
    SweepFolder(tmp_path).close()


def test_in_memory_sweep_on_a_pipeline_equals_seed_grid(tiny_pipe):
    spec = spec_for("tiny", seeds=[0, 1])
    result = workbench.sweep(spec, pipe=tiny_pipe, progress=False, log=None)
    assert result.out is None and len(result.runs) == 4 and result.done == 4
    grid = seed_grid(tiny_pipe, PROMPTS, [0, 1], steps=3, guidance_scale=4.0)
    made = {(r.prompt, r.seed): image_hash(r.image) for r in result.runs.values()}
    assert made == {(r.prompt, r.seed): image_hash(r.image) for r in grid.flat()}


KILLED_SWEEP = """
import sys, torch
torch.set_num_threads(1)
import workbench
spec = {{"model": {model!r}, "prompts": ["a red circle left of a blue square"], "seeds": "0-39",
         "steps": 20, "guidance_scales": [4.0]}}
workbench.sweep(spec, out={out!r}, progress=False, log=None)
"""


def test_a_killed_driver_loses_no_finished_run_and_the_rerun_redoes_none(tiny_folder, tmp_path):
    out = tmp_path / "sweep"
    script = KILLED_SWEEP.format(model=str(tiny_folder), out=str(out))
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], env=env, stderr=subprocess.PIPE)
    runs = out / "runs"
    deadline = time.monotonic() + 50
    while time.monotonic() < deadline and proc.poll() is None:
        if runs.is_dir() and len([p for p in runs.iterdir() if (p / "run.json").is_file()]) >= 3:
            break
        time.sleep(0.02)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    finished = {
        p.name: (p / "run.json").stat().st_mtime_ns for p in runs.iterdir() if (p / "run.json").is_file()
    }
    assert 3 <= len(finished) < 40
    indexed = read_index(out)  # written at most every 2 s: it may lag the run folders
    assert set(indexed.request_id) <= set(finished)

    result = workbench.sweep(
        {
            "model": str(tiny_folder),
            "prompts": ["a red circle left of a blue square"],
            "seeds": "0-39",
            "steps": 20,
            "guidance_scales": [4.0],
        },
        out=out,
        progress=False,
        log=None,
    )
    assert (result.skipped, result.ran, result.done) == (len(finished), 40 - len(finished), 40)
    assert {n: (runs / n / "run.json").stat().st_mtime_ns for n in finished} == finished  # none redone
    index = read_index(out)
    assert len(index) == 40 and set(index.status) == {"done"} and index.thumb.notna().all()
    assert not [p for p in runs.iterdir() if p.name.startswith(".")]  # the killed save's leftovers are gone
    ran_before = index[index.request_id.isin(list(finished))]
    assert len(ran_before) == len(finished) and ran_before.image_sha256.notna().all()
    assert pd.api.types.is_datetime64_any_dtype(index.finished)


def test_the_local_executors_threads_are_put_back(tiny_folder, tmp_path):
    import torch

    before = torch.get_num_threads()
    seen = []

    class Threads(SweepEvents):
        def started(self, worker, job, planned):
            seen.append(torch.get_num_threads())

    spec = spec_for(tiny_folder, prompts=PROMPTS[:1], seeds=[0])
    workbench.sweep(spec, out=tmp_path, threads=before + 1, events=Threads(), progress=False, log=None)
    assert seen == [before + 1] and torch.get_num_threads() == before


def test_ctrl_c_that_makes_a_run_raise_stops_the_sweep_not_a_failed_row(tiny_pipe, monkeypatch):
    import importlib

    from workbench.sweeps.worker import Job, Worker

    core_generate = importlib.import_module(
        "workbench.edits.session"
    )  # the module the worker calls core through

    def interrupted_then_raises(*args, **kwargs):  # a Ctrl-C caught inside, and turned into another error
        try:
            signal.raise_signal(signal.SIGINT)
        except KeyboardInterrupt:
            raise IndexError("list index out of range") from None

    worker = Worker("tiny", pipe=tiny_pipe)
    monkeypatch.setattr(core_generate, "core_generate", interrupted_then_raises)
    with pytest.raises(KeyboardInterrupt):
        worker.run(Job("r1", Request("a red circle", seed=0, steps=2)))
    monkeypatch.setattr(core_generate, "generate", lambda *a, **k: [][0])  # no Ctrl-C: a failed row
    outcome = worker.run(Job("r2", Request("a red circle", seed=0, steps=2)))
    assert outcome.status == "failed" and outcome.fields["error"] == "IndexError: list index out of range"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_resume_makes_damaged_run_folders_again(tiny_folder, tmp_path):
    from workbench.store.runs import TENSORS

    spec = spec_for(tiny_folder, prompts=PROMPTS[:1], seeds=[0, 1, 2, 3])
    workbench.sweep(spec, out=tmp_path, progress=False, log=None)
    first = read_index(tmp_path).sort_values("seed").reset_index(drop=True)
    folders = [tmp_path / p for p in first.path]
    (folders[0] / TENSORS).unlink()  # tensors removed
    (folders[1] / "run.json").write_text("")  # run.json emptied
    Image.new("RGB", (16, 16), "red").save(folders[2] / "image.png")  # image replaced by a valid PNG
    said = []
    again = workbench.sweep(spec, out=tmp_path, progress=False, log=said.append)
    assert (again.skipped, again.ran, again.done) == (1, 3, 4)
    assert any(line.startswith("3 run folders are damaged and will be made again") for line in said)
    remade = read_index(tmp_path).sort_values("seed").reset_index(drop=True)
    assert list(remade.image_sha256) == list(first.image_sha256)  # the same runs, made again
    assert list(remade.attention_sha256) == list(first.attention_sha256)
    for row in remade.itertuples():
        run = load_run(tmp_path / row.path)
        assert (
            image_hash(run.image) == row.image_sha256
            and attention_hash(run.attention) == row.attention_sha256
        )

    # a damaged folder with no index row (its sweep was killed before writing one) is made again too,
    # under --retry-failed as without it
    Image.new("RGB", (16, 16), "blue").save(folders[3] / "image.png")
    (tmp_path / "index.parquet").unlink()
    retried = workbench.sweep(spec, out=tmp_path, progress=False, log=None, retry_failed=True)
    assert (retried.skipped, retried.ran, retried.done) == (3, 1, 4)
    assert image_hash(load_run(folders[3]).image) == first.image_sha256[3]


def test_every_run_has_one_torch_thread_whatever_the_callers_count(tiny_folder, tmp_path, monkeypatch):
    import importlib

    import torch

    from workbench.core.numerics import machine_cores

    if machine_cores() < 2:
        pytest.skip("needs two cores to differ from one thread")
    core_generate = importlib.import_module("workbench.edits.session")  # the worker calls core through it
    real, seen = core_generate.core_generate, []

    def counting(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(core_generate, "core_generate", counting)
    spec = spec_for(tiny_folder, prompts=PROMPTS[:1], seeds=[0, 1])
    torch.set_num_threads(2)  # the caller's own count, as a notebook's default would be
    try:
        default = workbench.sweep(spec, out=tmp_path / "default", progress=False, log=None)
        after = torch.get_num_threads()
    finally:
        torch.set_num_threads(1)
    assert seen == [1, 1] and after == 2  # every run on one thread; the caller's count put back
    one = workbench.sweep(spec, out=tmp_path / "one", threads=1, progress=False, log=None)
    two = workbench.sweep(spec, out=tmp_path / "two", threads=2, progress=False, log=None)
    assert seen == [1, 1, 1, 1, 2, 2]
    a, b = read_index(tmp_path / "default"), read_index(tmp_path / "one")
    assert list(a.attention_sha256) == list(b.attention_sha256) and list(a.image_sha256) == list(
        b.image_sha256
    )
    for result, threads in ((default, 1), (one, 1), (two, 2)):
        record = json.loads((result.out / "sweeps" / f"{result.sweep_id}.json").read_text())
        assert record["numerics"]["threads"] == threads and record["numerics"]["dtype"] == "float32"
        assert result.numerics["threads"] == threads
        numerics = load_run(result.out / result.index.path.iloc[0]).config.provenance.numerics
        assert numerics["threads"] == threads  # as each run recorded it
    assert "every run on 1 torch thread per worker, cpu, float32" in default.summary()
    assert "every run on 2 torch threads per worker" in two.summary()

    # a resume on other numerics is refused: a sweep never mixes them, nor rewrites what it recorded
    folder = tmp_path / "one"
    record_file = folder / "sweeps" / f"{one.sweep_id}.json"
    recorded = record_file.read_text()
    for row in one.index.itertuples():
        shutil.rmtree(folder / row.path)  # both runs to make again
    with pytest.raises(NumericsChangedError) as err:
        workbench.sweep(spec, out=folder, threads=2, progress=False, log=None)
    assert err.value.differ == {"threads": (1, 2)}
    assert str(err.value) == (
        "this sweep's runs were made with 1 torch thread per worker (here 2); a sweep runs every request "
        "with the same numerics: resume with threads=1, or use a new folder"
    )
    assert err.value.named({"threads": "--threads {}"}).endswith(
        "resume with --threads 1, or use a new folder"
    )
    assert record_file.read_text() == recorded and os.listdir(folder / "runs") == []
    assert seen == [1, 1, 1, 1, 2, 2]  # nothing ran
    resumed = workbench.sweep(spec, out=folder, threads=1, progress=False, log=None)
    assert resumed.ran == 2 and json.loads(record_file.read_text())["numerics"]["threads"] == 1


def test_runs_a_sweep_reuses_must_have_its_numerics(tiny_folder, tmp_path):
    """A finished run reused by id (from another sweep into the folder, or read back without its plan
    record) counts only on the numerics it recorded: a sweep refuses to mix it with runs on others."""
    from workbench.core.numerics import machine_cores

    if machine_cores() < 2:
        pytest.skip("needs two cores to differ from one thread")
    first = workbench.sweep(spec_for(tiny_folder, prompts=PROMPTS[:1], seeds=[0]), out=tmp_path, log=None)
    shutil.rmtree(tmp_path / "sweeps")  # no plan record to compare with: each run's own numerics count
    wider = spec_for(tiny_folder, prompts=PROMPTS[:1], seeds=[0, 1])  # another sweep, sharing seed 0's run
    with pytest.raises(NumericsChangedError, match=r"made with 1 torch thread per worker \(here 2\)"):
        workbench.sweep(wider, out=tmp_path, threads=2, progress=False, log=None)
    assert read_index(tmp_path).sweep_id.tolist() == [first.sweep_id]  # nothing ran, no row added


def test_an_executor_runs_the_seed_grid_plan_as_seed_grid_does(tiny_pipe):
    from workbench import RecordingPolicy
    from workbench.analysis.seeds import SeedGrid, seed_grid_requests
    from workbench.sweeps import Job, LocalExecutor

    requests = seed_grid_requests(PROMPTS, [0, 1], steps=3, guidance_scale=4.0)
    executor = LocalExecutor(pipe=tiny_pipe)
    executor.start("tiny", RecordingPolicy(), threading.Event())
    try:
        jobs = [Job(f"r{i}", r) for i, r in enumerate(requests)]
        outcomes = [o for _, o in executor.run(jobs, None, lambda worker, job: None)]
    finally:
        executor.close()
    grid = SeedGrid.from_runs([o.run for o in outcomes])
    direct = seed_grid(tiny_pipe, PROMPTS, [0, 1], steps=3, guidance_scale=4.0)
    assert (grid.prompts, grid.seeds) == (direct.prompts, direct.seeds) == (PROMPTS, [0, 1])
    assert [image_hash(r.image) for r in grid.flat()] == [image_hash(r.image) for r in direct.flat()]
    assert [attention_hash(r.attention) for r in grid.flat()] == [
        attention_hash(r.attention) for r in direct.flat()
    ]


def test_rows_record_the_guidance_the_run_used(tiny_folder, tiny_pipe, tmp_path):
    from workbench.core.adapters import adapter_for

    spec = SweepSpec.from_dict({"model": str(tiny_folder), "prompts": PROMPTS[:1], "seeds": [0], "steps": 2})
    assert spec.guidance_scales == (None,)  # left out: the model's own
    result = workbench.sweep(spec, out=tmp_path, progress=False, log=None)
    row = result.index.iloc[0]
    used = load_run(tmp_path / row.path).config.guidance_scale
    assert used == adapter_for(tiny_pipe).default_guidance and row.guidance == used
    assert read_index(tmp_path).guidance.tolist() == [used]


def test_resume_remakes_a_run_whose_attention_was_altered(tiny_folder, tmp_path):
    """A run folder whose attention tensor changed (the tensors file's checksum rewritten to match) does
    not hash to its recorded attention: resume makes it again."""
    from safetensors.torch import load_file, save_file

    from workbench.store.runs import _sha256

    spec = spec_for(tiny_folder, prompts=PROMPTS[:1], seeds=[0, 1])
    first = workbench.sweep(spec, out=tmp_path, progress=False, log=None)
    folder = tmp_path / first.index.path.iloc[0]
    tensors = load_file(folder / "tensors.safetensors")
    layer = next(k for k in tensors if k.startswith("attention.cond."))
    save_file({**tensors, layer: tensors[layer] * 0.5}, folder / "tensors.safetensors")
    meta = json.loads((folder / "run.json").read_text())
    meta["hashes"]["tensors_file"] = _sha256(folder / "tensors.safetensors")
    (folder / "run.json").write_text(json.dumps(meta))
    said = []
    again = workbench.sweep(spec, out=tmp_path, progress=False, log=said.append)
    assert (again.skipped, again.ran, again.done) == (1, 1, 2)
    assert "does not match the attention hash in run.json" in said[0]
    assert attention_hash(load_run(folder).attention) == first.index.attention_sha256.iloc[0]
