"""Re-run recipes: what spec.json holds, how it is read and checked, and re-running from it."""

import json

import pytest

from workbench import generate
from workbench.cli import main
from workbench.rerun import rerun
from workbench.store.recipe import Hashes, RecipeError, RerunRecipe, save_recipe
from workbench.store.runs import attention_hash, image_hash


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


@pytest.fixture(scope="module")
def spec(run) -> dict:
    return RerunRecipe.from_run(run).to_dict()


def _edited(spec: dict, path: tuple, value) -> dict:
    spec = json.loads(json.dumps(spec))
    node = spec
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return spec


def test_recipe_holds_config_and_hashes(run, spec):
    cfg = spec["config"]
    assert cfg["prompt"] == run.prompt and cfg["seed"] == 7 and cfg["steps"] == 3
    assert cfg["scheduler"] == "EulerDiscreteScheduler" and cfg["scheduler_config"]
    assert cfg["model"]["weights_sha256"] and cfg["policy"]["heads"] == "mean"
    assert {"torch", "diffusers", "transformers", "workbench"} <= set(cfg["versions"])
    assert spec["expected"] == {
        "image_hash": image_hash(run.image),
        "attention_hash": attention_hash(run.attention),
    }
    assert spec["workbench_spec"] == 1 and spec["complete"] is True and spec["steps_done"] == 3
    assert spec["attention_steps"] == [0, 1, 2]
    json.dumps(spec)  # JSON-ready


def test_recipe_is_a_typed_value_with_a_json_round_trip(run, spec, tmp_path):
    recipe = RerunRecipe.from_dict(spec)
    assert recipe == RerunRecipe.from_run(run) and recipe.to_dict() == spec
    assert recipe.config.policy == run.config.policy and recipe.expected == Hashes.of(run)
    assert recipe.attention_steps == (0, 1, 2) and recipe.steps_done == 3
    assert RerunRecipe.load(save_recipe(run, tmp_path / "spec.json")) == recipe
    assert RerunRecipe.load(tmp_path) == recipe  # a run folder holding spec.json
    with pytest.raises(AttributeError):
        recipe.complete = False  # frozen


def test_recipes_written_before_the_step_lists_load(spec):
    old = {"config": spec["config"], "complete": True, "expected": spec["expected"]}  # no version either
    recipe = RerunRecipe.from_dict(old)
    assert recipe.steps_done is None and recipe.attention_steps is None and recipe.complete
    assert recipe.expected.image == spec["expected"]["image_hash"]


def test_rerun_matches_from_the_spec_file(tmp_path, run):
    path = save_recipe(run, tmp_path / "spec.json")
    result = rerun(RerunRecipe.load(path))  # loads the model from the recipe's own source (the tiny folder)
    assert result.image_match is True and result.attention_match is True and result.match
    assert result.run.config.scheduler == "EulerDiscreteScheduler"
    assert "match" in result.summary() and "DIFFERS" not in result.summary()
    assert result.differences == {} and result.verdict() == ""


def test_rerun_reports_a_tampered_hash(tiny_pipe, spec):
    recipe = RerunRecipe.from_dict(_edited(spec, ("expected", "image_hash"), "0" * 64))
    result = rerun(recipe, model=tiny_pipe)
    assert result.image_match is False and result.attention_match is True and not result.match
    assert "DIFFERS" in result.summary()


def test_rerun_notices_a_different_setting(tiny_pipe, spec):
    result = rerun(
        RerunRecipe.from_dict(_edited(spec, ("config", "versions", "diffusers"), "0.0.1")), model=tiny_pipe
    )
    assert result.match and result.differences["diffusers version"][0] == "0.0.1"
    assert "same hashes, though the numerics differ (diffusers version 0.0.1 → " in result.summary()


def test_rerun_takes_only_a_recipe(tiny_pipe, spec):
    with pytest.raises(TypeError, match="needs a RerunRecipe"):
        rerun(spec, model=tiny_pipe)


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "does not exist"), ("{not json", "not a JSON spec"), ('{"a": 1}', "not a workbench re-run spec")],
)
def test_load_errors_are_clear(tmp_path, content, message):
    path = tmp_path / "spec.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(RecipeError, match=message) as err:
        RerunRecipe.load(path)
    assert err.value.field == "" and str(path) in str(err.value)


# Tampered recipes: each used to pass the old check and end in a TypeError or an AttributeError (some
# only after generating); each is now refused when read, naming the field.
TAMPERED = {
    "expected a list": (("expected",), [], "expected"),
    "image hash a number": (("expected", "image_hash"), 5, "expected.image_hash"),
    "complete a string": (("complete",), "no", "complete"),
    "steps_done a string": (("steps_done",), "3", "steps_done"),
    "attention_steps a string": (("attention_steps",), "0,1", "attention_steps"),
    "version a string": (("workbench_spec",), "1", "workbench_spec"),
    "versions a string": (("config", "versions"), "x", "config.versions"),
    "model a list": (("config", "model"), [], "config.model"),
    "model source a number": (("config", "model", "source"), 3, "config.model.source"),
    "numerics a list": (("config", "numerics"), [], "config.numerics"),
    "numerics versions a list": (("config", "numerics", "versions"), ["x"], "config.numerics.versions"),
    "scheduler config a string": (("config", "scheduler_config"), "x", "config.scheduler_config"),
    "scheduler not a scheduler": (("config", "scheduler"), "UNet2DConditionModel", "config.scheduler"),
    "dtype unknown": (("config", "dtype"), "int8", "config.dtype"),
    "seed a string": (("config", "seed"), "7", "config.seed"),
    "steps zero": (("config", "steps"), 0, "config.steps"),
    "policy heads": (("config", "policy", "heads"), 3, "config.policy.heads"),
    "policy a list": (("config", "policy"), [], "config.policy"),
    "config a list": (("config",), [], "config"),
    "huge width": (("config", "width"), 10**30, "config"),
}


@pytest.mark.parametrize("name", sorted(TAMPERED))
def test_tampered_recipes_are_refused_naming_the_field(spec, name):
    path, value, field = TAMPERED[name]
    with pytest.raises(RecipeError) as err:
        RerunRecipe.from_dict(_edited(spec, path, value))
    assert err.value.field == field
    assert str(err.value).startswith(f"the re-run spec: {field} ")


def test_cli_refuses_a_tampered_recipe_in_one_line(spec, tmp_path, capsys, monkeypatch):
    from workbench.core import loading

    monkeypatch.setattr(loading, "load_pipeline", lambda *a, **k: pytest.fail("loaded a model"))
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(_edited(spec, ("expected",), [])))
    with pytest.raises(SystemExit) as exit_info:
        main(["rerun", str(path)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err == f"workbench rerun: error: {path}: expected must be an object, got list\n"
