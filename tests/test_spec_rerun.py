"""Re-running where the recorded device is missing, an interrupted run, a re-run that fails, and what
the result says when the numerics differ."""

import json

import pytest
import torch

from workbench import generate
from workbench.cli import EXIT_FAILED, main
from workbench.core import loading
from workbench.core.numerics import machine_cores
from workbench.rerun import RerunFailedError, rerun
from workbench.store.recipe import RerunRecipe, save_recipe
from workbench.store.runs import attention_hash


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


def _recipe(run, edit=None) -> RerunRecipe:
    """The recipe of ``run``, its JSON form changed by ``edit(spec)`` first."""
    spec = json.loads(json.dumps(RerunRecipe.from_run(run).to_dict()))
    if edit is not None:
        edit(spec)
    return RerunRecipe.from_dict(spec)


def test_missing_recorded_device_falls_back_and_says_so(run, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    def on_cuda(spec):
        spec["config"]["device"], spec["config"]["dtype"] = "cuda:0", "float16"

    result = rerun(_recipe(run, on_cuda))  # loads the recipe's own source, the tiny folder
    assert result.run.config.device == "cpu" and result.run.config.dtype == "float32"
    assert result.differences["device"] == ("cuda:0", "cpu")
    assert any("'cuda:0' is not available here; re-ran on 'cpu' in float32" in n for n in result.notes)
    assert "re-ran on 'cpu'" in result.summary()
    # the run was recorded on CPU in float32 really, so the fallback reproduces it exactly
    assert result.image_match is True and result.attention_match is True


def test_an_asked_for_device_that_is_missing_is_an_error(run, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="device 'cuda' is not available"):
        rerun(_recipe(run), device="cuda")


def test_an_available_recorded_device_is_used_without_notes(run):
    result = rerun(_recipe(run))
    assert result.match and result.notes == [] and "device" not in result.differences


def test_incomplete_run_compares_the_steps_it_recorded(tiny_pipe, partial):
    assert not partial.complete and partial.steps_done == 2 and partial.image is None
    recipe = _recipe(partial)
    assert recipe.complete is False and recipe.attention_steps == (0, 1) and recipe.steps_done == 2
    result = rerun(recipe, model=tiny_pipe)
    assert result.run.complete and result.run.steps_done == 4  # regenerated in full
    for name, probs in partial.attention.probs.items():  # the recorded steps, bit for bit
        assert torch.equal(probs, result.run.attention.probs[name][:2])
    assert result.image_match is None and result.attention_match is True and result.match
    summary = result.summary()
    assert "recorded run was incomplete (2 of 4 steps)" in summary and "DIFFERS" not in summary
    assert result.actual.attention == attention_hash(partial.attention)


def test_incomplete_run_with_other_attention_differs(tiny_pipe, partial):
    recipe = _recipe(partial, lambda spec: spec["expected"].update(attention_hash="0" * 64))
    result = rerun(recipe, model=tiny_pipe)
    assert result.attention_match is False and not result.match


def test_incomplete_spec_without_its_step_list(tiny_pipe, partial):
    def as_before(spec):  # as specs written before these fields
        del spec["attention_steps"], spec["steps_done"]

    result = rerun(_recipe(partial, as_before), model=tiny_pipe)
    assert result.attention_match is True and "recorded run was incomplete" in result.summary()


def test_cli_rerun_of_an_incomplete_run_matches(partial, tmp_path, capsys):
    path = save_recipe(partial, tmp_path / "spec.json")
    assert json.loads(path.read_text())["complete"] is False
    assert main(["rerun", str(path)]) == 0
    out = capsys.readouterr().out
    assert "incomplete" in out and "MISMATCH" not in out and out.rstrip().endswith("MATCH")


# ------------------------------------------------------------------ a re-run that fails


@pytest.fixture
def nan_pipe(tiny_pipe):
    """The tiny pipeline with a denoiser whose output turns NaN (hook removed afterwards)."""

    def poison(module, args, output):
        output[0].fill_(float("nan"))

    handle = tiny_pipe.unet.register_forward_hook(poison)
    yield tiny_pipe
    handle.remove()


def test_a_rerun_whose_latents_turn_non_finite_fails(run, nan_pipe):
    with pytest.warns(UserWarning, match="generation failed"):
        with pytest.raises(RerunFailedError, match="non-finite") as err:
            rerun(_recipe(run), model=nan_pipe)
    assert err.value.run.failure.startswith("the latents turned non-finite (NaN or inf) at step 0")
    assert not err.value.run.complete


def test_cli_rerun_failure_is_its_own_exit_code_not_an_interrupt(
    run, nan_pipe, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(loading, "load_pipeline", lambda *a, **k: nan_pipe)
    path = save_recipe(run, tmp_path / "spec.json")
    with pytest.warns(UserWarning, match="generation failed"):
        code = main(["rerun", str(path)])
    captured = capsys.readouterr()
    assert code == EXIT_FAILED == 3
    assert captured.err == "workbench rerun: failed: the latents turned non-finite (NaN or inf) at step 0\n"
    assert "interrupted" not in captured.out + captured.err and "MATCH" not in captured.out


# ------------------------------------------------------------------ numerics


def test_same_numerics_and_other_hashes_is_a_real_mismatch(tiny_pipe, run):
    assert run.config.provenance.numerics["threads"] == 1  # the tests run torch on one thread
    result = rerun(_recipe(run, lambda spec: spec["expected"].update(image_hash="0" * 64)), model=tiny_pipe)
    assert not result.match and result.differences == {}
    assert result.summary().endswith("same numerics, hashes differ: the run did not reproduce")


def test_other_recorded_numerics_are_named_not_called_a_mismatch(tiny_pipe, run):
    def elsewhere(spec):
        spec["expected"]["image_hash"] = "0" * 64
        spec["config"]["numerics"]["threads"] = 2
        spec["config"]["numerics"]["attention_backend"] = "flash"

    result = rerun(_recipe(run, elsewhere), model=tiny_pipe)
    assert result.differences == {"threads": (2, 1), "attention_backend": ("flash", "native")}
    assert result.summary().splitlines()[-1] == (
        "different numerics (threads 2 → 1, attention_backend flash → native): bit-identity not promised; "
        "re-run with 2 torch threads to compare bit for bit"
    )
    assert "same numerics" not in result.summary()


def test_other_weights_are_a_difference(tiny_pipe, run):
    def other_weights(spec):
        spec["expected"]["attention_hash"] = "0" * 64
        spec["config"]["model"]["weights_sha256"] = "ab" * 32

    result = rerun(_recipe(run, other_weights), model=tiny_pipe)
    assert result.differences["model weights"][0] == "ab" * 6
    assert "different numerics (model weights abababababab → " in result.summary()


def test_a_recipe_without_numerics_says_they_are_not_known(tiny_pipe, run):
    def old(spec):
        spec["expected"]["image_hash"] = "0" * 64
        del spec["config"]["numerics"]

    result = rerun(_recipe(run, old), model=tiny_pipe)
    assert not result.numerics_recorded and result.differences == {}
    assert "predates numerics records" in result.summary() and "same numerics" not in result.summary()


@pytest.mark.skipif(machine_cores() < 2, reason="needs two cores to run on two threads")
def test_a_rerun_on_other_threads_names_them(tiny_pipe, run):
    before = torch.get_num_threads()
    result = rerun(_recipe(run), model=tiny_pipe, threads=2)
    assert torch.get_num_threads() == before  # put back
    assert result.run.config.provenance.numerics["threads"] == 2
    assert result.differences["threads"] == (1, 2)
    if not result.match:
        assert "different numerics (threads 1 → 2)" in result.summary()


def test_a_run_made_past_the_size_bound_reruns_at_its_size(tiny_pipe, tmp_path, capsys):
    """`generate --no-size-limit` made it (48x48 on a 16x16 model, over the 2x bound): a re-run makes the
    run at its recorded size, from Python and from the command line, which has no such option."""
    big = generate(
        tiny_pipe, "a red circle", seed=1, steps=2, height=48, width=48, size_limit=None, progress=False
    )
    assert big.image.size == (48, 48)
    result = rerun(RerunRecipe.from_run(big), model=tiny_pipe)
    assert result.match and result.run.image.size == (48, 48)
    assert result.actual.image == result.expected.image is not None
    spec = save_recipe(big, tmp_path / "spec.json")
    assert main(["rerun", str(spec)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "MATCH"
