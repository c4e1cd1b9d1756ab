"""SDXL, SD3 and Flux recorded like SD 1.x: tiny random-weight pipelines saved and loaded the real way,
non-square sizes; the recorded image equals the stock call's; every recorded probability equals a
reference softmax computed here from the module's own weights (norms and rotary included)."""

import sys

import numpy as np
import pytest
import torch
from tiny_cogview4 import build_cogview4_folder
from tiny_families import (
    build_chroma_folder,
    build_flux_folder,
    build_pixart_sigma_folder,
    build_sd3_folder,
    build_sdxl_folder,
)
from tiny_flux2 import build_flux2_folder, build_flux2_klein_folder
from tiny_qwen import build_qwenimage_folder
from tiny_sana import build_sana_folder
from tiny_zimage import build_z_image_folder

from workbench import RecordingPolicy, Request, generate, load_pipeline, record
from workbench.analysis import word_maps
from workbench.core.adapters import adapter_for
from workbench.core.policy import estimate_bytes

PROMPT = "a red circle left of a blue square"
FAMILIES = {
    # name: (builder, height, width, extra request fields)
    "sdxl": (build_sdxl_folder, 64, 96, {}),
    "sd3": (build_sd3_folder, 32, 48, {}),
    "flux": (build_flux_folder, 32, 48, {"true_cfg_scale": 2.0}),
    "pixart-sigma": (build_pixart_sigma_folder, 32, 48, {}),
    "chroma": (build_chroma_folder, 32, 48, {}),
    "qwen-image": (build_qwenimage_folder, 32, 48, {"true_cfg_scale": 4.0}),
    "sana": (build_sana_folder, 32, 64, {}),
    "sana-1.5": (lambda root: build_sana_folder(root, qk_norm="rms_norm_across_heads"), 32, 64, {}),
    "z-image": (build_z_image_folder, 32, 40, {}),  # 80 image tokens: the text starts after 96
    "flux2-klein": (build_flux2_klein_folder, 32, 48, {"negative_prompt": None}),  # CFG against ""
    "flux2": (build_flux2_folder, 32, 48, {"negative_prompt": None}),  # embedded guidance
    "cogview4": (build_cogview4_folder, 32, 48, {}),
}
UNIFIED = {"z-image"}  # one sequence, no text stream: text keys after the padded image
SEPARATE = {"flux", "chroma", "qwen-image", "flux2-klein", "cogview4"}
ROTARY = SEPARATE | {
    "flux2"
}  # Flux's rotary on [text | image]  # the negative branch is a second transformer call per step
CROSS = {"sdxl", "pixart-sigma", "sana", "sana-1.5"}  # cross-attention: the keys are the text alone
# what a direct pipeline call needs here (PixArt's default resolution binning knows only real sizes)
DIRECT = {name: {"use_resolution_binning": False} for name in ("pixart-sigma", "sana", "sana-1.5")}
OLD_CALLBACK = {"pixart-sigma"}  # callback(step, t, latents), no callback_on_step_end
TEXT_ENCODER = {
    "sdxl": "CLIP",
    "sd3": "CLIP",
    "flux": "T5",
    "pixart-sigma": "T5",
    "chroma": "T5",
    "qwen-image": "Qwen",
    "sana": "Gemma",
    "sana-1.5": "Gemma",
    "z-image": "Qwen3",
    "flux2-klein": "Qwen3",
    "flux2": "Mistral3",
    "cogview4": "GLM",
}  # the first one cut


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, tmp_path_factory):
    build, height, width, extra = FAMILIES[request.param]
    folder = build(tmp_path_factory.mktemp(request.param))
    pipe = load_pipeline(folder, device="cpu", dtype="float32")
    fields = {"negative_prompt": "green", **extra}
    req = Request(PROMPT, seed=5, steps=3, guidance_scale=4.0, height=height, width=width, **fields)
    return request.param, pipe, req


def _stock(pipe, req, output_type="np", hooks=()):
    handles = [module.register_forward_pre_hook(fn, with_kwargs=True) for module, fn in hooks]
    try:
        return pipe(
            prompt=req.prompt,
            num_inference_steps=req.steps,
            height=req.height,
            width=req.width,
            generator=torch.Generator().manual_seed(req.seed),
            output_type=output_type,
            **adapter_for(pipe).call_arguments(req),
        ).images
    finally:
        for h in handles:
            h.remove()


