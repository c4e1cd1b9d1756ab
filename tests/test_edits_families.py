"""Edits on every family (SD 1.x tiny, SDXL, SD3, Flux with true CFG): no-op edits are exact, identity
edits stay within 1e-5, each edit's effect on the recorded attention equals an independent computation
from the plain run's probabilities, and a switch at step 0 is the target prompt's run."""

import pytest
import torch
from tiny_families import build_flux_folder, build_sd3_folder, build_sdxl_folder

from workbench import Edit, RecordingPolicy, Request, generate, load_pipeline
from workbench.core.adapters import JointAdapter, adapter_for
from workbench.core.tokens import aligned_positions, occurrence_keys, word_groups

PROMPT = "a red circle left of a blue square"
SWAP = "a blue square left of a red circle"
FAMILIES = {
    "sd": (None, 32, 32, {}),
    "sdxl": (build_sdxl_folder, 64, 96, {}),
    "sd3": (build_sd3_folder, 32, 48, {}),
    "flux": (build_flux_folder, 32, 48, {"true_cfg_scale": 2.0}),
}
FULL = RecordingPolicy(heads="all", dtype="float32")


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, tmp_path_factory, tiny_pipe):
    build, height, width, extra = FAMILIES[request.param]
    pipe = (
        tiny_pipe
        if build is None
        else load_pipeline(build(tmp_path_factory.mktemp(request.param)), dtype="float32")
    )
    req = Request(
        PROMPT,
        seed=5,
        steps=3,
        guidance_scale=4.0,
        negative_prompt="green",
        height=height,
        width=width,
        **extra,
    )
    plain = generate(pipe, req, policy=FULL, progress=False)
    return request.param, pipe, req, plain


def run(pipe, req, edits, **kw):
    return generate(pipe, req, edits=edits, policy=FULL, progress=False, **kw)


def within_1e5(a, b) -> bool:
    """Within 1e-5 in float32 terms: relative to the larger of 1 and the tensor's scale (the tiny SDXL's
    latents reach ~6, where one float32 ulp is ~5e-7)."""
    return (a - b).abs().max().item() <= 1e-5 * max(1.0, b.abs().max().item())


def positions(run_, word):
    return [
        p
        for g in word_groups(run_.tokens, include_special=False)
        if g["word"] == word
        for p in g["positions"]
    ]


def test_an_edit_on_no_step_or_no_layer_is_the_plain_run_exactly(family):
    _, pipe, req, plain = family
    first = adapter_for(pipe).layers()[0].name
    for edits in ([Edit.ablate("red", steps=[])], [Edit.reweight("red", 3.0, steps=[], layers=[first])]):
        edited = run(pipe, req, edits)
        assert torch.equal(edited.latents, plain.latents)
        assert edited.config.edits == tuple(edits)


@pytest.mark.parametrize("kind", ["reweight", "switch", "replace"])
def test_identity_edits_stay_within_1e5(family, kind):
    name, pipe, req, plain = family
    edit = {
        "reweight": Edit.reweight(["red", "square"], 1.0),
        "switch": Edit.switch(PROMPT, 1),
        "replace": Edit.replace(PROMPT),
    }[kind]
    edited = run(pipe, req, [edit])
    assert within_1e5(edited.latents, plain.latents)
    assert edited.config.edits == (edit,)


def test_reweight_is_the_renormalised_reweighting_of_the_joint_softmax(family):
    """At the first layer of step 1 the inputs are the plain call's: the edited row must be p·w / Σ p·w
    with the sum over every key (text and, for joint attention, image keys)."""
    _, pipe, req, plain = family
    first = adapter_for(pipe).layers()[0].name
    edits = [Edit.reweight("left", 3.0, steps=[1], layers=[first]), Edit.ablate("red", steps=[1], heads=[0])]
    edited = run(pipe, req, edits)
    p = plain.attention.probs[first][1]  # (heads, queries, text): a block of the joint row
    w = torch.ones(p.shape[-1])
    w[positions(plain, "left")] = 3.0
    wh = w.repeat(p.shape[0], 1)
    wh[0, positions(plain, "red")] = 0.0  # head 0 only
    weighted = p * wh[:, None, :]
    rest = 1 - p.sum(-1, keepdim=True)  # image keys of a joint softmax (0 for cross-attention)
    expected = weighted / (weighted.sum(-1, keepdim=True) + rest)
    got = edited.attention.probs[first][1]
    assert (got - expected).abs().max().item() <= 1e-5
    assert got[0][..., positions(plain, "red")].abs().max() == 0
    assert got[1][..., positions(plain, "red")].min() > 0  # other heads keep the word
    assert torch.equal(edited.attention.probs[first][0], plain.attention.probs[first][0])  # step 0 untouched


