"""Edits: validated values, and ``editing`` checked against independent computations on a tiny UNet."""

import json
import math
from types import SimpleNamespace

import pytest
import torch

import workbench
from workbench.core.errors import FieldError
from workbench.edits import Edit, EditError, EditTypeError, editing

PROMPT = "a red circle left of a blue square"  # "red" is position 2, "left" positions 4 and 5
DOWN = "down_blocks.0.attentions.0.transformer_blocks.0.attn2"  # the first cross-attention layer
STEPS = 3


def image(pipe, prompt=PROMPT, seed=0, **kwargs):
    out = pipe(
        prompt,
        num_inference_steps=STEPS,
        generator=torch.Generator().manual_seed(seed),
        output_type="pt",
        **kwargs,
    )
    return out.images


def recorded(pipe, edits=None, *, guidance=7.5, prompt=PROMPT):
    """One recorded call (all heads, float32, both branches), edited by ``edits`` when given."""
    policy = workbench.RecordingPolicy(heads="all", dtype="float32", negative=guidance > 1)

    def call():
        with workbench.record(pipe, policy, progress=False) as rec:
            image(pipe, prompt, guidance_scale=guidance)
        return rec.runs

    if edits is None:
        return call()
    with editing(pipe, edits):
        return call()


@pytest.fixture(scope="module")
def plain(tiny_pipe):
    return image(tiny_pipe)


# ------------------------------------------------------------ the value


@pytest.mark.parametrize(
    "make, field",
    [
        (lambda: Edit("bogus"), "kind"),
        (lambda: Edit.reweight([], 2.0), "words"),
        (lambda: Edit.reweight(["red", "red"], 2.0), "words"),
        (lambda: Edit.reweight([3], 2.0), "words"),
        (lambda: Edit.reweight(["  "], 2.0), "words"),
        (lambda: Edit.reweight("red", -0.5), "factor"),
        (lambda: Edit.reweight("red", math.nan), "factor"),
        (lambda: Edit.reweight("red", math.inf), "factor"),
        (lambda: Edit.reweight("red", "2"), "factor"),
        (lambda: Edit.reweight("red", True), "factor"),
        (lambda: Edit("ablate", words=("red",), factor=2.0), "factor"),
        (lambda: Edit.ablate("red", steps=[-1]), "steps"),
        (lambda: Edit.ablate("red", steps=[2**70]), "steps"),
        (lambda: Edit.ablate(["red", "Red"]), "words"),  # words match whatever their case: one word twice
        (lambda: Edit.switch("a blue square", 2**70), "from_step"),
        (lambda: Edit.ablate("red", steps="0-3"), "steps"),
        (lambda: Edit.ablate("red", steps=[1.5]), "steps"),
        (lambda: Edit.ablate("red", steps=5), "steps"),
        (lambda: Edit.ablate("red", layers=[True]), "layers"),
        (lambda: Edit.ablate("red", layers=[0]), "layers"),
        (lambda: Edit.ablate("red", layers=[""]), "layers"),
        (lambda: Edit.ablate("red", layers=3.5), "layers"),
        (lambda: Edit.ablate("red", heads="all"), "heads"),
        (lambda: Edit.reweight("red", 2.0, heads=[-1]), "heads"),
        (lambda: Edit.reweight("red", 2.0, heads=[]), "heads"),
        (lambda: Edit.replace(5), "source"),
        (lambda: Edit.replace("x" * 10_001), "source"),
        (lambda: Edit.switch(3, 0), "prompt"),
        (lambda: Edit.switch("a blue square", -1), "from_step"),
        (lambda: Edit.switch("a blue square", 1.0), "from_step"),
        (lambda: Edit("switch", prompt="x", from_step=0, words=("a",)), "words"),
        (lambda: Edit("replace", source="x", factor=2.0), "factor"),
        (lambda: Edit.from_dict({"kind": "ablate", "words": ["red"], "bogus": 1}), "bogus"),
        (lambda: Edit.from_dict({"words": ["red"]}), "kind"),
        (lambda: Edit.from_dict(["ablate"]), "edit"),
    ],
)
def test_each_field_is_refused_with_its_name(make, field):
    with pytest.raises(EditError) as info:
        make()
    assert info.value.field == field
    assert isinstance(info.value, FieldError)
    assert str(info.value).startswith(f"edit {field} ")