def test_recorded_image_and_latent_equal_stock(family):
    name, pipe, req = family
    run = generate(pipe, req, progress=False)
    image = _stock(pipe, req)[0]
    assert np.array_equal(np.asarray(run.image), (image * 255).round().astype("uint8"))
    latent = _stock(pipe, req, output_type="latent")
    adapter = adapter_for(pipe)
    if name == "flux2-klein":  # its latent output is the VAE's space: the batch-norm undone, unpatchified
        assert torch.equal(adapter.denormalize(run.latents[-1][None]), latent)
    else:
        assert torch.equal(run.latents[-1], adapter.unpack(latent, req.height, req.width)[0].float())
    # x0 at the last step is close to the final latent
    assert torch.allclose(run.x0[-1], run.latents[-1], atol=0.1 * run.latents[-1].abs().max().item())
    assert run.complete and run.config.provenance.model["pipeline"] == type(pipe).__name__


def _split_heads(x, heads):  # (B, S, H·D) -> (B, H, S, D)
    return x.unflatten(-1, (heads, -1)).transpose(1, 2)


def _rotate(
    x, freqs
):  # x (B, H, S, D); interleaved pairs rotated by (cos, sin) per position, written out here
    cos, sin = (f[None, None].to(x.dtype) for f in freqs)
    pairs = x.unflatten(-1, (-1, 2))
    rotated = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)
    return x * cos + rotated * sin


def _rotate_pairs(x, freqs):
    """x (B, H, S, D) with each interleaved channel pair turned by a complex frequency (S, D/2), the
    multiplication written out in real numbers (Qwen-Image's per-stream rotary)."""
    pairs = x.unflatten(-1, (-1, 2))
    a, b = pairs[..., 0], pairs[..., 1]
    c, s = freqs.real[None, None], freqs.imag[None, None]
    return torch.stack([a * c - b * s, a * s + b * c], dim=-1).flatten(-2)


def _joint_reference(attn, inputs, text_first, text_len=None):
    """Image-query × text-key block of the full joint softmax, from the module's weights: (B, H, N, T)."""
    hs, ehs, rope = (
        inputs["hidden_states"],
        inputs.get("encoder_hidden_states"),
        inputs.get("image_rotary_emb"),
    )
    h = attn.heads
    if hasattr(attn, "to_qkv_mlp_proj"):  # Flux.2's single stream: [q | k | v | mlp] from one projection
        fused, inner = attn.to_qkv_mlp_proj(hs), attn.inner_dim
        q, k = _split_heads(fused[..., :inner], h), _split_heads(fused[..., inner : 2 * inner], h)
    else:
        q, k = _split_heads(attn.to_q(hs), h), _split_heads(attn.to_k(hs), h)
    q, k = attn.norm_q(q), attn.norm_k(k)
    if ehs is not None:
        tq, tk = _split_heads(attn.add_q_proj(ehs), h), _split_heads(attn.add_k_proj(ehs), h)
        tq, tk = attn.norm_added_q(tq), attn.norm_added_k(tk)
        text_len = ehs.shape[1]
        if isinstance(rope, tuple) and rope[0].is_complex():  # Qwen-Image: (image, text) tables
            q, k = _rotate_pairs(q, rope[0]), _rotate_pairs(k, rope[0])
            tq, tk = _rotate_pairs(tq, rope[1]), _rotate_pairs(tk, rope[1])
            rope = None
        q = torch.cat([tq, q] if text_first else [q, tq], dim=2)
        k = torch.cat([tk, k] if text_first else [k, tk], dim=2)
    if rope is not None:
        q, k = _rotate(q, rope), _rotate(k, rope)
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5  # (B, H, S, S)
    mask = inputs.get("attention_mask")  # Chroma: a float 0/1 mask, which the kernel adds
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    kept = inputs.get("encoder_hidden_states_mask")  # Qwen-Image: text keys kept, in a batch of prompts
    if kept is not None:
        image = kept.new_ones(kept.shape[0], q.shape[2] - kept.shape[1])
        keys = torch.cat([kept, image] if text_first else [image, kept], dim=1).bool()
        scores = scores.masked_fill(~keys[:, None, None, :], float("-inf"))
    p = torch.softmax(scores, dim=-1)
    n = q.shape[2] - text_len
    return p[:, :, text_len:, :text_len] if text_first else p[:, :, :n, n:]


def _cogview_reference(attn, inputs):
    """CogView4: one q/k projection over [text | image], per-head LayerNorm, the rotary (two halves:
    x·cos + [-x₂, x₁]·sin) on the image tokens alone; image-query × text-key block: (B, H, N, T)."""
    text, image = inputs["encoder_hidden_states"], inputs["hidden_states"]
    t = text.shape[1]
    x = torch.cat([text, image], dim=1)
    q = attn.norm_q(_split_heads(attn.to_q(x), attn.heads))  # (B, H, S, D)
    k = attn.norm_k(_split_heads(attn.to_k(x), attn.heads))
    cos, sin = inputs["image_rotary_emb"]

    def turn(v):
        first, second = v.chunk(2, dim=-1)
        return v * cos + torch.cat([-second, first], dim=-1) * sin

    q = torch.cat([q[:, :, :t], turn(q[:, :, t:])], dim=2)
    k = torch.cat([k[:, :, :t], turn(k[:, :, t:])], dim=2)
    p = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)
    return p[:, :, t:, :t]


