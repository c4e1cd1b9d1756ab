"""Re-run specs: regenerate a run and compare with its recorded hashes."""

import json

import pytest

from workbench import generate
from workbench.store.runs import attention_hash, image_hash
from workbench.store.spec import SpecError, load_spec, make_spec, rerun, save_spec


@pytest.fixture(scope="module")
def run(tiny_pipe):
    return generate(
        tiny_pipe,
        "a yellow triangle below a green circle",
        seed=7,
        steps=3,
        scheduler="euler",
        progress=False,
    )


def test_spec_holds_config_and_hashes(run):
    spec = make_spec(run)
    cfg = spec["config"]
    assert cfg["prompt"] == run.prompt and cfg["seed"] == 7 and cfg["steps"] == 3
    assert cfg["scheduler"] == "EulerDiscreteScheduler" and cfg["scheduler_config"]
    assert cfg["model"]["weights_sha256"] and cfg["policy"]["heads"] == "mean"
    assert {"torch", "diffusers", "transformers", "workbench"} <= set(cfg["versions"])
    assert spec["expected"] == {
        "image_hash": image_hash(run.image),
        "attention_hash": attention_hash(run.attention),
    }
    json.dumps(spec)  # JSON-ready


def test_rerun_matches_from_the_spec_file(tmp_path, run):
    path = save_spec(run, tmp_path / "spec.json")
    result = rerun(load_spec(path))  # loads the model from the spec's own source (the tiny folder)
    assert result.image_match is True and result.attention_match is True and result.match
    assert result.run.config.scheduler == "EulerDiscreteScheduler"
    assert "match" in result.summary() and "DIFFERS" not in result.summary()


def test_rerun_reports_a_tampered_hash(tiny_pipe, run):
    spec = make_spec(run)
    spec["expected"]["image_hash"] = "0" * 64
    result = rerun(spec, model=tiny_pipe)
    assert result.image_match is False and result.attention_match is True and not result.match
    assert "DIFFERS" in result.summary()


def test_rerun_notices_a_different_setting(tiny_pipe, run):
    spec = make_spec(run)
    spec["config"]["versions"]["diffusers"] = "0.0.1"
    result = rerun(spec, model=tiny_pipe)
    assert result.match and "diffusers version" in result.differences


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "does not exist"), ("{not json", "not a JSON spec"), ('{"a": 1}', "not a workbench re-run spec")],
)
def test_load_spec_errors_are_clear(tmp_path, content, message):
    path = tmp_path / "spec.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SpecError, match=message):
        load_spec(path)