def test_heads_are_kept_sorted_and_distinct():
    assert Edit.ablate("red", heads=[1, 0, 1]).heads == (0, 1)
    assert Edit.ablate("red", heads=2).heads == (2,)


def test_type_errors_are_type_errors_too():
    with pytest.raises(TypeError):
        Edit.reweight("red", "2")
    assert issubclass(EditTypeError, EditError)


@pytest.mark.parametrize(
    "edit",
    [
        Edit.reweight(["red", "left"], 2.5, steps=[3, 1, 1], layers=["8x8", DOWN]),
        Edit.ablate("blue", steps=range(2), layers=4),
        Edit.ablate("blue", steps=[]),
        Edit.replace("a blue circle left of a red square", ["circle"], steps=[0], layers=[8]),
        Edit.replace("a blue square"),
        Edit.switch("a blue square left of a red circle", 3),
    ],
)
def test_json_round_trip(edit):
    text = json.dumps(edit.to_dict())
    assert Edit.from_dict(json.loads(text)) == edit


def test_fields_are_normalised_once():
    edit = Edit.reweight("red", 2, steps=[3, 1, 1], layers="8x8")
    assert edit.words == ("red",) and edit.factor == 2.0 and isinstance(edit.factor, float)
    assert edit.steps == (1, 3) and edit.layers == ("8x8",)
    assert Edit.ablate("red", steps=range(3)).steps == (0, 1, 2)
    assert Edit.ablate("red").factor == 0.0
    assert Edit.ablate("red", steps=[]).steps == () and Edit.ablate("red").steps is None
    assert Edit.ablate("red", steps=[]) != Edit.ablate("red")
    run = SimpleNamespace(config=SimpleNamespace(request=workbench.Request("a blue square", seed=0)))
    assert Edit.replace(run).source == "a blue square"


# ------------------------------------------------------------ identities


@pytest.mark.parametrize(
    "edit",
    [
        Edit.ablate("red", steps=[]),
        Edit.ablate("red", layers=[]),
        Edit.reweight(["red", "left"], 5.0, steps=[]),
    ],
)
def test_an_edit_selecting_nothing_leaves_the_image_equal(tiny_pipe, plain, edit):
    with editing(tiny_pipe, [edit]):
        assert torch.equal(image(tiny_pipe), plain)


def test_reweight_by_one_stays_within_1e5_and_does_pass_a_mask(tiny_pipe, plain):
    masks = []
    seen = tiny_pipe.unet.get_submodule(DOWN).register_forward_pre_hook(
        lambda m, a, kw: masks.append(kw.get("attention_mask")), with_kwargs=True
    )
    try:
        with editing(tiny_pipe, Edit.reweight(["red", "left"], 1.0)):
            edited = image(tiny_pipe)
    finally:
        seen.remove()
    heads = tiny_pipe.unet.get_submodule(DOWN).heads
    assert len(masks) == STEPS and all(m is not None and m.shape == (2 * heads, 1, 16) for m in masks)
    assert torch.count_nonzero(masks[0]) == 0  # log(1) everywhere
    assert (edited - plain).abs().max().item() <= 1e-5


# ------------------------------------------------------------ effects against independent computations


