"""The causal word-order lab's judges and statistics against independent answers, and a lab run on a
model that is not the toy world (placement judged by attention; no ablation curve; Cancel keeps points)."""

import threading
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from workbench import Request, generate, load_pipeline
from workbench.lab import (
    Caption,
    LabSettings,
    LabSettingsError,
    attention_holds,
    lab_size,
    relation_holds,
    run_lab,
    summarize,
)
from workbench.lab.causal import mean_interval
from workbench.toy.catalog import EMBEDDED
from workbench.toy.world import ObjectSpec, SceneSpec, render

A = "a red circle left of a blue square"
B = "a blue square left of a red circle"


def test_captions_parse_and_the_checker_judges_a_drawn_scene():
    assert Caption.parse("a painting of a big red circle left of a blue square") == Caption(
        ("red", "circle"), "left of", ("blue", "square")
    )
    assert Caption.parse("a painting of a horse") is None
    spec = SceneSpec((ObjectSpec("red", "circle"), ObjectSpec("blue", "square")), "left of")
    scene = render(spec, np.random.default_rng(0))  # ground truth: red circle on the left
    run = SimpleNamespace(image=Image.fromarray(scene.image), prompt=A)
    assert relation_holds(run) is True and relation_holds(run, B) is False
    assert relation_holds(run, "a painting of a horse") is None


