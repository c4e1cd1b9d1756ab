"""The toy-dit trainer: its T5 word tokenizer, the flow objective against the sampling scheduler, the
joint-attention supervision against a softmax of Q·Kᵀ written out here, and a tiny end-to-end run that
checkpoints, resumes and exports a FluxPipeline the workbench loads and records."""

import json

import numpy as np
import pytest
import torch
from diffusers import FluxPipeline
from safetensors.torch import load_file
from transformers import T5TokenizerFast

import workbench
from workbench.core.adapters import MODEL_DEFAULTS_FILE, adapter_for
from workbench.toy import WEIGHTS_DIR as TOY_WEIGHTS_DIR
from workbench.toy.dit.models import DitConfig, build_scheduler, build_transformer, save_t5_tokenizer
from workbench.toy.dit.train import (
    DitBatch,
    JointProbs,
    attention_loss,
    joint_layers,
    main,
    observe_joint,
    position_ids,
    remove_all,
    t5_token_objects,
)
from workbench.toy.world import all_words, sample_scene

PROMPT = "a red circle left of a blue square"


@pytest.fixture(autouse=True)
def two_threads():
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)


def test_every_world_word_is_one_t5_token_and_object_words_map_to_their_object(tmp_path):
    tok = T5TokenizerFast.from_pretrained(save_t5_tokenizer(tmp_path / "t5", 24))
    for word in all_words():
        assert tok.convert_ids_to_tokens(tok(word).input_ids) == [f"\u2581{word}", "</s>"]
    scene = sample_scene(np.random.default_rng(4), p_single=0.0, p_style=1.0, p_size=1.0)
    ids = tok(scene.caption, padding="max_length", max_length=24).input_ids
    objects = t5_token_objects(tok, scene, ids)
    assert len(objects) == 24 and len(scene.caption.split()) + 1 <= 24
    for j, obj in enumerate(scene.objects):
        named = sorted(obj.word_indices.values())  # size, colour, shape: one token per word
        assert [i for i, o in enumerate(objects) if o == j] == named
    assert sum(o >= 0 for o in objects) == 6


def test_the_flow_target_is_what_the_pipelines_euler_step_integrates():
    """x_t = (1 - s) x0 + s eps with velocity eps - x0: one scheduler step from the exact velocity lands
    on the next sigma's interpolant, and the transformer's timestep (pipeline timestep / 1000) is s."""
    sched = build_scheduler(DitConfig())
    sigmas = np.linspace(1.0, 1 / 10, 10)  # as FluxPipeline passes them
    sched.set_timesteps(sigmas=sigmas, mu=0.0)
    gen = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(1, 64, 16, generator=gen), torch.randn(1, 64, 16, generator=gen)
    for i, t in enumerate(sched.timesteps):  # each step from the exact interpolant at its sigma
        s, s_next = sched.sigmas[i], sched.sigmas[i + 1]
        assert (t / 1000).item() == pytest.approx(s.item(), abs=1e-6)
        x_next = sched.step(eps - x0, t, (1 - s) * x0 + s * eps, return_dict=False)[0]
        assert torch.allclose(x_next, (1 - s_next) * x0 + s_next * eps, atol=1e-5)
    assert sched.sigmas[-1] == 0 and torch.allclose(x_next, x0, atol=1e-5)


def _small_transformer():
    torch.manual_seed(0)
    cfg = DitConfig.tiny()
    cfg.dit_layers, cfg.dit_single_layers = 1, 1
    transformer = build_transformer(cfg)
    with torch.no_grad():  # sharper than the initial near-uniform attention
        for name, p in transformer.named_parameters():
            if any(k in name for k in ("to_q.", "to_k.", "add_q_proj.", "add_k_proj.")):
                p.mul_(4.0)
    return transformer


def _rotate(x, cos, sin):
    """x (B, H, S, D): consecutive pairs (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin) per position."""
    pairs = x.unflatten(-1, (-1, 2))
    turned = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)
    return x * cos + turned * sin