@pytest.mark.parametrize("guidance", [1.0, 7.5])
def test_recorded_edited_attention_is_the_renormalised_reweighting(tiny_pipe, guidance):
    """The edit starts at step 1 on the first layer: its inputs there are those of the plain call, so
    the edited probabilities must be p·w / Σ p·w of the plain ones."""
    factor, step = 3.0, 1
    edit = [Edit.reweight("left", factor, steps=[step], layers=[DOWN]), Edit.ablate("red", steps=[step])]
    base = recorded(tiny_pipe, guidance=guidance)[0]
    run = recorded(tiny_pipe, edit, guidance=guidance)[0]
    p = base.attention.probs[DOWN][step]  # (heads, queries, tokens)
    w = torch.ones(p.shape[-1])
    w[[4, 5]] = factor  # "left"
    w[2] = 0.0  # "red" (ablated on every layer)
    expected = p * w / (p * w).sum(-1, keepdim=True)
    got = run.attention.probs[DOWN][step]
    assert (got - expected).abs().max().item() <= 1e-6
    assert torch.all(got[..., 2] == 0)  # the ablated word's column is exactly 0
    assert (got - p).abs().max().item() > 1e-3  # the edit did change the row
    assert torch.equal(run.attention.probs[DOWN][0], base.attention.probs[DOWN][0])
    if guidance > 1:  # the unconditional branch is never edited
        assert torch.equal(
            run.negative_attention.probs[DOWN][step], base.negative_attention.probs[DOWN][step]
        )
    later = run.attention.probs["up_blocks.1.attentions.1.transformer_blocks.0.attn2"][step]
    assert torch.all(later[..., 2] == 0) and torch.all(later[..., 4:6] > 0)  # ablate on every layer


def test_recording_sees_the_edit_in_either_nesting(tiny_pipe):
    edit = Edit.reweight("blue", 4.0, steps=[0, 2])
    inside = recorded(tiny_pipe, edit)[0].attention.probs
    policy = workbench.RecordingPolicy(heads="all", dtype="float32")
    with workbench.record(tiny_pipe, policy, progress=False) as rec:
        with editing(tiny_pipe, edit):
            image(tiny_pipe)
    for name, probs in rec.runs[0].attention.probs.items():
        assert torch.equal(probs, inside[name])


def test_the_layer_output_is_the_stock_math_with_the_reweighted_softmax(tiny_pipe):
    """Computed by hand from the layer's own to_q/to_k/to_v/to_out at the edited step."""
    module = tiny_pipe.unet.get_submodule(DOWN)
    factor, step, calls = 0.25, 1, []

    def keep(mod, args, kwargs, output):
        hs = args[0] if args else kwargs["hidden_states"]
        calls.append((hs.detach().clone(), kwargs["encoder_hidden_states"].detach().clone(), output.detach()))

    handle = module.register_forward_hook(keep, with_kwargs=True)
    try:
        with editing(tiny_pipe, Edit.reweight(["left", "square"], factor, steps=[step], layers="8x8")):
            image(tiny_pipe)
    finally:
        handle.remove()
    hs, ctx, out = calls[step]  # hs (2, 64, 16), ctx (2, 16, 24): [uncond | cond]
    heads = module.heads
    d = module.to_q.weight.shape[0] // heads
    q = (hs @ module.to_q.weight.T).view(2, -1, heads, d).transpose(1, 2)  # (2, heads, queries, d)
    k = (ctx @ module.to_k.weight.T).view(2, -1, heads, d).transpose(1, 2)  # (2, heads, tokens, d)
    v = (ctx @ module.to_v.weight.T).view(2, -1, heads, d).transpose(1, 2)
    scores = q @ k.transpose(-1, -2) / d**0.5  # (2, heads, queries, tokens)
    w = torch.ones(2, 1, 1, scores.shape[-1])
    w[1, :, :, [4, 5, 9]] = factor  # the conditional row only: "left" (4, 5) and "square" (9)
    probs = scores.softmax(-1) * w
    probs = probs / probs.sum(-1, keepdim=True)

    def output(p):
        mixed = (p @ v).transpose(1, 2).reshape(2, -1, heads * d)  # (2, queries, inner)
        return module.to_out[0](mixed)

    assert (out - output(probs)).abs().max().item() <= 1e-5
    assert (out - output(scores.softmax(-1))).abs().max().item() > 1e-4  # the plain softmax is not it
    assert (out[0] - output(scores.softmax(-1))[0]).abs().max().item() <= 1e-5  # uncond row untouched


