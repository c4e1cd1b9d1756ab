"""Recorded attention equals an independent softmax(Q·Kᵀ·scale) from the layer's own projections."""

import pytest
import torch

from workbench import BudgetError, RecordingPolicy, generate
from workbench.core.attention import attention_probs
from workbench.core.policy import estimate_bytes

PROMPT = "a yellow triangle below a green circle"


def capture_inputs(pipe, layer):
    """Forward pre-hook on one attention module: its (hidden_states, encoder_hidden_states) per call."""
    module = pipe.unet.get_submodule(layer)
    calls = []

    def hook(mod, args, kwargs):
        hs = args[0] if args else kwargs["hidden_states"]
        ctx = kwargs.get("encoder_hidden_states", args[1] if len(args) > 1 else None)
        calls.append((hs.detach().clone(), ctx.detach().clone()))

    return module, calls, module.register_forward_pre_hook(hook, with_kwargs=True)


@pytest.mark.parametrize("guidance", [1.0, 6.0])
def test_attention_matches_reference_softmax(tiny_pipe, guidance):
    layers = [n.removesuffix(".processor") for n in tiny_pipe.unet.attn_processors if "attn2" in n]
    policy = RecordingPolicy(heads="all", dtype="float32")
    hooks = [capture_inputs(tiny_pipe, name) for name in layers]
    try:
        run = generate(
            tiny_pipe, PROMPT, seed=2, steps=3, guidance_scale=guidance, policy=policy, progress=False
        )
    finally:
        for _, _, handle in hooks:
            handle.remove()
    for name, (module, calls, _) in zip(layers, hooks):
        assert len(calls) == 3
        for step, (hs, ctx) in enumerate(calls):
            row = hs.shape[0] - 1  # the conditional image is the last batch row
            q = hs[row] @ module.to_q.weight.T  # (queries, inner); to_q has no bias in SD
            k = ctx[row] @ module.to_k.weight.T  # (tokens, inner)
            heads = module.heads
            d = q.shape[-1] // heads
            q = q.view(-1, heads, d).transpose(0, 1)  # (heads, queries, d)
            k = k.view(-1, heads, d).transpose(0, 1)  # (heads, tokens, d)
            ref = torch.softmax(q @ k.transpose(1, 2) / d**0.5, dim=-1)  # (heads, queries, tokens)
            got = run.attention.probs[name][step]
            # the fallback path (for processors that never call to_q/to_k) agrees too
            fallback = attention_probs(module, hs[row : row + 1], ctx[row : row + 1])[0]
            assert (fallback - ref).abs().max().item() <= 1e-5
            assert got.shape == ref.shape
            assert (got - ref).abs().max().item() <= 1e-5
            assert torch.allclose(got.sum(-1), torch.ones(()), atol=1e-5)


def test_head_mean_and_fp16_policy(tiny_pipe):
    full = generate(
        tiny_pipe,
        PROMPT,
        seed=4,
        steps=2,
        policy=RecordingPolicy(heads="all", dtype="float32"),
        progress=False,
    )
    mean = generate(tiny_pipe, PROMPT, seed=4, steps=2, progress=False)
    for name, p in mean.attention.probs.items():
        assert p.dtype == torch.float16 and p.shape[1] == 1
        ref = full.attention.probs[name].mean(dim=1, keepdim=True)
        assert (p.float() - ref).abs().max().item() < 2e-3


def test_negative_branch_recorded(tiny_pipe):
    run = generate(
        tiny_pipe,
        PROMPT,
        negative_prompt="a blue square",
        seed=4,
        steps=2,
        guidance_scale=5.0,
        policy=RecordingPolicy(negative=True, dtype="float32"),
        progress=False,
    )
    assert run.negative_attention is not None
    name = next(iter(run.attention.probs))
    neg, pos = run.negative_attention.probs[name], run.attention.probs[name]
    assert torch.allclose(neg.sum(-1), torch.ones(()), atol=1e-5)
    assert not torch.allclose(neg, pos)
    assert run.negative_tokens.word.tolist()[1:4] == ["a", "blue", "square"]


