"""The command line loads models quietly: no loading progress bars, no notices that ask nothing of the
user; warnings that matter (a prompt cut off) still show, and ``--verbose`` shows the loading output."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from workbench.cli import _parser

ROOT = Path(__file__).resolve().parents[1]
NOISE = ("torchvision", "accelerate", "Loading pipeline components", "Loading weights")
# 23 tokens for a context of 20: the last words are cut off
LONG = "a red circle left of a blue square above a green triangle below a yellow small big circle"


def _generate(out: Path, prompt: str, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    for name in ("TRANSFORMERS_VERBOSITY", "DIFFUSERS_VERBOSITY"):
        env.pop(name, None)
    args = ["generate", "--model", "toy", "--prompt", prompt, "--seed", "1", "--steps", "2"]
    return subprocess.run(
        [sys.executable, "-m", "workbench", *args, "--device", "cpu", "--out", str(out), *extra],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_generate_is_quiet_but_keeps_the_warnings_that_matter(tmp_path):
    done = _generate(tmp_path / "run", LONG)
    assert done.returncode == 0, done.stderr
    assert [n for n in NOISE if n in done.stderr] == [], done.stderr
    assert "these words are cut off" in done.stderr and "'yellow', 'small', 'big', 'circle'" in done.stderr
    assert "run written to" in done.stdout


def test_generate_verbose_shows_the_loading_output(tmp_path):
    done = _generate(tmp_path / "run", "a red circle left of a blue square", "--verbose")
    assert done.returncode == 0, done.stderr
    assert "Loading pipeline components" in done.stderr
    assert "Loading weights" in done.stderr


@pytest.mark.parametrize("command", ["generate", "rerun", "study", "sweep", "report"])  # report: --filmstrips
def test_the_commands_that_load_a_model_take_verbose(command):
    actions = _parser()._subparsers._group_actions[0].choices[command]._actions
    assert "--verbose" in {o for a in actions for o in a.option_strings}


@pytest.mark.parametrize("command", ["index"])
def test_the_commands_that_load_no_model_do_not(command):
    actions = _parser()._subparsers._group_actions[0].choices[command]._actions
    assert "--verbose" not in {o for a in actions for o in a.option_strings}