def test_each_prompt_of_a_batch_gets_its_own_word_positions(tiny_pipe):
    prompts = [PROMPT, "a blue square left of a red circle"]  # "red" at 2, then at 8
    policy = workbench.RecordingPolicy(heads="all", dtype="float32")
    with editing(tiny_pipe, Edit.ablate("red", steps=[0])):
        with workbench.record(tiny_pipe, policy, progress=False) as rec:
            tiny_pipe(prompts, num_images_per_prompt=2, num_inference_steps=2, output_type="pt")
    for run, red in zip(rec.runs, [2, 2, 8, 8]):
        p = run.attention.probs[DOWN][0]
        assert torch.all(p[..., red] == 0)
        assert p[..., [2, 8]].sum().item() > 0  # the other prompt's position is a live word here


def test_ablating_a_word_changes_the_image(tiny_pipe, plain):
    with editing(tiny_pipe, Edit.ablate(["red", "circle"])):
        edited = image(tiny_pipe)
    assert (edited - plain).abs().max().item() > 1e-3


# ------------------------------------------------------------ refusals and clean-up


def test_unknown_words_layers_and_steps_are_refused_in_the_call(tiny_pipe):
    with pytest.raises(EditError) as info, editing(tiny_pipe, Edit.ablate("purple")):
        image(tiny_pipe)
    assert info.value.field == "words" and "'square'" in str(info.value) and "'purple'" in str(info.value)
    with pytest.raises(EditError) as info, editing(tiny_pipe, Edit.ablate("red", layers=["2x2"])):
        image(tiny_pipe)
    assert info.value.field == "layers" and "8x8" in str(info.value)
    with pytest.raises(EditError) as info, editing(tiny_pipe, Edit.ablate("red", steps=[1, 7])):
        image(tiny_pipe)
    assert info.value.field == "steps" and "[7]" in str(info.value)


def hooks_of(pipe) -> tuple:
    attn = [pipe.unet.get_submodule(DOWN)]
    return (len(pipe.unet._forward_pre_hooks), *(len(m._forward_pre_hooks) for m in attn))


def boom(error):
    def callback(pipe, step, timestep, kwargs):
        if step == 1:
            raise error
        return kwargs

    return callback


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_edits_are_gone_after_the_call_an_error_and_ctrl_c(tiny_pipe, tiny_folder, error):
    fresh = workbench.load_pipeline(tiny_folder, device="cpu", dtype="float32")
    never = image(fresh)  # a pipe that was never edited
    before = hooks_of(tiny_pipe)
    with editing(tiny_pipe, Edit.ablate("red")):
        edited = image(tiny_pipe)
    assert not torch.equal(edited, never) and torch.equal(image(tiny_pipe), never)
    with pytest.raises(type(error)), editing(tiny_pipe, Edit.ablate("red")):
        assert hooks_of(tiny_pipe) != before
        image(tiny_pipe, callback_on_step_end=boom(error))
    assert hooks_of(tiny_pipe) == before and "check_inputs" not in tiny_pipe.__dict__
    assert torch.equal(image(tiny_pipe), never)
    with editing(tiny_pipe, Edit.ablate("red")):  # the pipe can be edited again
        assert torch.equal(image(tiny_pipe), edited)


def test_nested_editing_is_refused_and_the_outer_edit_stays(tiny_pipe):
    with editing(tiny_pipe, Edit.ablate("red")):
        edited = image(tiny_pipe)
        with pytest.raises(RuntimeError, match="already being edited"):
            with editing(tiny_pipe, Edit.ablate("blue")):
                pass
        assert torch.equal(image(tiny_pipe), edited)