def _by_hand_probs(attn, inputs, text_len):
    """Image-query × text-key block of softmax(Q Kᵀ / √d) over [text | image] keys: (B, H, N, T)."""
    heads = attn.heads

    def split(x):  # (B, S, H·D) -> (B, H, S, D)
        return x.unflatten(-1, (heads, -1)).transpose(1, 2)

    hs, ehs = inputs["hidden_states"], inputs.get("encoder_hidden_states")
    q, k = attn.norm_q(split(attn.to_q(hs))), attn.norm_k(split(attn.to_k(hs)))
    if ehs is not None:
        tq = attn.norm_added_q(split(attn.add_q_proj(ehs)))
        tk = attn.norm_added_k(split(attn.add_k_proj(ehs)))
        q, k = torch.cat([tq, q], dim=2), torch.cat([tk, k], dim=2)
    cos, sin = inputs["image_rotary_emb"]
    q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
    p = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)  # (B, H, S, S)
    return p[:, :, text_len:, :text_len]


def _by_hand_loss(maps, token_obj, masks):
    """KL(mask pooled to 8x8 cells and normalised || map normalised over the cells), mean over heads and
    named tokens: maps (B, H, 64, T), token_obj (B, T), masks (B, 2, 32, 32)."""
    cells = masks.reshape(*masks.shape[:2], 8, 4, 8, 4).mean((3, 5)).flatten(2)  # (B, 2, 64)
    total, count = 0.0, 0
    for b, t in zip(*torch.nonzero(token_obj >= 0, as_tuple=True)):
        target = cells[b, token_obj[b, t]] / cells[b, token_obj[b, t]].sum()
        on = target > 0
        for h in range(maps.shape[1]):
            m = maps[b, h, :, t] / maps[b, h, :, t].sum()
            total += (target[on] * (target[on] / m[on]).log()).sum()
            count += 1
    return total / count


def test_attention_supervision_equals_a_softmax_of_q_k_written_out():
    transformer = _small_transformer()
    gen = torch.Generator().manual_seed(1)
    b, text_len = 2, 6
    x = torch.randn(b, 64, 16, generator=gen)  # packed 16x16x4 latent: 8x8 tokens
    text = torch.randn(b, text_len, 32, generator=gen)
    pooled = torch.randn(b, 32, generator=gen)
    img_ids, txt_ids = position_ids((16, 16), text_len, "cpu")
    masks = torch.zeros(b, 2, 32, 32)
    masks[:, 0, 4:20, 0:12] = 1  # object 0 straddles cells (fractional pooling)
    masks[0, 1, 16:30, 18:32] = 1
    token_obj = torch.tensor([[-1, 0, 0, -1, 1, 1], [0, -1, 0, -1, -1, -1]])
    batch = DitBatch(torch.zeros(b, 4, 16, 16), torch.zeros(b, text_len), token_obj, masks, torch.zeros(b, 4))
    inputs: dict[str, dict] = {}

    def keep(name):
        def hook(module, args, kwargs):
            inputs[name] = kwargs

        return hook

    layers = joint_layers(transformer)
    assert [layer.name for layer in layers] == [
        "transformer_blocks.0.attn",
        "single_transformer_blocks.0.attn",
    ]
    hooks = [
        transformer.get_submodule(n).register_forward_pre_hook(keep(n), with_kwargs=True)
        for n in ("transformer_blocks.0.attn", "single_transformer_blocks.0.attn")
    ]
    call = dict(
        hidden_states=x,
        timestep=torch.full((b,), 0.7),
        pooled_projections=pooled,
        encoder_hidden_states=text,
        txt_ids=txt_ids,
        img_ids=img_ids,
        return_dict=False,
    )
    with torch.no_grad():
        stock = transformer(**call)[0]
    sink = JointProbs()
    handles = observe_joint(transformer, sink)
    out = transformer(**call)[0]
    loss = attention_loss(sink.probs, layers, batch)
    remove_all(handles + hooks)
    assert torch.equal(out, stock)  # the stock processors compute the output
    with torch.no_grad():
        dual = _by_hand_probs(
            transformer.transformer_blocks[0].attn, inputs["transformer_blocks.0.attn"], text_len
        )
        single = _by_hand_probs(
            transformer.single_transformer_blocks[0].attn,
            inputs["single_transformer_blocks.0.attn"],
            text_len,
        )
    assert torch.allclose(sink.probs["transformer_blocks.0.attn"], dual, atol=1e-6)
    assert torch.allclose(sink.probs["single_transformer_blocks.0.attn"], single, atol=1e-6)
    expected = (_by_hand_loss(dual, token_obj, masks) + _by_hand_loss(single, token_obj, masks)) / 2
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)
    assert 0.5 < loss.item() < 10
    loss.backward()  # the supervision reaches both blocks' query projections
    assert transformer.transformer_blocks[0].attn.to_q.weight.grad.abs().sum() > 0
    assert transformer.single_transformer_blocks[0].attn.to_q.weight.grad.abs().sum() > 0