def test_switch_at_step_0_is_the_target_prompts_run(family):
    _, pipe, req, plain = family
    target = generate(pipe, req.replace(prompt=SWAP), policy=FULL, progress=False)
    switched = run(pipe, req, [Edit.switch(SWAP, 0)])
    assert torch.equal(switched.latents, target.latents)
    late = run(pipe, req, [Edit.switch(SWAP, 2)])
    assert torch.equal(late.latents[:3], plain.latents[:3])  # steps 0 and 1 ran on the prompt
    assert not torch.equal(late.latents[3], plain.latents[3])


def test_a_switched_runs_maps_read_each_word_where_the_switched_to_prompt_has_it(family, tmp_path):
    """From the switch on, the recorded attention is over the swap's tokens: the maps read each of the
    prompt's words at that word's tokens in the swap (a switch at step 0 is the swap's run, word for
    word), the steps before it as recorded; saved and loaded, the run keeps the swap's token table."""
    from workbench import load_run, save_run
    from workbench.analysis import in_prompt_positions, word_maps
    from workbench.lab import attention_holds

    name, pipe, req, plain = family
    target = generate(pipe, req.replace(prompt=SWAP), policy=FULL, progress=False)
    switched = run(pipe, req, [Edit.switch(SWAP, 0)])
    assert list(switched.switch_tokens.token_id) == list(target.tokens.token_id) and switched.switch_step == 0
    assert plain.switch_tokens is None and in_prompt_positions(plain, plain.attention) is plain.attention
    layer = adapter_for(pipe).layers()[0].name
    read = in_prompt_positions(switched, switched.attention).probs[layer]
    for word in ("red", "circle", "blue", "square"):
        assert torch.equal(
            read[..., positions(plain, word)], target.attention.probs[layer][..., positions(target, word)]
        )
    got, want = word_maps(switched), word_maps(target)
    assert sorted(got.words) == sorted(want.words)
    keys = occurrence_keys(want.words)
    for key, heat in zip(occurrence_keys(got.words), got.maps):  # "a" twice: the first with the first
        assert torch.allclose(heat, want.maps[keys.index(key)], atol=1e-6), key
    assert attention_holds(switched, SWAP) == attention_holds(target, SWAP)

    adapter = adapter_for(pipe)
    short = adapter.table("a blue square", adapter.text_lengths({}))
    a, b = aligned_positions(plain.tokens, short)  # prompts of different lengths: each encoder's own
    columns = [c for c in ("encoder", "kind") if c in short]
    at = plain.tokens.set_index("position")
    assert [tuple(at.loc[p, columns]) for p in a] == [
        tuple(short.set_index("position").loc[p, columns]) for p in b
    ]
    assert len(set(a)) == len(a) and len(set(b)) == len(b) and len(a) >= 4

    late = run(pipe, req, [Edit.switch(SWAP, 2)])
    read = in_prompt_positions(late, late.attention).probs[layer]
    assert torch.equal(read[:2], late.attention.probs[layer][:2])  # before the switch: as recorded
    red_a, red_b = positions(plain, "red"), positions(target, "red")
    assert torch.equal(read[2:][..., red_a], late.attention.probs[layer][2:][..., red_b])
    back = load_run(save_run(late, tmp_path / name))
    assert back.switch_tokens.equals(late.switch_tokens) and back.switch_step == 2
    assert torch.equal(word_maps(back).maps, word_maps(late).maps)