def test_what_cannot_be_edited_is_refused_and_leaves_nothing_installed(tiny_pipe, plain):
    with pytest.raises(EditError, match="one prompt switch"):
        with editing(tiny_pipe, [Edit.switch("a blue square", 1), Edit.switch("a red circle", 2)]):
            pass
    with pytest.raises(TypeError, match="Edit values"):
        with editing(tiny_pipe, [{"kind": "ablate"}]):
            pass
    with pytest.raises(EditError, match="no attention of the source prompt") as info:
        with editing(tiny_pipe, Edit.replace("a blue square")):
            image(tiny_pipe)
    assert info.value.field == "source"
    assert torch.equal(image(tiny_pipe), plain)  # nothing was left installed


def test_another_threads_call_is_not_edited(tiny_pipe, plain):
    import threading

    other = {}
    with editing(tiny_pipe, Edit.ablate(["red", "circle"])):
        worker = threading.Thread(target=lambda: other.setdefault("image", image(tiny_pipe)))
        worker.start()
        worker.join()
        edited = image(tiny_pipe)  # this thread's call is edited, its step count not moved by the other
    assert torch.equal(other["image"], plain)
    assert (edited - plain).abs().max().item() > 1e-3


# ------------------------------------------------------------ refusals that name what is wrong


def test_edits_that_are_not_edits_are_refused_as_the_edits_field(tiny_pipe):
    for given in ("ablate red", {"kind": "ablate", "words": ["red"]}, {Edit.ablate("red")}, ["ablate red"]):
        with pytest.raises(TypeError) as info:
            workbench.generate(tiny_pipe, PROMPT, seed=0, steps=2, edits=given, progress=False)
        assert isinstance(info.value, FieldError) and info.value.field == "edits", given
        assert "Edit.from_dict" in str(info.value)


def test_steps_past_the_call_are_refused_before_a_source_is_made(tiny_pipe, monkeypatch):
    from workbench.edits import session

    made = []
    monkeypatch.setattr(session, "core_generate", lambda *a, **k: made.append(a) or None)
    swap = "a blue square left of a red circle"
    with pytest.raises(EditError) as info:
        session.generate(tiny_pipe, PROMPT, seed=0, steps=3, edits=[Edit.replace(swap, ["red"], steps=[10])])
    assert info.value.field == "steps" and "[10]" in str(info.value) and made == []
    with pytest.raises(EditError) as info:
        session.generate(tiny_pipe, PROMPT, seed=0, steps=4, edits=[Edit.switch(swap, 4)])
    assert info.value.field == "from_step" and made == []


def test_a_run_configs_edit_errors_name_the_edit(tmp_path):
    from workbench.store.runs import ConfigError, config_from_dict

    config = {
        "prompt": PROMPT,
        "seed": 0,
        "steps": 2,
        "edits": [{"kind": "reweight", "words": ["red"], "factor": -1}],
    }
    with pytest.raises(ConfigError) as info:
        config_from_dict(config)
    assert info.value.field == "config.edits[0].factor"


def test_an_edit_field_is_not_taken_for_a_command_line_option():
    from workbench.cli import _as_option
    from workbench.core.request import RequestError

    assert (
        _as_option(EditError("steps", "[50] are past the last step"))
        == "edit steps [50] are past the last step"
    )
    assert _as_option(RequestError("steps", "must be at least 1")) == "--steps must be at least 1"


def test_prompt_embeds_and_cut_off_words_are_refused_saying_so(tiny_pipe):
    from workbench.core.adapters import adapter_for

    embeds = torch.zeros(1, 16, tiny_pipe.text_encoder.config.hidden_size)
    with pytest.raises(FieldError) as info, editing(tiny_pipe, Edit.ablate("red")):
        tiny_pipe(prompt_embeds=embeds, num_inference_steps=1, output_type="latent")
    assert info.value.field == "prompt_embeds"
    long = "a red circle left of a blue square above a green triangle below a yellow star"
    table = adapter_for(tiny_pipe).table(long, adapter_for(tiny_pipe).text_lengths({}))
    cut = str(table.word[table.kind == "cut"].iloc[-1])
    with pytest.raises(EditError, match=f"{cut!r} was cut off") as info:
        workbench.generate(tiny_pipe, long, seed=0, steps=1, edits=[Edit.ablate(cut)], progress=False)
    assert info.value.field == "words"


