"""Loading in a notebook is quiet: no component progress bars, no notices that ask nothing of the user;
other library warnings still show, and verbose=True shows everything."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CODE = """
import sys
from diffusers.utils import logging as dl
import workbench
from workbench.notebook import quiet_loading
with quiet_loading(verbose={verbose}):
    pipe = workbench.load_pipeline(sys.argv[1], device="cpu")
    dl.get_logger("diffusers.test").warning("a warning that matters")
print("bars after:", dl.is_progress_bar_enabled())
"""


def _load(folder: Path, verbose: bool) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("TRANSFORMERS_VERBOSITY", None)
    return subprocess.run(
        [sys.executable, "-c", CODE.format(verbose=verbose), str(folder)],
        env=env,
        capture_output=True,
        text=True,
    )


@pytest.mark.parametrize("verbose", [False, True])
def test_quiet_loading(tiny_folder, verbose):
    out = _load(tiny_folder, verbose)
    assert out.returncode == 0, out.stderr
    assert "a warning that matters" in out.stderr
    assert "bars after: True" in out.stdout
    noise = ["Loading pipeline components", "accelerate", "Loading weights"]
    if verbose:
        assert any(n in out.stderr for n in noise)
    else:
        assert not [n for n in noise if n in out.stderr], out.stderr
