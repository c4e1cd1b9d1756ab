"""Training pieces: the explicit-probability processor, the attention loss on the core's layer grids,
checkpoints, and a tiny end-to-end run that exports the EMA weights as a pipeline diffusers loads and runs."""

import json

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import load_file

from workbench.core.adapters import MODEL_DEFAULTS_FILE
from workbench.core.layers import CrossAttentionLayer, cross_attention_layers
from workbench.core.numerics import machine_cores
from workbench.toy.attention import ProbsSink, install, restore
from workbench.toy.checkpoint import load_checkpoint, save_checkpoint
from workbench.toy.models import ModelConfig, build_unet
from workbench.toy.train import Batch, attention_loss, main


@pytest.fixture(autouse=True)
def two_threads():
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)


def _tiny_unet(seed: int = 0):
    torch.manual_seed(seed)
    unet = build_unet(ModelConfig.tiny())
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.05 * torch.randn_like(p))  # break the zero-initialised output layers
    return unet


def test_probability_processor_reproduces_the_stock_output_and_restores():
    unet = _tiny_unet()
    x, text = torch.randn(2, 4, 8, 12), torch.randn(2, 20, 32)  # (B, C, h, w) not square, (B, T, D)
    with torch.no_grad():
        stock = unet(x, 500, text).sample
    originals = dict(unet.attn_processors)
    sink = ProbsSink()
    saved = install(unet, sink)
    with torch.no_grad():
        ours = unet(x, 500, text).sample
    restore(unet, saved)
    assert torch.allclose(stock, ours, atol=1e-5)
    layers = cross_attention_layers(unet)
    assert set(sink.probs) == {layer.name for layer in layers}
    for layer in layers:
        p = sink.probs[layer.name]  # (B, heads, queries, tokens)
        rows, cols = layer.grid(8, 12)
        assert p.shape == (2, layer.heads, rows * cols, 20)
        assert torch.allclose(p.sum(-1), torch.ones(p.shape[:-1]), atol=1e-5)
    assert {k: type(v) for k, v in unet.attn_processors.items()} == {k: type(v) for k, v in originals.items()}


def _batch_with_masks(latent_w: int = 8) -> Batch:
    """One sample on an 8 x latent_w latent (a 32 x 4*latent_w image); tokens 1 and 3 name objects 0 and 1."""
    masks = torch.zeros(1, 2, 32, 4 * latent_w)
    masks[0, 0, 8:16, 0:8] = 1  # object 0: 2x2 cells of the latent grid
    masks[0, 1, 16:32, 16:32] = 1  # object 1: 4x4 cells
    token_obj = torch.full((1, 5), -1)
    token_obj[0, 1], token_obj[0, 3] = 0, 1
    return Batch(
        latents=torch.zeros(1, 4, 8, latent_w),
        ids=torch.zeros(1, 5, dtype=torch.long),
        token_obj=token_obj,
        masks=masks,
    )