def test_family_refusals_and_empty_selections_read_plainly():
    from workbench.edits.apply import check_family

    family = SimpleNamespace(attention_edits=False, conditioning=(), family="CogView4")
    with pytest.raises(EditError, match=r"^edit kind 'switch' is not built for CogView4: where its text"):
        check_family(family, (Edit.switch("a blue square", 0),))
    with pytest.raises(EditError, match=r"^edit kind 'reweight' is not built for CogView4: its attention"):
        check_family(family, (Edit.reweight("red", 2.0),))
    assert Edit.ablate("red", layers=[]).describe() == "ablate 'red' · no layers"
    with pytest.raises(EditError, match="runs the other way") as info:
        Edit.ablate("red", steps=range(3, 0))
    assert info.value.field == "steps" and Edit.ablate("red", steps=range(5, 5)).steps == ()


def test_runs_with_words_cut_off_save_and_load_and_old_switched_runs_warn(tiny_pipe, tmp_path):
    from dataclasses import replace

    from workbench import load_run, save_run
    from workbench.analysis import in_prompt_positions

    long = "a red circle left of a blue square above a green triangle below a yellow star"
    switched = workbench.generate(
        tiny_pipe, PROMPT, seed=0, steps=2, edits=[Edit.switch(long, 1)], progress=False
    )
    assert (switched.switch_tokens.kind == "cut").any()
    back = load_run(save_run(switched, tmp_path / "switched"))
    assert back.switch_tokens.equals(switched.switch_tokens)
    own = workbench.generate(tiny_pipe, long, seed=0, steps=2, progress=False)
    assert torch.equal(
        load_run(save_run(own, tmp_path / "own")).attention.probs[own.attention.layer_names()[0]],
        own.attention.probs[own.attention.layer_names()[0]],
    )
    with pytest.warns(UserWarning, match="saved before runs kept the switched-to prompt's tokens"):
        in_prompt_positions(replace(switched, switch_tokens=None), switched.attention)


def test_words_match_whatever_their_case_and_a_replace_sharing_no_word_is_refused(tiny_pipe):
    upper = "a Red circle left of a blue square"
    lower = workbench.generate(tiny_pipe, upper, seed=0, steps=2, edits=[Edit.ablate("red")], progress=False)
    same = workbench.generate(tiny_pipe, upper, seed=0, steps=2, edits=[Edit.ablate("RED")], progress=False)
    plain = workbench.generate(tiny_pipe, upper, seed=0, steps=2, progress=False)
    assert torch.equal(lower.latents, same.latents) and not torch.equal(lower.latents, plain.latents)
    with pytest.raises(EditError, match="shares no word") as info:
        workbench.generate(
            tiny_pipe, PROMPT, seed=0, steps=2, edits=[Edit.replace("green triangle")], progress=False
        )
    assert info.value.field == "source"


def test_attributions_refuse_an_edited_run(tiny_pipe):
    from workbench.analysis import integrated_gradients, occlusion

    run = workbench.generate(tiny_pipe, PROMPT, seed=0, steps=2, edits=[Edit.ablate("red")], progress=False)
    for attribute in (integrated_gradients, occlusion):
        with pytest.raises(ValueError, match="this run was edited \\(ablate 'red'\\)"):
            attribute(tiny_pipe, run, step=1)


def test_words_are_taken_without_surrounding_spaces():
    assert Edit.ablate(" red ").words == ("red",) and Edit.reweight(["red", " blue"], 2.0).words == (
        "red",
        "blue",
    )
    with pytest.raises(EditError, match="distinct"):
        Edit.ablate(["red", " red"])
