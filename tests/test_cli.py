"""The command line: generate, report, rerun, index; bad arguments exit 2 with a message, no traceback."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from workbench.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args, cwd=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "workbench", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )


@pytest.fixture(scope="module")
def made(tiny_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run1"
    code = main(
        [
            "generate",
            "--model",
            str(tiny_folder),
            "--prompt",
            "a red circle left of a blue square",
            "--seed",
            "3",
            "--steps",
            "3",
            "--device",
            "cpu",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    return out


def test_generate_writes_a_run_folder_with_spec(made, capsys):
    from workbench import load_run

    run = load_run(made)
    assert run.seed == 3 and run.config.steps == 3 and run.complete
    assert json.loads((made / "spec.json").read_text())["config"]["seed"] == 3


def test_report_and_rerun(made, tmp_path, capsys):
    assert main(["report", str(made), "-o", str(tmp_path / "r.html")]) == 0
    assert "untrusted" in capsys.readouterr().out
    assert (tmp_path / "r.html").stat().st_size > 1_000_000  # plotly.js inlined
    assert main(["rerun", str(made / "spec.json")]) == 0
    assert "MATCH" in capsys.readouterr().out
    spec = json.loads((made / "spec.json").read_text())
    spec["expected"]["attention_hash"] = "f" * 64
    (tmp_path / "bad.json").write_text(json.dumps(spec))
    assert main(["rerun", str(tmp_path / "bad.json")]) == 1
    assert "MISMATCH" in capsys.readouterr().out


def test_index_command(made, capsys):
    assert main(["index", str(made.parent)]) == 0
    assert "index.parquet" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["generate", "--prompt", "x", "--seed", "abc", "--out", "o"], "invalid int value"),
        (["generate", "--prompt", "x", "--seed", "1", "--scheduler", "nope", "--out", "o"], "invalid choice"),
        (
            [
                "generate",
                "--prompt",
                "x",
                "--seed",
                "-1",
                "--steps",
                "1",
                "--out",
                "{tmp}/o",
                "--model",
                "{folder}",
            ],
            "--seed must be",
        ),
        (["generate", "--prompt", "x", "--seed", "1", "--steps", "0", "--out", "{tmp}/o"], "--steps must be"),
        (
            ["generate", "--prompt", "x" * 10_001, "--seed", "1", "--out", "{tmp}/o"],
            "--prompt is 10,001 characters",
        ),
        (
            [
                "generate",
                "--prompt",
                "x",
                "--seed",
                "1",
                "--height",
                "12",
                "--out",
                "{tmp}/o",
                "--model",
                "{folder}",
            ],
            "multiple of",
        ),
        (
            ["generate", "--prompt", "x", "--seed", "1", "--out", "{tmp}/o", "--model", "{tmp}"],
            "not a diffusers pipeline folder",
        ),
        (["report", "{tmp}/missing", "-o", "r.html"], "is not a run folder"),
        (["rerun", "{tmp}/missing/spec.json"], "does not exist"),
        (["study", "--out", "{tmp}/s", "--seeds", "-3"], "--seeds must be"),
        (["study", "--out", "{tmp}/s", "--threads", "0"], "--threads must be"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(tiny_folder, tmp_path, capsys, args, message):
    args = [a.format(folder=tiny_folder, tmp=tmp_path) for a in args]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_real_command_line_bad_seed(tiny_folder, tmp_path):
    proc = _cli(
        "generate", "--model", str(tiny_folder), "--prompt", "x", "--seed", "-1", "--out", "o", cwd=tmp_path
    )
    assert proc.returncode == 2
    assert "--seed must be" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()


def test_generate_refuses_to_overwrite(made, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--prompt", "x", "--seed", "1", "--out", str(made)])
    assert exit_info.value.code == 2
    assert "--overwrite" in capsys.readouterr().err


def test_study_writes_runs_index_and_report(tiny_folder, tmp_path, capsys):
    import pandas as pd

    out = tmp_path / "study"
    assert (
        main(["study", "--out", str(out), "--model", str(tiny_folder), "--steps", "2", "--seeds", "0", "1"])
        == 0
    )
    printed = capsys.readouterr().out
    folders = sorted(p.name for p in (out / "runs").iterdir() if p.is_dir())
    assert folders == ["order-a_seed-0", "order-a_seed-1", "order-b_seed-0", "order-b_seed-1"]
    assert all((out / "runs" / f / "spec.json").exists() for f in folders)
    index = pd.read_parquet(out / "runs" / "index.parquet")
    assert set(index.prompt) == {"a red circle left of a blue square", "a blue square left of a red circle"}
    page = (out / "report.html").read_text()
    assert page.count('<img class="run-image"') == 4 and "Placement as written" in page
    assert str(out / "report.html") in printed and "swapping the object words" in printed


def test_generate_applies_edits_given_as_json(tiny_folder, tmp_path, capsys):
    from workbench import Edit, load_run

    out = tmp_path / "edited"
    edits = '[{"kind": "ablate", "words": ["red"]}]'
    args = [
        "generate",
        "--model",
        str(tiny_folder),
        "--prompt",
        "a red circle",
        "--seed",
        "3",
        "--steps",
        "2",
    ]
    assert main([*args, "--edits", edits, "--out", str(out)]) == 0
    assert "edited: ablate 'red'" in capsys.readouterr().out
    run = load_run(out)
    assert run.config.edits == (Edit.ablate("red"),)
    assert main(["rerun", str(out / "spec.json")]) == 0 and "MATCH" in capsys.readouterr().out
