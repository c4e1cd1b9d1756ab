"""Both embedded models meet the evaluation's bar on their shipped weights (seed 0 of every evaluation
caption), toy-dit loads by name as a stock FluxPipeline with dual- and single-stream blocks, and its
folder's declared true CFG reaches the request and the stock call."""

import numpy as np
import pytest
import torch
from diffusers import FluxPipeline

from workbench import Request, generate, load_pipeline
from workbench.core.adapters import adapter_for
from workbench.toy.catalog import EMBEDDED
from workbench.toy.evaluate import HELD_IN, generate_samples, layer_iou, score, specs_for
from workbench.toy.world import HELD_OUT

DIT = EMBEDDED["toy-dit"]
pytestmark = pytest.mark.skipif(
    not all(m.available() for m in EMBEDDED.values()), reason="embedded weights not exported"
)


@pytest.fixture(scope="module")
def dit():
    pipe = load_pipeline("toy-dit")
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module", params=sorted(EMBEDDED))
def evaluated(request):
    """Seed 0 of every held-in and held-out caption (24 each), scored as the evaluation scores."""
    model = EMBEDDED[request.param]
    pipe = load_pipeline(model.name)
    fields = {model.guidance_field: model.guidance}
    out = {}
    for name, layouts in (("held-in", HELD_IN), ("held-out", HELD_OUT)):
        samples = generate_samples(pipe, specs_for(layouts), [0], fields, per_layer=name == "held-in")
        out[name] = (score(samples), samples)
    return model, out


def test_each_embedded_model_meets_the_bar(evaluated):
    model, out = evaluated
    for name, (r, _) in out.items():
        assert r["images"] == 24 and r["swap_pairs"] == 12
        for key in ("object_acc", "relation_acc", "swap_flip"):
            assert r[key] >= 0.95, f"{model.name} {name} {key} {r[key]:.3f}"
        for key in ("iou_color", "iou_shape"):
            assert r[key] >= 0.5, f"{model.name} {name} {key} {r[key]:.3f}"


def test_every_block_of_toy_dit_localises_words(evaluated):
    model, out = evaluated
    blocks = layer_iou(out["held-in"][1])
    if model.name == "toy":
        assert list(blocks.layer) == ["8x8", "4x4"]  # the UNet's two cross-attention resolutions
        return
    assert list(blocks.layer) == ["dual 0", "dual 1", "single 0", "single 1", "single 2", "single 3"]
    assert (blocks[["iou_color", "iou_shape"]] >= 0.5).all().all(), blocks


def test_toy_dit_is_a_stock_flux_pipeline_within_30_mb(dit):
    assert type(dit) is FluxPipeline
    t = dit.transformer
    assert len(t.transformer_blocks) == 2 and len(t.single_transformer_blocks) == 4
    assert type(dit.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"
    files = [p for p in DIT.weights.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 30 * 2**20
    assert not [p for p in files if p.suffix in (".bin", ".pt", ".pth", ".pkl")]


def test_declared_true_cfg_fills_a_request_and_reaches_the_stock_call(dit):
    adapter = adapter_for(dit)
    filled = Request("a red circle left of a blue square", 0).for_model(adapter)
    assert (filled.true_cfg_scale, filled.negative_prompt, filled.height) == (2.0, "", 32)
    off = Request("a red circle", 0, true_cfg_scale=1.0).for_model(adapter)
    assert (off.true_cfg_scale, off.negative_prompt) == (1.0, None)  # asked off: stays off
    assert adapter.call_arguments(off) == {"guidance_scale": 1.0, "max_sequence_length": 24}
    run = generate(dit, "a green triangle above a yellow circle", seed=3, steps=4, progress=False)
    assert (run.config.request.true_cfg_scale, run.config.negative_prompt) == (2.0, "")
    stock = dit(
        "a green triangle above a yellow circle",
        num_inference_steps=4,
        height=32,
        width=32,
        max_sequence_length=24,
        negative_prompt="",
        true_cfg_scale=2.0,
        generator=torch.Generator().manual_seed(3),
        output_type="np",
    ).images[0]
    assert np.array_equal(np.asarray(run.image), (stock * 255).round().astype("uint8"))


def test_the_apps_take_toy_dit_and_show_its_true_cfg(dit):
    from workbench.widgets import AttentionExplorer, GenerateApp

    app = GenerateApp(dit, steps=3)
    assert app.true_cfg.layout.display is None and app.true_cfg.value == 2.0  # shown, at the folder's value
    run = app.run_sync()
    assert app.error is None and run.config.request.true_cfg_scale == 2.0 and run.config.negative_prompt == ""
    app.true_cfg.value = 1.0  # off: one transformer call per step, no negative branch
    off = app.run_sync()
    assert off.config.request.true_cfg_scale == 1.0 and off.config.negative_prompt is None
    explorer = AttentionExplorer(run)
    assert explorer.error is None  # the joint-attention run's maps draw
    unet = GenerateApp(load_pipeline("toy"), steps=2)
    assert unet.true_cfg.layout.display == "none"  # a UNet guides with guidance_scale alone
    assert unet.params()["true_cfg_scale"] is None
