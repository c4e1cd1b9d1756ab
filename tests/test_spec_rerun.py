"""Re-running where the recorded device is missing, and re-running an interrupted run."""

import json

import pytest
import torch

from workbench import generate
from workbench.cli import main
from workbench.store.runs import attention_hash
from workbench.store.spec import make_spec, rerun, save_spec


@pytest.fixture(scope="module")
def run(tiny_pipe):
    return generate(tiny_pipe, "a red circle left of a blue square", seed=5, steps=3, progress=False)


@pytest.fixture(scope="module")
def partial(tiny_pipe):
    def ctrl_c(step, x0, latent):
        if step == 1:
            raise KeyboardInterrupt

    with pytest.warns(UserWarning, match="incomplete"):
        return generate(tiny_pipe, "a yellow triangle", seed=2, steps=4, progress=False, on_step=ctrl_c)


def test_missing_recorded_device_falls_back_and_says_so(run, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    spec = make_spec(run)
    spec["config"]["device"], spec["config"]["dtype"] = "cuda:0", "float16"
    result = rerun(spec)  # loads the spec's own source, the tiny folder
    assert result.run.config.device == "cpu" and result.run.config.dtype == "float32"
    assert result.differences["device"] == ("cuda:0", "cpu")
    assert any("'cuda:0' is not available here; re-ran on 'cpu' in float32" in n for n in result.notes)
    assert "re-ran on 'cpu'" in result.summary()
    # the run was recorded on CPU in float32 really, so the fallback reproduces it exactly
    assert result.image_match is True and result.attention_match is True


def test_an_asked_for_device_that_is_missing_is_an_error(run, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="device 'cuda' is not available"):
        rerun(make_spec(run), device="cuda")


def test_an_available_recorded_device_is_used_without_notes(run):
    result = rerun(make_spec(run))
    assert result.match and result.notes == [] and "device" not in result.differences


def test_incomplete_run_compares_the_steps_it_recorded(tiny_pipe, partial):
    assert not partial.complete and partial.steps_done == 2 and partial.image is None
    spec = make_spec(partial)
    assert spec["complete"] is False and spec["attention_steps"] == [0, 1] and spec["steps_done"] == 2
    result = rerun(spec, model=tiny_pipe)
    assert result.run.complete and result.run.steps_done == 4  # regenerated in full
    for name, probs in partial.attention.probs.items():  # the recorded steps, bit for bit
        assert torch.equal(probs, result.run.attention.probs[name][:2])
    assert result.image_match is None and result.attention_match is True and result.match
    summary = result.summary()
    assert "recorded run was incomplete (2 of 4 steps)" in summary and "DIFFERS" not in summary
    assert result.actual["attention_hash"] == attention_hash(partial.attention)


def test_incomplete_run_with_other_attention_differs(tiny_pipe, partial):
    spec = make_spec(partial)
    spec["expected"]["attention_hash"] = "0" * 64
    result = rerun(spec, model=tiny_pipe)
    assert result.attention_match is False and not result.match


def test_incomplete_spec_without_its_step_list(tiny_pipe, partial):
    spec = make_spec(partial)
    del spec["attention_steps"], spec["steps_done"]  # as specs written before these fields
    result = rerun(spec, model=tiny_pipe)
    assert result.attention_match is True and "recorded run was incomplete" in result.summary()


def test_cli_rerun_of_an_incomplete_run_matches(partial, tmp_path, capsys):
    path = save_spec(partial, tmp_path / "spec.json")
    assert json.loads(path.read_text())["complete"] is False
    assert main(["rerun", str(path)]) == 0
    out = capsys.readouterr().out
    assert "incomplete" in out and "MISMATCH" not in out and out.rstrip().endswith("MATCH")
