"""Sweeps on a local Ray instance (num_cpus=2): the same runs as the local executor, one model load per
worker, failures as rows, the driver saving what the workers send back, and the command line."""

import json
import os

import pytest

ray = pytest.importorskip("ray")

import workbench  # noqa: E402
from workbench.cli import main  # noqa: E402
from workbench.sweeps import read_index  # noqa: E402

PROMPTS = ["a red circle left of a blue square", "a painting of a horse"]


@pytest.fixture(scope="module")
def local_ray():
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    yield
    ray.shutdown()


def spec_for(model, **changes) -> dict:
    return {
        "model": str(model),
        "prompts": PROMPTS,
        "seeds": [0, 1, 2],
        "steps": 3,
        "guidance_scales": [4.0],
        **changes,
    }


def test_ray_runs_equal_the_local_executors(local_ray, tiny_folder, tmp_path):
    spec = spec_for(tiny_folder)
    local = workbench.sweep(spec, out=tmp_path / "local", progress=False, log=None)
    on_ray = workbench.sweep(spec, out=tmp_path / "ray", executor="ray", progress=False, log=None)
    assert on_ray.sweep_id == local.sweep_id and on_ray.done == 6
    # two actors, each loaded the model once, on one thread, and saved its own runs
    assert [w["name"] for w in on_ray.workers] == ["ray-0", "ray-1"]
    assert all(w["loads"] == 1 and w["threads"] == 1 for w in on_ray.workers)
    assert len({w["pid"] for w in on_ray.workers} | {os.getpid()}) == 3
    a = read_index(tmp_path / "local").set_index("request_id").sort_index()
    b = read_index(tmp_path / "ray").set_index("request_id").sort_index()
    assert list(a.index) == list(b.index)
    assert (a.image_sha256 == b.image_sha256).all() and (a.attention_sha256 == b.attention_sha256).all()
    assert (a.thumb == b.thumb).all()
    assert set(b.worker) <= {"ray-0", "ray-1"} and set(a.worker) == {"local"}
    assert all((tmp_path / "ray" / p / "run.json").is_file() for p in b.path)


def test_ray_failed_row_and_the_driver_saving_runs(local_ray, tiny_folder, tmp_path):
    from workbench.sweeps import SpecError

    options = {"executor": "ray", "workers": 1, "workers_write": False, "progress": False, "log": None}
    refused = spec_for(tiny_folder, prompts=PROMPTS[:1], seeds=[0, 1], sizes=[None, 20])
    with pytest.raises(SpecError, match="^sizes must be a multiple of 8") as err:  # asked of a Ray worker
        workbench.sweep(refused, out=tmp_path / "refused", **options)
    assert err.value.field == "sizes" and not (tmp_path / "refused" / "runs").exists()
    spec = spec_for(tiny_folder, prompts=PROMPTS[:1], seeds=[0, 1], guidance_scales=[4.0, 1e30])
    result = workbench.sweep(spec, out=tmp_path, **options)
    assert (result.done, result.failed) == (2, 2) and len(result.workers) == 1
    index = read_index(tmp_path)
    failed = index[index.status == "failed"]
    assert failed.error.str.contains("non-finite").all() and list(failed.guidance) == [1e30, 1e30]
    for path in index[index.status == "done"].path:
        assert workbench.load_run(tmp_path / path).complete


def test_cli_end_to_end_on_ray(local_ray, tiny_folder, tmp_path, capsys):
    spec = tmp_path / "sweep.json"
    spec.write_text(json.dumps(spec_for(tiny_folder, seeds=[0, 1])))
    out = tmp_path / "out"
    assert main(["sweep", str(spec), "--out", str(out), "--ray-local", "2"]) == 0
    printed = capsys.readouterr().out
    assert "4 done, 0 failed" in printed and str(out / "report.html") in printed
    index = read_index(out)
    assert set(index.worker) <= {"ray-0", "ray-1"} and len(index) == 4


def test_ray_cancel_stops_the_workers_and_the_rest_runs_later(local_ray, tiny_folder, tmp_path):
    import threading

    from workbench.sweeps import SweepEvents

    cancel = threading.Event()

    class CancelAtFirst(SweepEvents):
        def finished(self, worker, outcome, row):
            cancel.set()

    spec = spec_for(tiny_folder, prompts=PROMPTS[:1], seeds="0-29", steps=20)
    first = workbench.sweep(
        spec, out=tmp_path, executor="ray", cancel=cancel, events=CancelAtFirst(), progress=False, log=None
    )
    assert first.cancelled and 1 <= first.done < 30 and first.failed == 0
    finished = {p.parent.name for p in (tmp_path / "runs").glob("*/run.json")}
    assert set(read_index(tmp_path).request_id) == finished and len(finished) == first.done
    # the ids do not depend on the executor: the local one finishes the sweep
    rest = workbench.sweep(spec, out=tmp_path, progress=False, log=None)
    assert (rest.skipped, rest.done, rest.sweep_id) == (first.done, 30, first.sweep_id)


def test_edit_lists_run_on_ray_as_locally(local_ray, tiny_folder, tmp_path):
    edits = [
        [],
        [{"kind": "ablate", "words": ["red"]}],
        [{"kind": "replace", "source": PROMPTS[1], "words": ["a"]}],
    ]
    spec = spec_for(tiny_folder, prompts=PROMPTS[:1], seeds=[0], edits=edits)
    local = workbench.sweep(spec, out=tmp_path / "local", progress=False, log=None)
    on_ray = workbench.sweep(spec, out=tmp_path / "ray", executor="ray", progress=False, log=None)
    assert on_ray.done == local.done == 3
    a = read_index(tmp_path / "local").set_index("request_id").sort_index()
    b = read_index(tmp_path / "ray").set_index("request_id").sort_index()
    assert list(a.index) == list(b.index) and (a.image_sha256 == b.image_sha256).all()
    assert sorted(b.edits) == ["", "ablate 'red'", "replace 'a' from 'a painting of a horse'"]
    assert b.image_sha256.nunique() == 3  # each edit list made its own image