def test_replace_puts_the_sources_probabilities_on_the_aligned_words(family):
    """At the first layer of step 1 (inputs as the plain call's): the source's probabilities on the
    aligned words, the rest of the row (text and image keys) rescaled to the remaining mass."""
    _, pipe, req, plain = family
    source = generate(pipe, req.replace(prompt=SWAP), policy=FULL, progress=False)
    layer = adapter_for(pipe).layers()[0].name
    edited = run(
        pipe, req, [Edit.replace(SWAP, ["red", "square"], steps=[1], layers=[layer])], sources=[source]
    )
    p, src = plain.attention.probs[layer][1], source.attention.probs[layer][1]
    target = positions(plain, "red") + positions(plain, "square")
    origin = positions(source, "red") + positions(source, "square")
    want = src[..., origin]

    joint = isinstance(adapter_for(pipe), JointAdapter)

    def outside(probs, cols):  # the mass outside ``cols``: other text keys, and image keys (joint)
        others = torch.ones(probs.shape[-1], dtype=torch.bool)
        others[cols] = False
        image = (1 - probs.sum(-1, keepdim=True)).clamp_min(0) if joint else 0
        return probs[..., others].sum(-1, keepdim=True) + image

    expected = p * outside(src, origin) / outside(p, target)
    expected[..., target] = want
    got = edited.attention.probs[layer][1]
    assert (got - expected).abs().max().item() <= 1e-5
    assert not torch.equal(want, p[..., target])  # the source's maps differ: the test can fail


def test_replace_edits_compose_as_one_replace_of_their_words(family):
    """At one layer and step: replaces of two word sets act as one replace of both, one given twice as
    once, and a reweight before a replace stays in the rest of the row (p·w rescaled to what remains)."""
    _, pipe, req, plain = family
    source = generate(pipe, req.replace(prompt=SWAP), policy=FULL, progress=False)
    layer = adapter_for(pipe).layers()[0].name

    def replace(words):
        return Edit.replace(SWAP, words, steps=[1], layers=[layer])

    def probs(edits):
        return run(pipe, req, edits, sources=[source]).attention.probs[layer][1]

    union = probs([replace(["red", "square"])])
    assert (probs([replace(["red"]), replace(["square"])]) - union).abs().max().item() <= 1e-5
    assert (probs([replace(["red", "square"])] * 2) - union).abs().max().item() <= 1e-5

    p, src = plain.attention.probs[layer][1], source.attention.probs[layer][1]
    target = positions(plain, "red") + positions(plain, "square")
    origin = positions(source, "red") + positions(source, "square")
    w = torch.ones(p.shape[-1])
    w[positions(plain, "left")] = 3.0
    joint = isinstance(adapter_for(pipe), JointAdapter)
    image = (1 - p.sum(-1, keepdim=True)).clamp_min(0) if joint else 0  # a joint softmax's image keys
    others = torch.ones(p.shape[-1], dtype=torch.bool)
    others[target] = False
    src_others = torch.ones(src.shape[-1], dtype=torch.bool)
    src_others[origin] = False
    src_rest = src[..., src_others].sum(-1, keepdim=True)
    src_rest = src_rest + ((1 - src.sum(-1, keepdim=True)).clamp_min(0) if joint else 0)
    pw = p * w
    expected = pw * src_rest / (pw[..., others].sum(-1, keepdim=True) + image)
    expected[..., target] = src[..., origin]
    got = probs([Edit.reweight("left", 3.0, steps=[1], layers=[layer]), replace(["red", "square"])])
    assert (got - expected).abs().max().item() <= 1e-5
    # a word an ablation removed stays removed when a replace names it after: finite, and still 0
    ablated = probs([Edit.ablate("red", steps=[1], layers=[layer]), replace(["red", "square"])])
    assert torch.isfinite(ablated).all() and ablated[..., positions(plain, "red")].abs().max() == 0
    assert torch.allclose(
        ablated[..., positions(plain, "square")], src[..., positions(source, "square")], atol=1e-5
    )


def test_replace_generates_its_source_when_none_is_given(tiny_pipe):
    req = Request(PROMPT, seed=5, steps=3, guidance_scale=4.0)
    source = generate(tiny_pipe, req.replace(prompt=SWAP), policy=FULL, progress=False)
    given = run(tiny_pipe, req, [Edit.replace(SWAP, ["red"])], sources=[source])
    made = run(tiny_pipe, req, [Edit.replace(source, ["red"])])  # a Run names its prompt
    assert torch.equal(given.latents, made.latents)


