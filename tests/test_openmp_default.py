"""Importing workbench before torch makes OpenMP wait passively, unless the user chose a policy; after
torch it cannot, and says so (benchmarks/omp_wait.py times the difference)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str, **env) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    base["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True)


def test_workbench_first_sets_passive_waits_for_torch():
    out = _python("import os, workbench, torch; print(os.environ['OMP_WAIT_POLICY'])")
    assert out.returncode == 0 and out.stdout.split() == ["PASSIVE"]
    assert "RuntimeWarning" not in out.stderr


def test_a_users_choice_is_kept():
    out = _python("import os, workbench; print(os.environ['OMP_WAIT_POLICY'])", OMP_WAIT_POLICY="ACTIVE")
    assert out.stdout.split() == ["ACTIVE"]


def test_torch_first_is_named_with_what_to_do():
    out = _python("import os, torch, workbench; print(os.environ.get('OMP_WAIT_POLICY'))")
    assert out.stdout.split() == ["None"]  # too late to change: OpenMP has read it
    assert "torch was imported before workbench" in out.stderr and "OMP_WAIT_POLICY=PASSIVE" in out.stderr
