"""`workbench sweep SPEC --out DIR`: end to end, resume, the disk budget, usage errors, Ctrl-C."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from workbench.cli import main
from workbench.sweeps import read_index

ENV = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1"}


@pytest.fixture
def spec_file(tiny_folder, tmp_path):
    def write(**changes):
        spec = {
            "model": str(tiny_folder),
            "prompts": ["a red circle left of a blue square"],
            "seeds": [0, 1],
            "steps": 6,
            "guidance_scales": [4.0],
            **changes,
        }
        path = tmp_path / "sweep.json"
        path.write_text(json.dumps(spec))
        return str(path)

    return write


def test_sweep_command_end_to_end(spec_file, tmp_path, capsys):
    spec = spec_file(
        prompts=["a red circle left of a blue square", "a painting of a horse"], word_orders="relation"
    )
    out = tmp_path / "out"
    assert main(["sweep", spec, "--out", str(out), "--threads", "1"]) == 0
    printed = capsys.readouterr()
    assert "disk estimate: 8 runs" in printed.out and "8 done, 0 failed" in printed.out
    assert "sweep " in printed.err  # the overall progress bar
    index = read_index(out)
    assert len(index) == 8 and set(index.status) == {"done"}
    page = (out / "report.html").read_text()
    for caption in (
        "Sweep",
        "Seed vs prompt",
        "Word order: distance of the images",
        "Word order: attention mass per word",
    ):
        assert f"<h3>{caption}</h3>" in page or f"<h2>{caption}</h2>" in page
    assert "a blue square left of a red circle" in page and "Not shown" not in page

    assert main(["sweep", spec, "--out", str(out), "--no-report"]) == 0
    assert "8 finished before, 0 ended now" in capsys.readouterr().out


def test_disk_budget_refusal_is_one_line(spec_file, tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", spec_file(), "--out", str(out), "--disk-budget", "1KB"])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert "disk estimate: 2 runs" in captured.out
    assert "workbench sweep: error: the sweep would take about" in captured.err
    assert "over its disk budget of 1.0 KB" in captured.err and "Traceback" not in captured.err
    assert not (out / "runs").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["{spec}", "--out", "{tmp}/o", "--workers", "2"], "--workers and --workers-write go with --ray"),
        (["{spec}", "--out", "{tmp}/o", "--ray-local", "0"], "--ray-local must be >= 1"),
        (["{spec}", "--out", "{tmp}/o", "--disk-budget", "lots"], "--disk-budget must be a positive size"),
        (["{spec}", "--out", "{tmp}/o", "--threads", "0"], "--threads must be in 1.."),
        (["{spec}", "--out", "{tmp}/o", "--threads", "100000"], "--threads must be in 1.."),
        (["{spec}", "--out", "{tmp}/o", "--ray-local", "2", "--workers", "0"], "--workers must be >= 1"),
        (["{spec}", "--out", "{tmp}/o", "--ray-local", "100000"], "--ray-local must be in 1.."),
        (
            ["{spec}", "--out", "{tmp}/o", "--ray-local", "1", "--workers", "100000"],
            "--workers must be in 1..",
        ),
        (["{tmp}/missing.json", "--out", "{tmp}/o"], "does not exist"),
        (["{spec}", "--out", "{spec}"], "is a file"),
    ],
)
def test_usage_errors(spec_file, tmp_path, capsys, args, message):
    spec = spec_file()
    argv = [a.format(spec=spec, tmp=tmp_path) for a in args]
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_bad_spec_and_model_are_usage_errors(spec_file, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["sweep", spec_file(seed=[1]), "--out", str(tmp_path / "o")])
    assert "unknown spec fields ['seed']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["sweep", spec_file(model=str(tmp_path / "nowhere")), "--out", str(tmp_path / "o")])
    assert "no such folder" in capsys.readouterr().err


def test_unknown_field_error_names_spec_fields_not_options(spec_file, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["sweep", spec_file(seed=[1]), "--out", str(tmp_path / "o"), "--disk-budget", "1GB"])
    err = capsys.readouterr().err
    assert "unknown spec fields ['seed']" in err and "'disk_budget'" in err and "--disk-budget" not in err


def test_a_ray_cluster_that_wants_its_token_is_one_line(spec_file, tmp_path, capsys, monkeypatch):
    ray = pytest.importorskip("ray")
    seen = {}

    def refuses(address=None, **kwargs):  # what a cluster with token authentication answers without one
        seen["address"] = address
        raise ray.exceptions.AuthenticationError("Token authentication is enabled but no token was found")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refuses)
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", spec_file(), "--out", str(tmp_path / "o"), "--ray", "10.1.2.3:6379"])
    assert exit_info.value.code == 2 and seen["address"] == "10.1.2.3:6379"
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    assert lines[0].startswith(
        "workbench sweep: error: the Ray cluster at 10.1.2.3:6379 uses token authentication"
    )
    assert "RAY_AUTH_MODE=token" in lines[0] and "~/.ray/auth_token" in lines[0]


def test_sweep_help_imports_no_torch():
    code = (
        "import sys\n"
        "from workbench.cli import main\n"
        "try:\n"
        "    main(['sweep', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in ('torch', 'diffusers', 'pandas', 'ray', 'workbench.core') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"
    assert "--ray-local" in proc.stdout and "--disk-budget" in proc.stdout


def test_ctrl_c_keeps_finished_runs_in_the_index(spec_file, tmp_path):
    spec = spec_file(seeds="0-39", steps=20)
    out = tmp_path / "out"
    cli = [sys.executable, "-m", "workbench", "sweep", spec, "--out", str(out), "--threads", "1"]
    proc = subprocess.Popen(  # SIGINT as a terminal delivers it, whatever the session's disposition
        cli,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 50
    while time.monotonic() < deadline and proc.poll() is None:
        if (out / "runs").is_dir() and len(list((out / "runs").glob("*/run.json"))) >= 2:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr.decode()[-2000:]
    assert "Traceback" not in stderr.decode() and "interrupted" in stderr.decode()
    finished = {p.parent.name for p in (out / "runs").glob("*/run.json")}
    index = read_index(out)  # written on the way out
    assert 2 <= len(finished) < 40 and set(index.status) == {"done"}
    # every finished run has its row, but for one whose save Ctrl-C caught at its very end (the next
    # sweep reads that one back from its folder)
    assert set(index.request_id) <= finished and len(finished) - len(index) <= 1


def test_ray_cpus_and_local_workers_are_bounded_by_the_cores():
    from workbench.core.numerics import machine_cores
    from workbench.sweeps import ExecutorOptions, OptionsError

    cores = machine_cores()
    assert ExecutorOptions(num_cpus=cores, workers=cores).num_cpus == cores
    for field in ("num_cpus", "workers"):
        with pytest.raises(OptionsError) as err:
            ExecutorOptions(**{field: cores + 1})
        assert err.value.field == field
        assert (
            str(err.value)
            == f"{field} must be in 1..{cores} (the CPU cores this machine gives), got {cores + 1}"
        )
    assert ExecutorOptions(address="auto", workers=cores + 1).workers == cores + 1  # a cluster has more


def _one_line_exit(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err  # a model's loading bars may come first
    lines = [line for line in err.splitlines() if line.startswith("workbench ")]
    assert exit_info.value.code == 2 and "Traceback" not in err and len(lines) == 1, err
    assert err.endswith(lines[0] + "\n")  # the error is the last line
    return lines[0]


def test_index_and_sweep_keep_to_their_own_index_files(spec_file, tmp_path, capsys):
    """`workbench index` does not write over a sweep's index, a sweep does not take another index for its
    own, and a resume on other numerics is refused: each in one line, before anything changes."""
    from workbench.core.numerics import machine_cores

    spec, out = spec_file(), tmp_path / "out"
    assert main(["sweep", spec, "--out", str(out), "--threads", "1", "--no-report"]) == 0
    capsys.readouterr()
    before = (out / "index.parquet").read_bytes()
    err = _one_line_exit(["index", str(out)], capsys)
    assert err.startswith(
        f"workbench index: error: {out} is a sweep's folder: its index.parquet is the sweep's own"
    )
    assert (out / "index.parquet").read_bytes() == before
    assert main(["sweep", spec, "--out", str(out), "--no-report"]) == 0  # the sweep's index still serves
    assert "2 finished before, 0 ended now" in capsys.readouterr().out
    before = (out / "index.parquet").read_bytes()
    if machine_cores() >= 2:
        err = _one_line_exit(["sweep", spec, "--out", str(out), "--threads", "2"], capsys)
        assert err == (
            "workbench sweep: error: this sweep's runs were made with 1 torch thread per worker (here 2); a "
            "sweep runs every request with the same numerics: resume with --threads 1, or use a new folder"
        )
        assert (out / "index.parquet").read_bytes() == before
    # OUT/runs indexed as a folder of runs has a run index, which a sweep does not take for its own
    assert main(["index", str(out / "runs")]) == 0
    capsys.readouterr()
    err = _one_line_exit(["sweep", spec, "--out", str(out / "runs")], capsys)
    assert err.startswith(f"workbench sweep: error: {out / 'runs' / 'index.parquet'} is not a sweep's index")
    assert "move it away" in err and "KeyError" not in err


def test_a_study_whose_runs_fail_exits_with_the_failed_code(tiny_folder, tmp_path, capsys):
    out = tmp_path / "study"
    argv = ["study", "--out", str(out), "--model", str(tiny_folder), "--seeds", "0", "--steps", "2"]
    assert main([*argv, "--guidance", "1e30"]) == 3  # non-finite latents: a failure, not a bad option
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("workbench study: failed: 2 of 2 runs failed or stopped (first: seed 0, ")
    assert "no report was written" in err[-1] and not (out / "report.html").exists()