@pytest.mark.parametrize("latent_w", [8, 16])
def test_attention_loss_is_zero_for_maps_equal_to_the_masks_and_positive_otherwise(latent_w):
    batch = _batch_with_masks(latent_w)
    layers = [CrossAttentionLayer("l", heads=2, factor=0)]  # queries on the full 8 x latent_w grid
    cells = 8 * latent_w
    pooled = torch.nn.functional.adaptive_avg_pool2d(batch.masks, (8, latent_w)).flatten(2)  # (1, 2, cells)
    perfect = torch.full((1, 2, cells, 5), 1e-9)  # (B, heads, queries, tokens)
    perfect[0, :, :, 1] = pooled[0, 0] / pooled[0, 0].sum()
    perfect[0, :, :, 3] = pooled[0, 1] / pooled[0, 1].sum()
    uniform = torch.full((1, 2, cells, 5), 1 / 5)
    assert attention_loss({"l": perfect}, layers, batch).item() == pytest.approx(0.0, abs=1e-4)
    # uniform over all cells vs masks on 4 and 16 cells: KL = log(cells/4) and log(cells/16), averaged
    expected = (np.log(cells / 4) + np.log(cells / 16)) / 2
    assert attention_loss({"l": uniform}, layers, batch).item() == pytest.approx(expected, rel=1e-3)
    # the grid comes from the layer and the latent's size, so a map on another grid is refused
    with pytest.raises(ValueError, match="grid"):
        attention_loss({"l": uniform[:, :, : cells // 2]}, layers, batch)


def test_attention_loss_on_the_training_processors_goes_down_when_trained():
    """The loss the training loop uses, on a real tiny UNet with a non-square latent: its grids come from
    the layers, gradients reach the attention, and a few optimizer steps on a fixed batch reduce it."""
    unet = _tiny_unet(3)
    layers = cross_attention_layers(unet)
    batch = _batch_with_masks(16)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 8, 16, generator=gen)  # (B, C, h, w)
    text = torch.randn(1, 5, 32, generator=gen)  # (B, T, D)
    sink = ProbsSink()
    originals = install(unet, sink)
    opt = torch.optim.Adam(unet.parameters(), lr=3e-3)
    losses = []
    try:
        for _ in range(6):
            sink.clear()
            unet(x, 500, text)
            loss = attention_loss(sink.probs, layers, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    finally:
        restore(unet, originals)
    assert set(sink.probs) == {layer.name for layer in layers}
    assert losses[-1] < 0.8 * losses[0], losses


def test_checkpoint_round_trip(tmp_path):
    unet = _tiny_unet(1)
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-3)
    unet(torch.randn(1, 4, 8, 8), 10, torch.randn(1, 20, 32)).sample.square().mean().backward()
    opt.step()
    save_checkpoint(tmp_path, {"unet": unet}, opt, {"step": 7, "phase": "diffusion"})
    other = _tiny_unet(2)
    opt2 = torch.optim.AdamW(other.parameters(), lr=1e-3)
    meta = load_checkpoint(tmp_path, {"unet": other}, opt2)
    assert meta["step"] == 7
    for a, b in zip(unet.state_dict().values(), other.state_dict().values()):
        assert torch.equal(a, b)
    s1, s2 = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert all(torch.equal(s1[i]["exp_avg"], s2[i]["exp_avg"]) for i in s1)
    assert load_checkpoint(tmp_path / "missing", {"unet": other}) is None


def test_tiny_training_run_exports_a_pipeline_that_generates(tmp_path):
    out, ckpt, logs = tmp_path / "weights", tmp_path / "ckpt", tmp_path / "logs"
    args = ["--tiny", "--out", str(out), "--ckpt-dir", str(ckpt), "--log-dir", str(logs)]
    assert main(args) == 0
    log = (logs / "train.log").read_text()
    assert "step 3 loss" in log and "done: 3 steps" in log
    info = json.loads((out / "training.json").read_text())
    assert info["steps"] == 3 and info["config"]["tiny"] is True
    assert sorted(p.name for p in (out / "tokenizer").iterdir()) == [
        "merges.txt",
        "special_tokens_map.json",
        "tokenizer_config.json",
        "vocab.json",
    ]
    pipe = StableDiffusionPipeline.from_pretrained(out)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.safety_checker is None
    # the pipeline ships the EMA weights of the last checkpoint, bit for bit, not the raw trained ones
    saved = load_file(str(ckpt / "ckpt.safetensors"))
    for shipped, ema, raw in ((pipe.unet, "ema_unet", "unet"), (pipe.text_encoder, "ema_text", "text")):
        weights = shipped.state_dict()
        assert {f"{ema}.{k}" for k in weights} <= set(saved)
        assert all(torch.equal(v, saved[f"{ema}.{k}"]) for k, v in weights.items())
        assert not all(torch.equal(v, saved[f"{raw}.{k}"]) for k, v in weights.items())
    image = pipe(
        "a red circle left of a blue square",
        num_inference_steps=3,
        guidance_scale=4.0,
        height=32,
        width=32,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images[0]
    assert image.shape == (32, 32, 3) and np.isfinite(image).all()
    # resuming continues from the checkpoint instead of starting over; the model's declared generation
    # defaults survive the new export
    (out / MODEL_DEFAULTS_FILE).write_text('{"guidance_scale": 4.0}')
    assert main([*args, "--steps", "4"]) == 0
    assert json.loads((out / "training.json").read_text())["steps"] == 4
    assert "resumed from" in (logs / "train.log").read_text()
    assert json.loads((out / MODEL_DEFAULTS_FILE).read_text()) == {"guidance_scale": 4.0}
    assert torch.get_num_threads() == 2  # the run's threads are the caller's again afterwards


@pytest.mark.parametrize("threads", [0, machine_cores() + 1, 100_000])
def test_threads_are_bounded_by_the_machine_before_any_work(tmp_path, capsys, threads):
    logs = tmp_path / "logs"
    argv = ["--tiny", "--out", str(tmp_path / "w"), "--ckpt-dir", str(tmp_path / "c"), "--log-dir", str(logs)]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--threads", str(threads)])
    assert exit_info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.endswith(
        f"error: --threads must be in 1..{machine_cores()} (the CPU cores this machine gives), got {threads}"
    )
    assert not logs.exists() and not (tmp_path / "c").exists()  # nothing was started