def test_policy_filters_steps_and_layers(tiny_pipe):
    policy = RecordingPolicy(steps=[0, 2], layers=["4x4"])
    run = generate(tiny_pipe, PROMPT, seed=1, steps=3, policy=policy, progress=False)
    assert run.attention.steps == [0, 2]
    assert list(run.attention.probs) == ["mid_block.attentions.0.transformer_blocks.0.attn2"]
    assert run.attention.probs["mid_block.attentions.0.transformer_blocks.0.attn2"].shape == (2, 1, 16, 16)


def test_bytes_equal_estimate(tiny_pipe):
    from workbench.core.adapters import adapter_for

    adapter = adapter_for(tiny_pipe)
    for policy in (RecordingPolicy(), RecordingPolicy(heads="all", dtype="float32", steps=[1, 3])):
        run = generate(tiny_pipe, PROMPT, seed=1, steps=4, guidance_scale=3.0, policy=policy, progress=False)
        est = estimate_bytes(policy, adapter.layers(), adapter.latent_hw(16, 16), adapter.text_limit, 4)
        assert run.attention.nbytes() == est


def test_budget_checked_before_generation(tiny_pipe):
    policy = RecordingPolicy(heads="all", dtype="float32", budget_bytes=20_000)
    calls = []
    with pytest.raises(BudgetError) as err:
        generate(
            tiny_pipe,
            PROMPT,
            seed=1,
            steps=4,
            policy=policy,
            progress=False,
            on_step=lambda *a: calls.append(a),
        )
    msg = str(err.value)
    assert "MB" in msg and "heads" in msg and "fit" in msg
    assert calls == []  # nothing ran


def test_non_square_grid(tiny_pipe):
    run = generate(tiny_pipe, PROMPT, seed=1, steps=2, height=16, width=32, progress=False)
    assert run.image.size == (32, 16)
    for name, (h, w) in run.attention.shapes.items():
        assert run.attention.probs[name].shape[2] == h * w
    assert run.attention.shapes["down_blocks.0.attentions.0.transformer_blocks.0.attn2"] == (8, 16)
    assert run.attention.grid("down_blocks.0.attentions.0.transformer_blocks.0.attn2").shape[2:4] == (8, 16)


def test_head_counts_kept_with_the_store(tiny_pipe, tmp_path):
    from workbench import load_run, save_run
    from workbench.core.adapters import adapter_for

    run = generate(tiny_pipe, PROMPT, seed=1, steps=2, progress=False)
    layers = {layer.name: layer.heads for layer in adapter_for(tiny_pipe).layers()}
    assert run.attention.head_counts == layers and len(set(layers.values())) >= 1
    assert load_run(save_run(run, tmp_path / "r")).attention.head_counts == layers


def _flushes(monkeypatch) -> list[int]:
    """How many deferred layer-steps each flush of the sink computes (empty flushes left out)."""
    from workbench.core.attention import AttentionSink

    sizes, original = [], AttentionSink.flush

    def counted(self, before=None):
        if self.pending:
            sizes.append(len(self.pending))
        return original(self, before)

    monkeypatch.setattr(AttentionSink, "flush", counted)
    return sizes


def test_deferred_attention_is_the_same_computed_per_step_or_per_call(tiny_pipe, monkeypatch):
    from workbench.core import attention
    from workbench.core.attention import AttentionSink

    policy = RecordingPolicy(heads="all", dtype="float32", negative=True, steps=[0, 1, 3])
    sizes = _flushes(monkeypatch)
    once = generate(tiny_pipe, PROMPT, seed=3, steps=4, guidance_scale=6.0, policy=policy, progress=False)
    assert sizes == [3 * 4]  # kept steps x layers (both branches in each), in one computation
    sizes.clear()
    monkeypatch.setattr(AttentionSink, "FLUSH_BYTES", 1)
    each = generate(tiny_pipe, PROMPT, seed=3, steps=4, guidance_scale=6.0, policy=policy, progress=False)
    assert sizes == [4] * 3  # every kept step on its own
    monkeypatch.setattr(AttentionSink, "FLUSH_BYTES", 2**40)
    monkeypatch.setattr(attention, "CPU_STACK_BYTES", 1)  # one layer-step's scores at a time
    single = generate(tiny_pipe, PROMPT, seed=3, steps=4, guidance_scale=6.0, policy=policy, progress=False)
    assert once.attention.steps == each.attention.steps == single.attention.steps == [0, 1, 3]
    for a, b, c in (
        (once.attention, each.attention, single.attention),
        (once.negative_attention, each.negative_attention, single.negative_attention),
    ):
        assert list(a.probs) == list(b.probs) == list(c.probs) and len(a.probs) == 4
        for name in a.probs:
            assert torch.equal(a.probs[name], b.probs[name]) and torch.equal(a.probs[name], c.probs[name])
    assert not torch.equal(once.attention.probs[name][0], once.attention.probs[name][2])


