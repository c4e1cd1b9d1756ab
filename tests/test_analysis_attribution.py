"""Captum attributions: the step model reproduces the recorded x0; IG is complete; occlusion regenerates."""

import numpy as np
import pytest
import torch
from test_analysis_fakes import one_thread  # noqa: F401  (autouse fixture)

from workbench import RecordingPolicy, generate
from workbench.analysis import attribution_vs_attention, integrated_gradients, occlusion
from workbench.analysis.attribution import StepModel, encode

PROMPT = "a red circle left of a blue square"


@pytest.fixture(scope="module")
def guided_run(tiny_pipe):
    return generate(
        tiny_pipe,
        PROMPT,
        seed=7,
        steps=3,
        guidance_scale=4.0,
        progress=False,
        policy=RecordingPolicy(dtype="float32"),
    )


def test_step_model_reproduces_recorded_x0(tiny_pipe, guided_run):
    for step in (0, 2):
        model = StepModel(tiny_pipe, guided_run, step)
        with torch.no_grad():
            x0 = model.x0(encode(tiny_pipe, PROMPT))
        assert (x0[0] - guided_run.x0[step]).abs().max().item() < 1e-4
    with pytest.raises(ValueError, match="step must be an int in 0..2"):
        StepModel(tiny_pipe, guided_run, 3)


@pytest.mark.parametrize("scheduler", ["euler", "dpm++"])
def test_step_model_for_sigma_and_multistep_schedulers(tiny_pipe, scheduler):
    run = generate(
        tiny_pipe,
        "a red circle",
        seed=1,
        steps=3,
        guidance_scale=3.0,
        scheduler=scheduler,
        progress=False,
        policy=RecordingPolicy(record_attention=False),
    )
    for step in range(3):
        with torch.no_grad():
            x0 = StepModel(tiny_pipe, run, step).x0(encode(tiny_pipe, "a red circle"))
        assert (x0[0] - run.x0[step]).abs().max().item() < 1e-4


def test_integrated_gradients_completeness(tiny_pipe, guided_run):
    region = np.zeros((16, 16), dtype=bool)
    region[:8, :8] = True
    ig = integrated_gradients(tiny_pipe, guided_run, step=1, region=region, n_steps=16)
    total = ig.tokens.attribution.sum()
    assert ig.output_baseline == pytest.approx(0.0, abs=1e-5)
    assert ig.output_input > 0
    # captum's delta is sum(attr) - (f(input) - f(baseline)); f computed independently here
    assert total - (ig.output_input - ig.output_baseline) == pytest.approx(ig.delta, abs=1e-4)
    assert abs(ig.delta) < 0.05 * ig.output_input
    assert ig.words.attribution.sum() == pytest.approx(total, rel=1e-5)
    assert ig.words.label.tolist()[:8] == ["a#1", "red", "circle", "left", "of", "a#2", "blue", "square"]
    assert ig.words.kind.tolist()[-3:] == ["bos", "eos", "pad"]
    cmp = attribution_vs_attention(ig, guided_run)
    assert len(cmp) == 8 and set(cmp.rank_attention) <= set(np.arange(1, 9, 0.5))
    r = cmp[["rank_attribution", "rank_attention"]].corr().iloc[0, 1]
    assert cmp.attrs["spearman"] == pytest.approx(r)
    assert "step 1" in cmp.attrs["aggregation"] or "steps 1" in cmp.attrs["aggregation"]
    with pytest.raises(ValueError, match="region is empty"):
        integrated_gradients(tiny_pipe, guided_run, step=1, region=np.zeros((16, 16)))


def test_occlusion_x0_and_image(tiny_pipe, guided_run):
    occ = occlusion(tiny_pipe, guided_run, target="x0", step=2)
    assert len(occ.words) == 8 and (occ.words.attribution >= 0).all() and occ.words.attribution.max() > 0
    # occluding 'red' by hand: its token replaced by padding
    model = StepModel(tiny_pipe, guided_run, 2)
    from workbench.analysis.attribution import token_ids

    ids = token_ids(tiny_pipe, PROMPT)
    pos = guided_run.tokens[guided_run.tokens.word == "red"].position.tolist()
    occluded = ids.clone()
    occluded[0, pos] = tiny_pipe.tokenizer.pad_token_id
    with torch.no_grad():
        diff = model.x0(encode(tiny_pipe, ids=occluded)) - model.x0(encode(tiny_pipe, ids=ids))
    assert occ.words.set_index("label").attribution["red"] == pytest.approx(
        diff.pow(2).mean().sqrt().item(), rel=1e-5
    )
    img = occlusion(tiny_pipe, guided_run, target="image", words=["red"])
    assert img.reference_matches_run is True
    assert img.words.label.tolist() == ["red"] and img.words.attribution.iloc[0] > 0
    with pytest.raises(ValueError, match="\\['green'\\] are not in the prompt"):
        occlusion(tiny_pipe, guided_run, step=0, words=["green"])
    with pytest.raises(ValueError, match="target='x0' needs step"):
        occlusion(tiny_pipe, guided_run, target="x0")