def _check_export(out, ckpt, steps):
    info = json.loads((out / "training.json").read_text())
    assert info["steps"] == steps and info["config"]["tiny"] is True
    assert info["generation"]["max_sequence_length"] == DitConfig.tiny().t5_length
    meta = json.loads((ckpt / "ckpt.json").read_text())
    assert meta["step"] == steps and meta["phase"] == "diffusion"
    assert json.loads((out / MODEL_DEFAULTS_FILE).read_text()) == {
        "guidance_scale": 1.0,
        "size": 32,
        "max_sequence_length": DitConfig.tiny().t5_length,
        "true_cfg_scale": 2.0,
        "negative_prompt": "",
    }
    shipped = load_file(str(out / "transformer" / "diffusion_pytorch_model.safetensors"))
    saved = load_file(str(ckpt / "ckpt.safetensors"))
    assert all(torch.equal(v, saved[f"ema_transformer.{k}"]) for k, v in shipped.items())  # EMA, bit for bit
    assert not all(torch.equal(v, saved[f"transformer.{k}"]) for k, v in shipped.items())
    return meta


def test_tiny_run_resumes_and_exports_a_flux_pipeline_the_workbench_records(tmp_path):
    out, ckpt, logs = tmp_path / "weights", tmp_path / "ckpt", tmp_path / "logs"
    args = ["--tiny", "--out", str(out), "--ckpt-dir", str(ckpt), "--log-dir", str(logs)]
    assert main(args) == 0
    log = (logs / "train.log").read_text()
    assert "vae done" in log and "step 3 loss" in log and "done: 3 steps" in log
    meta = _check_export(out, ckpt, 3)
    assert main([*args, "--steps", "5"]) == 0  # a second invocation continues from the checkpoint
    log = (logs / "train.log").read_text()
    assert "resumed from" in log and "step 4 loss" in log and "done: 5 steps" in log
    assert log.count("vae done") == 1
    _check_export(out, ckpt, 5)

    toy_vocab = TOY_WEIGHTS_DIR / "tokenizer" / "vocab.json"
    if toy_vocab.exists():  # the CLIP side is the toy model's tokenizer, ids and all
        assert (out / "tokenizer" / "vocab.json").read_text() == toy_vocab.read_text()
    pipe = workbench.load_pipeline(out)
    assert isinstance(pipe, FluxPipeline) and pipe.vae_scale_factor == 2
    assert pipe.vae.config.shift_factor == 0.0
    assert pipe.vae.config.scaling_factor == pytest.approx(meta["vae"]["scaling_factor"])
    tc = pipe.transformer.config
    assert tc.num_layers >= 2 and tc.num_single_layers >= 2 and tc.guidance_embeds is False
    run = workbench.generate(pipe, PROMPT, seed=0, steps=10, height=32, width=32, progress=False)
    names = [layer.name for layer in joint_layers(pipe.transformer)]
    assert [layer.name for layer in adapter_for(pipe).layers()] == names
    assert list(run.attention.shapes) == names
    assert set(run.attention.shapes.values()) == {(8, 8)}
    assert any(n.startswith("single_") for n in names) and any(n.startswith("transformer_") for n in names)
    for name in names:
        probs = run.attention.probs[name]  # (steps, 1, 64 image queries, text keys)
        assert probs.shape[:3] == (10, 1, 64) and torch.isfinite(probs.float()).all()
    assert np.asarray(run.image).shape == (32, 32, 3)