def test_an_interrupt_inside_a_step_keeps_the_deferred_attention_of_the_steps_done(tiny_pipe):
    policy = RecordingPolicy(heads="all", dtype="float32")
    full = generate(tiny_pipe, PROMPT, seed=4, steps=4, policy=policy, progress=False)
    layer = "mid_block.attentions.0.transformer_blocks.0.attn2"  # after the down blocks' layers
    calls = []

    def interrupt(module, args, output):
        calls.append(1)
        if len(calls) == 3:  # inside the third step, with a down block's layer already deferred
            raise KeyboardInterrupt

    handle = tiny_pipe.unet.get_submodule(layer).register_forward_hook(interrupt)
    try:
        with pytest.warns(UserWarning, match="stopped after 2 of 4 steps"):
            cut = generate(tiny_pipe, PROMPT, seed=4, steps=4, policy=policy, progress=False)
    finally:
        handle.remove()
    assert not cut.complete and cut.attention.steps == [0, 1]
    for name, probs in cut.attention.probs.items():
        assert probs.shape[0] == 2
        assert torch.equal(probs, full.attention.probs[name][:2])


def test_an_interrupt_inside_a_flush_loses_no_kept_step(tiny_pipe, monkeypatch):
    from workbench.core.attention import AttentionSink

    policy = RecordingPolicy(heads="all", dtype="float32")
    full = generate(tiny_pipe, PROMPT, seed=6, steps=4, policy=policy, progress=False)
    monkeypatch.setattr(  # flush when two steps wait: the interrupted flush holds step 0, which is kept
        AttentionSink, "flush_if_due", lambda self: len({it[1] for it in self.pending}) >= 2 and self.flush()
    )
    original, calls = AttentionSink._compute, []

    def interrupted(self, items):
        calls.append(len(items))
        if len(calls) == 1:
            raise KeyboardInterrupt
        return original(self, items)

    monkeypatch.setattr(AttentionSink, "_compute", interrupted)
    with pytest.warns(UserWarning, match="stopped after 1 of 4 steps"):
        cut = generate(tiny_pipe, PROMPT, seed=6, steps=4, policy=policy, progress=False)
    assert calls[0] == 2 * 4  # steps 0 and 1 of every layer were being computed
    assert cut.attention.steps == [0]
    for name, probs in cut.attention.probs.items():
        assert torch.equal(probs, full.attention.probs[name][:1])


def test_fused_projections_record_each_step_with_its_own_keys(tiny_pipe):
    """A fused processor calls ``to_q`` and ``to_kv``, never ``to_k``: every step is computed from the
    layer's inputs, and projections recomputed for one step are never taken for the next."""
    policy = RecordingPolicy(heads="all", dtype="float32", negative=True)
    plain = generate(tiny_pipe, PROMPT, seed=7, steps=3, guidance_scale=6.0, policy=policy, progress=False)
    tiny_pipe.fuse_qkv_projections(unet=True, vae=False)
    try:
        fused = generate(
            tiny_pipe, PROMPT, seed=7, steps=3, guidance_scale=6.0, policy=policy, progress=False
        )
    finally:
        tiny_pipe.unfuse_qkv_projections(unet=True, vae=False)
    for a, b in ((plain.attention, fused.attention), (plain.negative_attention, fused.negative_attention)):
        assert list(a.probs) == list(b.probs)
        for name in a.probs:
            assert (a.probs[name] - b.probs[name]).abs().max().item() <= 1e-5, name
    assert not torch.allclose(plain.attention.probs[name], plain.negative_attention.probs[name])
