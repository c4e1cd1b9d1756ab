"""Saves killed at random points (SIGKILL: no cleanup runs) leave every run loadable or cleanly absent."""

import os
import random
import signal
import time

import pytest
from test_store_runs import assert_runs_equal

from workbench import RecordingPolicy, RunLoadError, generate, load_run, save_run

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


@pytest.fixture(scope="module")
def run(tiny_pipe):
    policy = RecordingPolicy(negative=True, heads="all")
    return generate(tiny_pipe, "a blue square", seed=3, steps=3, policy=policy, progress=False)


def _saver(run, target) -> int:
    """A child process that saves ``run`` to ``target`` over and over until it is killed."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            while True:
                save_run(run, target, overwrite=True)
        finally:
            os._exit(1)
    return pid


def test_killed_saves_leave_loadable_runs(run, tmp_path):
    parent = tmp_path / "runs"
    targets = [parent / "r0", parent / "r1"]
    started = time.perf_counter()
    save_run(run, tmp_path / "timing")
    one_save = time.perf_counter() - started
    rng = random.Random(2024)
    for i in range(24):
        pid = _saver(run, targets[i % len(targets)])
        time.sleep(rng.uniform(0, 4 * one_save))  # anywhere from before the first save to several in
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL  # killed, not crashed
    leftovers = [p.name for p in parent.iterdir() if p.name.startswith(".")]
    for target in targets:
        try:
            loaded = load_run(target)
        except RunLoadError as err:  # cleanly absent: killed before its first save finished
            assert "not a run folder" in str(err) and not target.exists()
        else:
            assert_runs_equal(run, loaded)
    assert leftovers, "no kill landed inside a save; the test did not exercise anything"
    save_run(run, targets[0], overwrite=True)  # one more normal save cleans up after the dead ones
    assert [p.name for p in parent.iterdir() if p.name.startswith(".")] == []
    for target in targets:
        if target.exists():
            assert_runs_equal(run, load_run(target))
