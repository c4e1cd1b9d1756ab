"""``record`` around the caller's own stock call: same image as unrecorded, the same run as ``generate``,
the caller's generator, latents and callbacks honoured, nothing left installed, one recording per pipeline."""

import threading

import numpy as np
import pytest
import torch

from workbench import RecordingPolicy, Request, generate, record

PROMPT = "a red circle left of a blue square"
INSTALLED = ("check_inputs", "encode_prompt", "prepare_latents")


def _assert_runs_equal(a, b):
    assert a.config == b.config
    assert a.tokens.equals(b.tokens) and a.negative_tokens.equals(b.negative_tokens)
    for name in ("timesteps", "noise", "latents", "x0"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert a.attention.probs.keys() == b.attention.probs.keys()
    for layer in a.attention.probs:
        assert torch.equal(a.attention.probs[layer], b.attention.probs[layer]), layer
    assert a.complete and b.complete


def _clean(pipe):
    assert not any(name in vars(pipe) for name in INSTALLED)
    assert "step" not in vars(pipe.scheduler) and "postprocess" not in vars(pipe.image_processor)


def test_hand_written_call_equals_generate(tiny_pipe):
    policy = RecordingPolicy(heads="all", dtype="float32", negative=True)
    with record(tiny_pipe, policy, progress=False) as rec:
        out = tiny_pipe(
            PROMPT,
            negative_prompt="green",
            num_inference_steps=4,
            guidance_scale=3.0,
            generator=torch.Generator().manual_seed(11),
        )
    (mine,) = rec.runs
    ref = generate(
        tiny_pipe,
        Request(PROMPT, seed=11, steps=4, guidance_scale=3.0, negative_prompt="green"),
        policy=policy,
        progress=False,
    )
    _assert_runs_equal(mine, ref)
    assert mine.seed == 11 and mine.config.provenance.noise == "seed"  # a fresh CPU generator names its seed
    assert np.array_equal(np.asarray(out.images[0]), np.asarray(mine.image))
    _clean(tiny_pipe)


def test_callers_latents_callback_and_output_type(tiny_pipe):
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))  # (1, C, h, w) at 16x16
    seen = []

    def mine(pipe, step, timestep, kwargs):
        seen.append((step, kwargs["latents"].clone()))
        return kwargs

    stock = tiny_pipe(
        PROMPT,
        num_inference_steps=3,
        latents=latents.clone(),
        output_type="np",
        callback_on_step_end=lambda p, s, t, k: k,
    ).images
    with record(tiny_pipe, progress=False) as rec:
        out = tiny_pipe(
            PROMPT,
            num_inference_steps=3,
            latents=latents.clone(),
            output_type="np",
            callback_on_step_end=mine,
            callback_on_step_end_tensor_inputs=["latents"],
        )
    (run,) = rec.runs
    assert np.array_equal(out.images, stock)
    assert [s for s, _ in seen] == [0, 1, 2]  # the caller's callback ran at every step
    assert all(torch.equal(lat[0], run.latents[i + 1]) for i, (_, lat) in enumerate(seen))
    assert run.seed is None and run.config.provenance.noise == "latents"  # no seed invented
    assert torch.equal(run.noise, latents[0])
    assert np.array_equal(np.asarray(run.image), (stock[0] * 255).round().astype("uint8"))
    _clean(tiny_pipe)


def test_used_generator_and_images_per_prompt(tiny_pipe):
    gen = torch.Generator().manual_seed(4)
    torch.randn(3, generator=gen)  # drawn from before the call: its seed no longer says what the noise is
    with record(tiny_pipe, progress=False) as rec:
        tiny_pipe(PROMPT, num_inference_steps=2, generator=gen)
    assert rec.runs[0].seed is None and rec.runs[0].config.provenance.noise == "generator"
    gens = [torch.Generator().manual_seed(s) for s in (5, 6)]
    with record(tiny_pipe, progress=False) as rec:
        tiny_pipe(["a blue square"], num_images_per_prompt=2, num_inference_steps=2, generator=gens)
    assert [r.seed for r in rec.runs] == [5, 6] and [r.prompt for r in rec.runs] == ["a blue square"] * 2
    alone = generate(tiny_pipe, "a blue square", seed=6, steps=2, progress=False)
    assert torch.equal(rec.runs[1].noise, alone.noise)


def test_everything_removed_after_an_error(tiny_pipe):
    before = dict(tiny_pipe.unet.attn_processors)

    def boom(pipe, step, timestep, kwargs):
        if step == 1:
            raise RuntimeError("caller's callback failed")
        return kwargs

    with pytest.raises(RuntimeError, match="caller's callback failed"):
        with record(tiny_pipe, progress=False) as rec:
            tiny_pipe(PROMPT, num_inference_steps=3, callback_on_step_end=boom)
    assert rec.runs == []
    assert all(tiny_pipe.unet.attn_processors[k] is v for k, v in before.items())
    _clean(tiny_pipe)
    again = generate(tiny_pipe, PROMPT, seed=1, steps=2, progress=False)
    assert again.complete


def test_one_recording_per_pipeline(tiny_pipe):
    with record(tiny_pipe, progress=False):
        with pytest.raises(RuntimeError, match="already busy with a recording"):
            with record(tiny_pipe, progress=False):
                pass
    expected = {s: generate(tiny_pipe, PROMPT, seed=s, steps=3, progress=False) for s in range(4)}
    results, errors = {}, []

    def work(seed):
        try:
            results[seed] = generate(tiny_pipe, PROMPT, seed=seed, steps=3, progress=False)
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    for _ in range(2):
        threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        for seed, run in results.items():
            _assert_runs_equal(run, expected[seed])
    _clean(tiny_pipe)


def test_two_threads_on_the_embedded_model():
    from workbench.toy import weights_available

    if not weights_available():
        pytest.skip("the embedded model's weights are absent")
    from workbench import load_pipeline

    pipe = load_pipeline("toy", device="cpu", dtype="float32")
    prompts = ["a red circle left of a blue square", "a blue square left of a red circle"]
    expected = [generate(pipe, p, seed=2, steps=5, progress=False) for p in prompts]
    for _ in range(3):  # repeated: an interleaving that corrupts would show up
        results, errors = [None, None], []

        def work(i, results=results, errors=errors):
            try:
                results[i] = generate(pipe, prompts[i], seed=2, steps=5, progress=False)
            except Exception as err:  # pragma: no cover - reported below
                errors.append(err)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        for got, want in zip(results, expected):
            _assert_runs_equal(got, want)
    _clean(pipe)


def test_prompt_of_unknown_tokens_warns(tiny_pipe):
    with pytest.warns(UserWarning, match="prompt '!!!'") as caught:
        generate(tiny_pipe, "!!!", seed=0, steps=1, progress=False)
    assert caught[0].filename == __file__  # points at the caller's line