def test_attention_placement_follows_where_each_noun_is_attended(tiny_pipe):
    run = generate(tiny_pipe, A, seed=0, steps=2, guidance_scale=4.0, progress=False)
    words = [g for g in run.words]
    circle, square = (
        run.tokens[run.tokens.word == "circle"].position,
        run.tokens[run.tokens.word == "square"].position,
    )
    for name, probs in run.attention.probs.items():
        h, w = run.attention.shapes[name]
        fake = torch.zeros_like(probs).reshape(*probs.shape[:2], h, w, -1)
        fake[:, :, :, : w // 2, list(circle)] = 1.0  # "circle" attended on the left half
        fake[:, :, :, w // 2 :, list(square)] = 1.0  # "square" on the right half
        run.attention.probs[name] = fake.reshape(probs.shape)
    assert "circle" in words and attention_holds(run, A) is True and attention_holds(run, B) is False


def test_bootstrap_interval_brackets_the_mean_and_is_exact_for_constants():
    values = np.array([0, 1, 1, 0, 1, 1, 1, 0])
    low, high = mean_interval(values, n_boot=2000)
    assert low < values.mean() < high and 0 <= low and high <= 1
    assert mean_interval(np.ones(5)) == (1.0, 1.0)
    rows = __import__("pandas").DataFrame(
        {
            "curve": ["switch"] * 4,
            "x": [0, 0, 5, 5],
            "pair": ["p"] * 4,
            "seed": [0, 1, 0, 1],
            "y": [1.0, 1.0, 0.0, 1.0],
        }
    )
    summary = summarize(rows, n_boot=200)
    assert summary["mean"].tolist() == [1.0, 0.5] and summary["n"].tolist() == [2, 2]


def test_the_lab_on_another_model_judges_by_attention_and_cancel_keeps_points(tiny_pipe):
    settings = LabSettings(pairs=((A, B),), seeds=(0, 1), steps=3, ks=(0, 3))
    total = lab_size(tiny_pipe, settings)
    result = run_lab(tiny_pipe, settings)
    assert "attention" in result.judge and "not injected" in result.judge
    # inject-step and ablate set the attention that would judge them: not drawn where attention judges
    assert set(result.summary.curve) == {"switch", "inject-layers"} and len(result.rows) <= total
    plain = generate(tiny_pipe, Request(A, seed=1, steps=3), progress=False)  # k = steps: no edit
    row = result.rows[(result.rows.curve == "switch") & (result.rows.x == 3) & (result.rows.seed == 1)]
    expected = attention_holds(plain, B)
    assert (len(row) == 0 and expected is None) or row.y.iloc[0] == float(expected)
    cancel, seen = threading.Event(), []

    def progress(done, _total):
        seen.append(done)
        if done == 3:
            cancel.set()

    stopped = run_lab(tiny_pipe, settings, progress=progress, cancel=cancel)
    assert seen[-1] == 3 < total and len(stopped.rows) >= 1  # nothing ran after Cancel; points kept
    with pytest.raises(ValueError, match="two-object captions"):
        LabSettings(pairs=(("a painting of a horse", B),))


@pytest.mark.skipif(not EMBEDDED["toy-dit"].available(), reason="embedded weights not exported")
def test_the_joint_attention_embedded_model_is_judged_by_the_checker_too():
    """toy-dit is trained on the toy world: its switch curve is judged from the images. A switch at step 0
    is the swap's own run, so its point is the checker's verdict on that run."""
    pipe = load_pipeline("toy-dit")
    pipe.set_progress_bar_config(disable=True)
    settings = LabSettings(pairs=((A, B),), seeds=(0,), steps=4, ks=(0, 4), curves=("switch",))
    result = run_lab(pipe, settings)
    assert "checker" in result.judge
    swap = generate(pipe, Request(B, seed=0, steps=4), progress=False)
    point = result.rows[(result.rows.curve == "switch") & (result.rows.x == 0)].y
    assert point.tolist() == [float(relation_holds(swap, B))]


@pytest.mark.parametrize(
    "fields, field",
    [
        (dict(ks=(0, 0)), "ks"),  # one point counted twice would narrow its interval
        (dict(seeds=(1, 1)), "seeds"),
        (dict(seeds=()), "seeds"),
        (dict(seeds=(-1,)), "seeds"),
        (dict(steps=0), "steps"),
        (dict(steps=-1), "steps"),
        (dict(steps=2.5), "steps"),
        (dict(steps=True), "steps"),
        (dict(ks=(1.5,)), "ks"),
        (dict(ks=(30,)), "ks"),
        (dict(n_boot=0), "n_boot"),
        (dict(curves=()), "curves"),
        (dict(curves=("nope",)), "curves"),
        (dict(pairs=(A, B)), "pairs"),  # one pair not wrapped in a list of pairs
        (dict(pairs=((A, A),)), "pairs"),  # not the swap
        (dict(pairs=((A, "a blue square right of a red circle"),)), "pairs"),  # another relation
        (dict(pairs=(("a red circle left of a red square", "a red square left of a red circle"),)), "pairs"),
        (dict(pairs=((A, B), (A, B))), "pairs"),
        (dict(pairs=()), "pairs"),
        (dict(guidance_scale=float("nan")), "guidance_scale"),
        (dict(seeds=(0, 2**70, 1)), "seed"),  # every seed checked, not the first and last
    ],
)
def test_lab_settings_are_refused_when_made_with_the_field_named(fields, field):
    with pytest.raises(ValueError) as err:
        LabSettings(**{"ks": (0, 3), "steps": 3, **fields})
    assert getattr(err.value, "field", None) == field, str(err.value)


def test_lab_settings_keep_what_they_were_given_as_tuples():
    settings = LabSettings(pairs=[[A, B]], seeds=range(2), steps=3, ks=[0, 3], curves=["switch"])
    assert settings.pairs == ((A, B),) and settings.seeds == (0, 1) and settings.ks == (0, 3)
    assert settings.curves == ("switch",) and isinstance(LabSettingsError("ks", "x"), ValueError)


def test_an_injected_layer_is_left_out_of_the_attention_judge(tiny_pipe, monkeypatch):
    from workbench.lab import causal

    run = generate(tiny_pipe, Request(A, seed=0, steps=2), progress=False)
    store = run.attention
    assert attention_holds(run, A, skip=tuple(store.layer_names())) is None  # nothing left to judge by
    assert attention_holds(run, A, skip=tuple(store.resolutions())) is None
    used = []
    real = causal.word_maps
    monkeypatch.setattr(causal, "word_maps", lambda r, **kw: used.append(kw["layers"]) or real(r, **kw))
    first = store.resolutions()[0]
    attention_holds(run, A, skip=(first,))
    attention_holds(run, A, skip=(store.layer_names()[0],))
    assert used[0] == [n for n in store.layer_names() if n not in store.layer_names(first)]
    assert used[1] == store.layer_names()[1:]