def _unified_reference(attn, inputs, layout, over_text: bool = False):
    """Z-Image: image rows × caption columns (caption pads included) of the softmax over the whole
    [image | image pad | caption | caption pad | batch pad] sequence, from the module's own weights, the
    complex rotary written out in real numbers and the boolean key mask: (B, H, N, T)."""
    n_image, captions = layout
    start = -(-n_image // 32) * 32
    text = max(-(-c // 32) * 32 for c in captions)
    x, freqs = inputs["hidden_states"], inputs["freqs_cis"]  # freqs (B, S, D/2) complex
    h = attn.heads
    q = attn.norm_q(attn.to_q(x).unflatten(-1, (h, -1))).transpose(1, 2)  # (B, H, S, D)
    k = attn.norm_k(attn.to_k(x).unflatten(-1, (h, -1))).transpose(1, 2)

    def turn(t):
        pairs = t.unflatten(-1, (-1, 2))
        a, b = pairs[..., 0], pairs[..., 1]
        c, s = freqs.real[:, None], freqs.imag[:, None]
        return torch.stack([a * c - b * s, a * s + b * c], dim=-1).flatten(-2)

    q, k = turn(q), turn(k)
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    mask = inputs.get("attention_mask")
    if mask is not None:
        scores = scores.masked_fill(~mask.bool()[:, None, None, :], float("-inf"))
    if over_text:  # a softmax over the caption keys alone
        return torch.softmax(scores[:, :, :n_image, start : start + text], dim=-1)
    return torch.softmax(scores, dim=-1)[:, :, :n_image, start : start + text]


def _cross_reference(attn, inputs):
    """softmax(QKᵀ/√d + mask) of a cross-attention layer from its own to_q/to_k and the additive mask it
    was given on the text keys (PixArt's T5 padding; none on a UNet): (B, H, N, T)."""
    hs, ehs = inputs["hidden_states"], inputs["encoder_hidden_states"]
    q, k = attn.to_q(hs), attn.to_k(ehs)
    if attn.norm_q is not None:  # Sana 1.5: one RMS norm over all heads, before they are split
        q, k = attn.norm_q(q), attn.norm_k(k)
    q, k = _split_heads(q, attn.heads), _split_heads(k, attn.heads)
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    mask = inputs.get("attention_mask")
    if mask is not None:  # (B, 1, T): one bias per text key, the same for every head and query
        scores = scores + mask[:, None]
    return torch.softmax(scores, dim=-1)


def test_every_probability_equals_a_reference_softmax(family):
    name, pipe, req = family
    adapter = adapter_for(pipe)
    policy = RecordingPolicy(heads="all", dtype="float32", negative=True)
    run = generate(pipe, req, policy=policy, progress=False)
    denoiser = adapter.denoiser
    calls: dict[str, list] = {layer: [] for layer in run.attention.probs}
    block_text: dict[str, list] = {layer: [] for layer in calls}
    hooks = []
    for layer in calls:
        attn = denoiser.get_submodule(layer)

        def keep(module, args, kwargs, layer=layer):
            names = ("hidden_states", "encoder_hidden_states", "attention_mask", "image_rotary_emb")
            calls[layer].append({**dict(zip(names, args)), **kwargs})

        hooks.append((attn, keep))
        if layer.startswith("single_"):
            block = denoiser.get_submodule(layer.removesuffix(".attn"))

            def text_of(module, args, kwargs, layer=layer):  # Chroma's single blocks get no text: the call's
                text = kwargs.get("encoder_hidden_states")
                block_text[layer].append(text.shape[1] if text is not None else call_text[-1])

            hooks.append((block, text_of))
    call_text: list[int] = []
    layouts: list[tuple[int, list[int]]] = []  # Z-Image: (image tokens, caption lengths) per call

    def call_of(module, args, kwargs):
        if name in UNIFIED:
            c, f, h, w = args[0][0].shape
            layouts.append((f * (h // 2) * (w // 2), [int(cap.shape[0]) for cap in args[2]]))
        else:
            call_text.append(kwargs["encoder_hidden_states"].shape[1])

    hooks.append((denoiser, call_of))
    with torch.no_grad():
        _stock(pipe, req, hooks=hooks)
        for layer, inputs in calls.items():
            attn = denoiser.get_submodule(layer)
            for step in range(req.steps):
                if name == "cogview4":  # a second call per step; the text joined inside the processor
                    refs = {"cond": inputs[2 * step], "uncond": inputs[2 * step + 1]}
                    ref = {b: _cogview_reference(attn, x)[0] for b, x in refs.items()}
                elif name in SEPARATE:  # the negative branch is a second call per step
                    refs = {"cond": inputs[2 * step], "uncond": inputs[2 * step + 1]}
                    texts = block_text[layer][2 * step : 2 * step + 2] if block_text[layer] else [None, None]
                    ref = {b: _joint_reference(attn, x, True, t)[0] for (b, x), t in zip(refs.items(), texts)}
                elif name == "flux2":  # one call per step (guidance embedded), [text | image]
                    t = block_text[layer][step] if block_text[layer] else None
                    ref = {"cond": _joint_reference(attn, inputs[step], True, t)[0]}
                elif name in UNIFIED:  # batch [cond | uncond], the layout from the transformer's inputs
                    full = _unified_reference(attn, inputs[step], layouts[step])
                    ref = {"cond": full[0], "uncond": full[1]}
                else:
                    full = (
                        _cross_reference(attn, inputs[step])
                        if name in CROSS
                        else _joint_reference(attn, inputs[step], False)
                    )  # batch [uncond | cond]
                    ref = {"uncond": full[0], "cond": full[1]}
                got = {"cond": run.attention.probs[layer][step]}
                if run.negative_attention is not None:
                    got["uncond"] = run.negative_attention.probs[layer][step]
                assert set(got) == set(ref), (name, sorted(got), sorted(ref))
                for branch in ref:
                    assert got[branch].shape == ref[branch].shape, (layer, branch)
                    err = (got[branch] - ref[branch]).abs().max().item()
                    assert err <= 1e-5, f"{name} {layer} step {step} {branch}: max error {err:.2e}"
    # attention is not uniform: the test would catch a wrong slice
    some = next(iter(run.attention.probs.values()))
    over_text = some / some.sum(dim=-1, keepdim=True)  # joint attention: the text's share, renormalised
    assert over_text.amax().item() > 2.5 / some.shape[-1]


def test_grids_budget_and_words(family):
    name, pipe, req = family
    adapter = adapter_for(pipe)
    policy = RecordingPolicy(negative=True)
    if name == "flux2":
        with pytest.warns(UserWarning, match="no negative branch"):
            run = generate(pipe, req, policy=policy, progress=False)
    else:
        run = generate(pipe, req, policy=policy, progress=False)
    h, w = adapter.latent_hw(req.height, req.width)
    assert tuple(run.latents.shape[-2:]) == (h, w) and h != w
    for layer, (rows, cols) in run.attention.shapes.items():
        assert run.attention.probs[layer].shape[2] == rows * cols and rows != cols
        assert rows / cols == pytest.approx(req.height / req.width)
    text_keys = next(iter(run.attention.probs.values())).shape[-1]
    assert len(run.tokens[run.tokens.kind != "cut"]) == text_keys  # every key position has a row
    steps = run.steps_done
    one = RecordingPolicy()  # a branch's bytes; each branch has as many text keys as its own prompt
    if name == "flux2":  # guidance embedded: there is no negative branch to record (and it is said)
        assert run.negative_attention is None
        assert run.attention.nbytes() == estimate_bytes(one, adapter.layers(), (h, w), text_keys, steps)
        return
    negative_keys = next(iter(run.negative_attention.probs.values())).shape[-1]
    assert negative_keys == (len(run.negative_tokens) if name == "qwen-image" else text_keys)
    est = sum(estimate_bytes(one, adapter.layers(), (h, w), t, steps) for t in (text_keys, negative_keys))
    assert est == estimate_bytes(policy, adapter.layers(), (h, w), text_keys, steps) or name == "qwen-image"
    assert run.attention.nbytes() + run.negative_attention.nbytes() == est
    maps = word_maps(run, "all-mean")
    assert maps.words[:3] == ["a", "red", "circle"] and maps.maps.shape[-2:] == (req.height, req.width)
    assert maps.maps.flatten(1).std(dim=0).mean() > 0  # words get different maps


def test_text_tables_per_encoder(family):
    name, pipe, req = family
    run = generate(pipe, req, steps=1, progress=False)
    table = run.tokens
    if name == "sd3":
        assert table.encoder.unique().tolist() == ["CLIP", "T5"]
        for encoder in ("CLIP", "T5"):  # the same words, aligned in each encoder's positions
            part = table[(table.encoder == encoder) & (table.kind == "word")]
            assert part.drop_duplicates("word_index").word.tolist() == PROMPT.split()
        t5 = table[table.encoder == "T5"]
        assert (t5.kind == "pad").sum() > 0 and t5.position.min() == 16
    elif name == "qwen-image":  # the prompt's tokens, then the chat template's closing tokens
        assert set(table.encoder) == {"Qwen"}
        words = table[table.kind == "word"]
        assert words.drop_duplicates("word_index").word.tolist() == PROMPT.split()
        assert table.kind.tolist()[-5:] == ["template"] * 5 and (table.kind == "pad").sum() == 0
        assert next(iter(run.attention.probs.values())).shape[-1] == len(table)
    elif name == "cogview4":  # pads in front to a multiple of 16, GLM's two special tokens, the words
        assert set(table.encoder) == {"GLM"} and len(table) % 16 == 0
        n = len(PROMPT.split())
        assert table.kind.tolist()[-n - 2 :] == ["template"] * 2 + ["word"] * n
        assert set(table.kind.tolist()[: -n - 2]) <= {"pad"}
    elif name in ("flux2-klein", "flux2"):  # the chat template, padded to 512 unmasked keys
        assert set(table.encoder) == {TEXT_ENCODER[name]} and len(table) == 512
        assert table[table.kind == "word"].drop_duplicates("word_index").word.tolist() == PROMPT.split()
        assert (table.kind == "template").sum() > 0 and (table.kind == "pad").sum() > 0
    elif name == "z-image":  # chat template around the prompt, caption pads to a multiple of 32
        assert set(table.encoder) == {"Qwen3"}
        kinds = table.kind.tolist()
        n = len(PROMPT.split())
        assert kinds[:3] == ["template"] * 3 and kinds[3 : 3 + n] == ["word"] * n
        assert kinds[3 + n : 8 + n] == ["template"] * 5 and len(table) % 32 == 0
        assert table[table.kind == "word"].drop_duplicates("word_index").word.tolist() == PROMPT.split()
    elif name in ("sana", "sana-1.5"):  # BOS, the prompt (lower-cased), padding masked out of the keys
        assert set(table.encoder) == {"Gemma"} and table.kind.iloc[0] == "bos"
        words = table[table.kind == "word"]
        assert words.drop_duplicates("word_index").word.tolist() == PROMPT.split()
        assert len(table) == 300 and (table.kind == "pad").sum() == 300 - 1 - len(PROMPT.split())
        probs = next(iter(run.attention.probs.values()))
        assert probs[..., table.kind.to_numpy() == "pad"].abs().max() < 1e-6
    elif name in ("flux", "pixart-sigma", "chroma"):
        assert set(table.encoder) == {"T5"} and table.kind.iloc[len(PROMPT.split())] == "eos"
        words = table[table.kind == "word"]
        assert words.drop_duplicates("word_index").word.tolist() == PROMPT.split()
        if name == "pixart-sigma":  # padding to 300 positions, masked out of the keys
            assert len(table) == 300 and (table.kind == "pad").sum() == 300 - len(PROMPT.split()) - 1
            probs = next(iter(run.attention.probs.values()))
            assert probs[..., table.kind.to_numpy() == "pad"].abs().max() < 1e-6
    else:
        assert table.kind.iloc[0] == "bos"


def test_cut_warning_names_the_encoder(family):
    name, pipe, req = family
    long = " ".join(["a red circle left of a blue square"] * 6)
    encoder = TEXT_ENCODER[name]
    extra = ({} if name == "sdxl" else {"max_sequence_length": 32}) | DIRECT.get(name, {})
    with pytest.warns(UserWarning, match=f"{encoder} text encoder's limit"):
        with record(pipe, progress=False):
            pipe(prompt=long, num_inference_steps=1, height=req.height, width=req.width, **extra)


def test_observers_removed_after_an_error(family):
    name, pipe, req = family
    denoiser = adapter_for(pipe).denoiser
    before = {n: (m.processor if hasattr(m, "processor") else None) for n, m in denoiser.named_modules()}

    def boom(p, step, t, kwargs):
        raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        with record(pipe, RecordingPolicy(heads="all"), progress=False):
            pipe(
                prompt=PROMPT,
                num_inference_steps=2,
                height=req.height,
                width=req.width,
                **(
                    {"callback": lambda step, t, latents: boom(pipe, step, t, {})}
                    if name in OLD_CALLBACK
                    else {"callback_on_step_end": boom}
                ),
                **DIRECT.get(name, {}),
            )
    for n, m in denoiser.named_modules():
        if hasattr(m, "processor"):
            assert m.processor is before[n], n
            module = sys.modules[type(m.processor).__module__]
            kernel = getattr(module, "dispatch_attention_fn", None)
            assert kernel is None or not hasattr(kernel, "__wrapped__"), n  # the original is back
        assert not m._forward_hooks and not m._forward_pre_hooks and "forward" not in vars(m), n
    again = generate(pipe, req, steps=1, progress=False)
    assert again.complete


def test_step_model_and_integrated_gradients(family):
    from workbench.analysis import integrated_gradients
    from workbench.core.step_model import StepModel

    name, pipe, req = family
    run = generate(pipe, req, policy=RecordingPolicy(dtype="float32"), progress=False)
    if name in UNIFIED:  # its transformer takes the captions as a list: refused by name, not half done
        with pytest.raises(NotImplementedError, match="not built for Z-Image"):
            integrated_gradients(pipe, run, step=1, n_steps=8)
        return
    model = StepModel(pipe, run, 1)
    with torch.no_grad():
        x0 = model.x0(model.embeds)
    assert (x0[0] - run.x0[1]).abs().max().item() < 1e-4  # the replayed step reproduces the recorded x0
    ig = integrated_gradients(pipe, run, step=1, n_steps=8, internal_batch_size=4)
    assert len(ig.tokens) == len(run.tokens[run.tokens.kind != "cut"])  # one attribution per key position
    assert ig.output_baseline == pytest.approx(0.0, abs=1e-5) and ig.output_input > 0
    total = ig.tokens.attribution.sum()
    assert total - (ig.output_input - ig.output_baseline) == pytest.approx(ig.delta, abs=1e-4)


def test_report_rerun_app_and_studies(family, tmp_path):
    from workbench.analysis import change_curves, filmstrip, permutations
    from workbench.report import report
    from workbench.rerun import rerun
    from workbench.store.recipe import RerunRecipe
    from workbench.store.runs import load_run, save_run
    from workbench.widgets import AttentionExplorer, GenerateApp

    name, pipe, req = family
    run = generate(pipe, req, steps=2, progress=False)
    strip = filmstrip(pipe, run)  # decoded as the family decodes: the last frame is the image
    assert np.array_equal(strip.latent[-1], np.asarray(run.image))
    assert len(change_curves(run)) == run.steps_done
    swapped = permutations(req.prompt, kind="relation")[1]
    other = generate(pipe, req.replace(prompt=swapped, steps=2), progress=False)
    path = report([run, other], tmp_path / "report.html", quiet=True)
    assert path.stat().st_size > 0 and type(pipe).__name__ in path.read_text()
    result = rerun(RerunRecipe.from_run(run), model=pipe)
    assert result.match and result.image_match and result.attention_match
    app = GenerateApp(pipe, prompt=req.prompt, seed=req.seed, steps=2)
    app.height.value, app.width.value = req.height, req.width
    made = app.run_sync()
    assert app.error is None and made is not None and made.complete
    # saved and loaded back the same: tensors, token tables (template and pad rows too), image
    loaded = load_run(save_run(run, tmp_path / "saved"))
    assert loaded.tokens.equals(run.tokens) and loaded.negative_tokens.equals(run.negative_tokens)
    for layer, probs in run.attention.probs.items():
        assert torch.equal(loaded.attention.probs[layer], probs)
    assert np.array_equal(np.asarray(loaded.image), np.asarray(run.image))
    explorer = AttentionExplorer(loaded)  # the app on the reloaded run: every offered recipe draws
    for preset in explorer.preset.options:
        explorer.preset.value = preset
        assert explorer.error is None and explorer.figure is not None, (preset, explorer.error)


def _spying(processor, log: list):
    """A processor of the stock one's class and signature that notes the arguments it is given."""
    import functools
    import inspect

    base = type(processor)
    signature = inspect.signature(base.__call__)

    @functools.wraps(base.__call__)  # the stock signature, which the attention module filters by
    def call(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs).arguments
        log.append(tuple(sorted(k for k, v in bound.items() if v is not None and k not in ("self", "attn"))))
        return base.__call__(self, *args, **kwargs)

    spy = type(f"Spying{base.__name__}", (base,), {"__call__": call})()
    spy.__dict__.update(processor.__dict__)
    return spy


def test_processors_untouched_and_every_argument_reaches_them(family):
    """Recording only hooks: the processor objects stay installed during the call and receive every
    argument they receive unrecorded (Flux's image_rotary_emb included), so kwargs and kernels are stock."""
    name, pipe, req = family
    adapter = adapter_for(pipe)
    modules = {layer.name: adapter.denoiser.get_submodule(layer.name) for layer in adapter.layers()}
    stock = {n: m.processor for n, m in modules.items()}
    plain, recorded = [], []
    try:
        for n, m in modules.items():
            m.processor = _spying(stock[n], plain)
        _stock(pipe, req.replace(steps=2))
        for n, m in modules.items():
            m.processor = _spying(stock[n], recorded)
        spies = {n: m.processor for n, m in modules.items()}
        during = []

        def check(p, step, t, kwargs):
            during.append(all(modules[n].processor is spies[n] for n in modules))
            return kwargs

        with record(pipe, RecordingPolicy(heads="all"), progress=False):
            pipe(
                prompt=req.prompt,
                num_inference_steps=2,
                height=req.height,
                width=req.width,
                generator=torch.Generator().manual_seed(req.seed),
                **(
                    {"callback": lambda step, t, latents: check(pipe, step, t, {})}
                    if name in OLD_CALLBACK
                    else {"callback_on_step_end": check}
                ),
                **adapter.call_arguments(req),
            )
    finally:
        for n, m in modules.items():
            m.processor = stock[n]
    assert during and all(during)  # the installed processors were never swapped out
    text = "freqs_cis" if name in UNIFIED else "encoder_hidden_states"  # Z-Image: text in the one sequence
    assert recorded == plain and any(text in a for a in recorded)
    if name in ROTARY:
        assert all("image_rotary_emb" in a for a in recorded)


def test_renormalised_over_text_is_a_softmax_over_text_alone(family):
    from workbench.analysis import over_text, text_share

    name, pipe, req = family
    policy = RecordingPolicy(heads="all", dtype="float32")
    run = generate(pipe, req, steps=1, policy=policy, progress=False)
    layer = next(iter(run.attention.probs))
    share = text_share(run.attention)[layer]
    renorm = over_text(run).attention.probs[layer]
    assert torch.allclose(renorm.sum(-1), torch.ones_like(share), atol=1e-5)
    if name in CROSS:  # cross-attention: the keys are all text already
        assert torch.allclose(share, torch.ones_like(share), atol=1e-5)
        assert torch.allclose(renorm, run.attention.probs[layer], atol=1e-6)
        return
    assert share.max() < 1 - 1e-4  # joint attention: part of each row went to image keys
    # a softmax over the text keys alone, from the module's own Q and K
    inputs = {}
    attn = adapter_for(pipe).denoiser.get_submodule(layer)
    if name in UNIFIED:
        denoiser, layout = adapter_for(pipe).denoiser, []

        def keep_layout(module, args, kwargs):
            c, f, h, w = args[0][0].shape
            layout.append((f * (h // 2) * (w // 2), [int(cap.shape[0]) for cap in args[2]]))

        def keep_x(module, args, kwargs):
            inputs.setdefault("x", {"hidden_states": args[0], **kwargs})

        with torch.no_grad():
            _stock(pipe, req.replace(steps=1), hooks=[(denoiser, keep_layout), (attn, keep_x)])
            ref = _unified_reference(attn, inputs["x"], layout[0], over_text=True)
        assert (renorm[0] - ref[0]).abs().max().item() <= 1e-5  # [cond | uncond]: row 0 is the prompt's
        return

    def keep(module, args, kwargs):
        inputs.setdefault("x", {**dict(zip(("hidden_states", "encoder_hidden_states"), args)), **kwargs})

    with torch.no_grad():
        _stock(pipe, req.replace(steps=1), hooks=[(attn, keep)])
        x = inputs["x"]
        h = attn.heads
    if name == "cogview4":  # the joint block renormalised over its text keys: a softmax over them alone
        with torch.no_grad():
            joint = _cogview_reference(attn, x)
        ref = joint / joint.sum(dim=-1, keepdim=True)
        assert (renorm[0] - ref[-1]).abs().max().item() <= 1e-5
        return
    with torch.no_grad():
        q = attn.norm_q(_split_heads(attn.to_q(x["hidden_states"]), h))
        tk = attn.norm_added_k(_split_heads(attn.add_k_proj(x["encoder_hidden_states"]), h))
        if name == "qwen-image":
            img_f, txt_f = x["image_rotary_emb"]
            q = _rotate_pairs(q, img_f)
            tk = _rotate_pairs(tk, txt_f)
        elif name in ROTARY:
            k_img = attn.norm_k(_split_heads(attn.to_k(x["hidden_states"]), h))
            tq = attn.norm_added_q(_split_heads(attn.add_q_proj(x["encoder_hidden_states"]), h))
            t = tk.shape[2]
            q = _rotate(torch.cat([tq, q], dim=2), x["image_rotary_emb"])[:, :, t:]
            tk = _rotate(torch.cat([tk, k_img], dim=2), x["image_rotary_emb"])[:, :, :t]
        scores = q @ tk.transpose(-1, -2) / q.shape[-1] ** 0.5  # (B, H, N, T)
        mask = x.get("attention_mask")  # Chroma's padding mask, added to the scores: its text columns
        if mask is not None:
            t = tk.shape[2]
            scores = scores + mask[:, :, t:, :t]
        ref = torch.softmax(scores, dim=-1)
    cond = ref[-1]  # the conditional row of the batch
    assert (renorm[0] - cond).abs().max().item() <= 1e-5


@pytest.mark.parametrize("preset", ["all-mean", "daam", "p2p", "amd", "dit-word-share"])
def test_every_preset_gives_maps_or_a_clear_refusal(family, preset):
    from workbench.analysis import token_maps

    name, pipe, req = family
    run = generate(pipe, req, steps=2, policy=RecordingPolicy(heads="all"), progress=False)
    unet_only, dit_only = preset in ("daam", "p2p"), preset == "dit-word-share"
    # PixArt and Sana: transformers; Z-Image has no dual-stream transformer_blocks for dit-word-share
    refused = (unet_only and name != "sdxl") or (dit_only and name in ("sdxl", "z-image"))
    if refused:
        with pytest.raises(ValueError, match="layers|UNet|joint|transformer"):
            word_maps(run, preset)
        return
    maps = word_maps(run, preset).expand(run)
    assert maps.maps.shape[-2:] == (req.height, req.width) and torch.isfinite(maps.maps).all()
    assert maps.maps.flatten(1).std(dim=0).mean() > 0
    assert len(token_maps(run, preset).positions) == len(run.tokens[run.tokens.kind != "cut"])


def test_cancel_keeps_the_steps_done_on_every_family(family):
    """Cancel ends the call after the current step, whether the pipeline has ``interrupt`` or not
    (PixArt-Σ's loop has none: the next denoiser call is stopped instead); the steps done are kept."""
    import threading

    name, pipe, req = family
    cancel = threading.Event()

    def on_step(step, x0, latent):
        if step == 1:
            cancel.set()

    with pytest.warns(UserWarning, match="stopped after 2 of 4 steps"):
        run = generate(pipe, req.replace(steps=4), cancel=cancel, on_step=on_step, progress=False)
    assert not run.complete and run.steps_done == 2 and run.image is None
    assert next(iter(run.attention.probs.values())).shape[0] == 2
    for m in adapter_for(pipe).denoiser.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and "forward" not in vars(m)
    assert generate(pipe, req.replace(steps=1), progress=False).complete


def test_scores_formed_in_blocks_give_the_same_probabilities(family, monkeypatch):
    """Scores are formed a few heads or query rows at a time (and deferred cross-attention a few layer-steps
    at a time); blocks of one query row of one head, or of one layer-step, give the same probabilities up
    to float32 rounding (a product formed row by row rounds differently)."""
    from workbench.core import attention

    name, pipe, req = family
    policy = RecordingPolicy(heads="all", dtype="float32", negative=True)
    whole = generate(pipe, req.replace(steps=2), policy=policy, progress=False)
    monkeypatch.setattr(attention, "CPU_BLOCK_BYTES", 1)
    monkeypatch.setattr(attention, "CPU_STACK_BYTES", 1)
    blocks = generate(pipe, req.replace(steps=2), policy=policy, progress=False)
    pairs = [(whole.attention, blocks.attention)]
    if whole.negative_attention is not None:
        pairs.append((whole.negative_attention, blocks.negative_attention))
    for a, b in pairs:
        assert list(a.probs) == list(b.probs)
        for layer in a.probs:
            err = (a.probs[layer] - b.probs[layer]).abs().max().item()
            assert err <= 4e-6, f"{name} {layer}: {err:.2e}"  # float32 rounding: a matrix product by rows


KERNEL = {"flux", "chroma", "qwen-image", "flux2", "flux2-klein"}  # processors calling dispatch_attention_fn


def test_q_and_k_read_from_the_kernel_equal_q_and_k_formed_again(family, monkeypatch):
    """Where the processor hands q and k to ``dispatch_attention_fn``, the recording reads them there
    (every recorded layer and step) instead of forming them again; both give the same probabilities, bit for bit,
    and the module's own function is back after the call."""
    from workbench.core import dispatch, joint

    name, pipe, req = family
    policy = RecordingPolicy(heads="all", dtype="float32", negative=True)
    reads = []
    original = joint.JointObserver._from_kernel
    monkeypatch.setattr(
        joint.JointObserver, "_from_kernel", lambda o, rows: reads.append(1) or original(o, rows)
    )
    read = generate(pipe, req.replace(steps=2), policy=policy, progress=False)
    branches = 1 + (read.negative_attention is not None)
    assert len(reads) == (2 * len(read.attention.probs) * branches if name in KERNEL else 0)
    monkeypatch.setattr(dispatch, "watch", lambda processor: None)
    formed = generate(pipe, req.replace(steps=2), policy=policy, progress=False)
    pairs = [(read.attention, formed.attention)]
    if read.negative_attention is not None:
        pairs.append((read.negative_attention, formed.negative_attention))
    for a, b in pairs:
        for layer in a.probs:
            assert torch.equal(a.probs[layer], b.probs[layer]), f"{name} {layer}"
    for m in adapter_for(pipe).denoiser.modules():
        if hasattr(m, "processor"):
            kernel = getattr(sys.modules[type(m.processor).__module__], "dispatch_attention_fn", None)
            assert kernel is None or not hasattr(kernel, "__wrapped__")
