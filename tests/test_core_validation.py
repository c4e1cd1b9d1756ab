"""Bad input gets a clear error naming the parameter, before any heavy work; Ctrl-C keeps the steps done."""

import threading

import pytest
import torch

from workbench import RecordingPolicy, generate

P = "a red circle"


@pytest.mark.parametrize(
    "kwargs, exc, pattern",
    [
        ({"steps": 0}, ValueError, "steps"),
        ({"steps": 2.5}, TypeError, "steps must be an int"),
        ({"steps": True}, TypeError, "steps"),
        ({"seed": -1}, ValueError, "seed"),
        ({"seed": 2**64}, ValueError, "seed"),
        ({"seed": "3"}, TypeError, "seed"),
        ({"height": 20}, ValueError, "height must be a multiple of 8.*try 16 or 24"),
        ({"width": 0}, ValueError, "width"),
        ({"guidance_scale": -1.0}, ValueError, "guidance_scale"),
        ({"guidance_scale": "high"}, TypeError, "guidance_scale"),
        ({"scheduler": "heun-magic"}, ValueError, "scheduler 'heun-magic' is not known.*ddim"),
        ({"policy": RecordingPolicy(layers=["up_blocks.9.attn2"])}, ValueError, "policy layers entry"),
        ({"policy": RecordingPolicy(layers=["64x64"])}, ValueError, "resolutions here are"),
        ({"policy": RecordingPolicy(steps=[0, 9])}, ValueError, r"policy steps \[9\] are out of range"),
        ({"policy": {"heads": "all"}}, TypeError, "policy must be a RecordingPolicy"),
        ({"negative_prompt": 3}, TypeError, "negative_prompt"),
    ],
)
def test_bad_input(tiny_pipe, kwargs, exc, pattern):
    args = {"seed": 1, "steps": 3, **kwargs}
    with pytest.raises(exc, match=pattern):
        generate(tiny_pipe, P, progress=False, **args)


def test_bad_prompt_and_policy_fields(tiny_pipe):
    with pytest.raises(TypeError, match="prompt must be a str"):
        generate(tiny_pipe, ["a", "b"], seed=1, progress=False)
    with pytest.raises(ValueError, match="heads"):
        RecordingPolicy(heads="max")
    with pytest.raises(ValueError, match="dtype"):
        RecordingPolicy(dtype="int8")
    with pytest.raises(ValueError, match="steps"):
        RecordingPolicy(steps=[-1])


def test_keyboard_interrupt_keeps_steps_done(tiny_pipe):
    before = dict(tiny_pipe.unet.attn_processors)

    def ctrl_c(step, x0, latent):
        if step == 2:
            raise KeyboardInterrupt

    with pytest.warns(UserWarning, match="stopped after 3 of 6 steps"):
        run = generate(tiny_pipe, P, seed=1, steps=6, progress=False, on_step=ctrl_c)
    assert not run.complete and run.steps_done == 3 and run.image is None
    assert run.latents.shape[0] == 4 and run.attention.steps == [0, 1, 2]
    for probs in run.attention.probs.values():
        assert probs.shape[0] == 3
    full = generate(tiny_pipe, P, seed=1, steps=6, progress=False)
    assert (run.x0 == full.x0[:3]).all()  # the steps kept are the real ones
    assert all(tiny_pipe.unet.attn_processors[k] is v for k, v in before.items())


def test_cancel_event_stops_after_current_step(tiny_pipe):
    cancel = threading.Event()

    def stop_at_1(step, x0, latent):
        if step == 1:
            cancel.set()

    with pytest.warns(UserWarning, match="stopped after 2 of 5 steps"):
        run = generate(tiny_pipe, P, seed=2, steps=5, progress=False, cancel=cancel, on_step=stop_at_1)
    assert not run.complete and run.steps_done == 2 and run.attention.steps == [0, 1]


def test_non_finite_latents_fail_the_run(tiny_pipe, tmp_path):
    from workbench import load_run, save_run

    with pytest.warns(UserWarning, match=r"non-finite \(NaN or inf\) at step \d"):
        run = generate(tiny_pipe, P, seed=1, steps=6, guidance_scale=1e30, progress=False)
    assert not run.complete and run.failure and run.image is None
    # the loop stopped after the step that failed, which is the last one kept
    assert f"at step {run.steps_done - 1}" in run.failure and run.steps_done < 6
    assert not torch.isfinite(run.latents[-1]).all() and torch.isfinite(run.latents[-2]).all()
    back = load_run(save_run(run, tmp_path / "r"))
    assert back.failure == run.failure and not back.complete
    with pytest.raises(ValueError, match="finite"):
        generate(tiny_pipe, P, seed=1, steps=4, guidance_scale=float("inf"), progress=False)


def test_huge_sizes_refused_before_any_work(tiny_pipe):
    import time

    from workbench.core.memory import MemoryPreflightError, peak_bytes

    t0 = time.perf_counter()
    with pytest.raises(
        ValueError, match=r"4096x4096 is more than 2x .* native size 16x16; sizes up to 32x32"
    ):
        generate(tiny_pipe, P, seed=1, steps=5, height=4096, width=4096, progress=False)
    with pytest.raises(MemoryPreflightError, match=r"needs about .* GB .* free; try \d+x\d+ or smaller"):
        generate(tiny_pipe, P, seed=1, steps=5, height=16384, width=16384, size_limit=None, progress=False)
    assert time.perf_counter() - t0 < 30  # refused, not attempted
    from workbench.core.adapters import adapter_for

    adapter = adapter_for(tiny_pipe)
    assert peak_bytes(adapter, 32, 64, 2) == 2 * peak_bytes(adapter, 32, 32, 2)  # linear in pixels
    run = generate(tiny_pipe, P, seed=1, steps=1, height=32, width=32, progress=False)  # at the bound: fine
    assert run.complete


def test_interrupt_before_the_first_step_is_an_interrupt(tiny_pipe, monkeypatch):
    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(type(tiny_pipe), "encode_prompt", ctrl_c)  # Ctrl-C while the text is encoded
    with pytest.raises(KeyboardInterrupt):
        generate(tiny_pipe, P, seed=1, steps=3, progress=False)
    monkeypatch.undo()
    assert generate(tiny_pipe, P, seed=1, steps=1, progress=False).complete  # nothing left behind