def test_an_edited_runs_figures_and_report_say_it_was_edited(tiny_pipe, tmp_path):
    from html import escape

    from workbench import analysis, viz
    from workbench.report import report

    req = Request(PROMPT, seed=5, steps=3, guidance_scale=4.0)
    edited = run(tiny_pipe, req, [Edit.ablate("red", steps=[0, 1])])
    plain = generate(tiny_pipe, req, progress=False)
    label = "ablate 'red' · steps 0–1"
    assert edited.config.edit_label == label and "edited: " + label in repr(edited)
    maps_title = viz.word_overlay(edited.image, analysis.word_maps(edited)).layout.title.text
    strip_title = viz.filmstrip_figure(analysis.filmstrip(tiny_pipe, edited)).layout.title.text
    assert f"EDITED RUN: {label}" in maps_title and f"EDITED RUN: {label}" in strip_title
    assert "EDITED" not in viz.word_overlay(plain.image, analysis.word_maps(plain)).layout.title.text
    for make in (
        lambda r: viz.word_step_matrix(analysis.word_step_mass(r)),
        lambda r: viz.word_layer_matrix(analysis.word_layer_mass(r)),
        lambda r: viz.change_curve_figure(analysis.change_curves(r)),
        lambda r: viz.word_overlay(r.image, analysis.token_maps(r, size="image")),
    ):
        assert f"EDITED RUN: {label}" in make(edited).layout.title.text
        assert "EDITED" not in make(plain).layout.title.text
    html = report([plain, edited], tmp_path / "r.html", quiet=True).read_text()
    assert html.count(f"edited: {escape(label)}") == 2  # the run's heading and its entry in the list of runs


def test_an_edited_run_saves_loads_and_reruns_with_its_edits(tiny_pipe, tmp_path, capsys):
    from workbench import load_run, save_run
    from workbench.cli import main
    from workbench.rerun import rerun
    from workbench.store.recipe import RerunRecipe

    req = Request(PROMPT, seed=5, steps=3, guidance_scale=4.0)
    edits = [Edit.reweight("red", 2.5, steps=[1, 2], heads=[0]), Edit.switch(SWAP, 2)]
    edited = generate(tiny_pipe, req, edits=edits, progress=False)
    loaded = load_run(save_run(edited, tmp_path / "run"))
    assert loaded.config.edits == tuple(edits) and loaded.config.to_dict()["edits"][0]["heads"] == [0]
    result = rerun(RerunRecipe.from_run(loaded), model=tiny_pipe)
    assert result.match and result.run.config.edits == tuple(edits)
    plain = generate(tiny_pipe, req, progress=False)
    assert not torch.equal(plain.latents, result.run.latents)  # the re-run applied the edits
    RerunRecipe.from_run(loaded).save(tmp_path / "spec.json")
    assert main(["rerun", str(tmp_path / "spec.json")]) == 0
    out = capsys.readouterr().out
    assert f"with the edits {edited.config.edit_label} (recorded on" in out and "MATCH" in out
    assert not (tmp_path / "run" / "spec.json").exists()  # save_run's folder: its run is the recipe
    assert main(["rerun", str(tmp_path / "run")]) == 0 and "MATCH" in capsys.readouterr().out


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_every_kind_is_gone_after_an_error_and_ctrl_c(family, error):
    from workbench.edits import editing

    _, pipe, req, plain = family
    adapter = adapter_for(pipe)
    processors = (
        [pipe.transformer.get_submodule(x.name).processor for x in adapter.layers()]
        if hasattr(pipe, "transformer")
        else []
    )
    source = generate(pipe, req.replace(prompt=SWAP), policy=FULL, progress=False)
    edits = [Edit.reweight("red", 2.0), Edit.replace(SWAP, ["square"]), Edit.switch(SWAP, 1)]

    def boom(pipe_, step, t, kwargs):
        if step == 1:
            raise error
        return kwargs

    with pytest.raises(type(error)), editing(pipe, edits, sources={SWAP: source}):
        pipe(
            req.prompt,
            num_inference_steps=req.steps,
            height=req.height,
            width=req.width,
            generator=torch.Generator().manual_seed(req.seed),
            callback_on_step_end=boom,
            **adapter.call_arguments(req),
        )
    assert not {"check_inputs", "encode_prompt"} & set(vars(pipe))
    if processors:  # SD3's layers got their stock processor back
        assert processors == [pipe.transformer.get_submodule(x.name).processor for x in adapter.layers()]
    assert torch.equal(generate(pipe, req, policy=FULL, progress=False).latents, plain.latents)
