"""A recorded run is exactly the stock pipeline's run: same image, same final latent."""

import numpy as np
import pytest
import torch
from diffusers.utils.torch_utils import randn_tensor

from workbench import RecordingPolicy, generate
from workbench.core.schedulers import build_scheduler

PROMPT = "a red circle left of a blue square"


def stock(pipe, scheduler, guidance, seed=7, steps=6, output_type="pil"):
    pipe.scheduler = build_scheduler(scheduler, pipe.scheduler.config)
    out = pipe(
        PROMPT,
        num_inference_steps=steps,
        guidance_scale=guidance,
        generator=torch.Generator().manual_seed(seed),
        output_type=output_type,
    )
    return out.images


@pytest.mark.parametrize("scheduler", ["ddim", "euler", "dpm++", "euler_a", "pndm", "lms"])
@pytest.mark.parametrize("guidance", [1.0, 5.0])
def test_recorded_run_equals_unhooked_pipeline(tiny_pipe, scheduler, guidance):
    original = tiny_pipe.scheduler
    try:
        run = generate(
            tiny_pipe, PROMPT, seed=7, steps=6, guidance_scale=guidance, scheduler=scheduler, progress=False
        )
        ref_image = stock(tiny_pipe, scheduler, guidance)[0]
        ref_latent = stock(tiny_pipe, scheduler, guidance, output_type="latent")[0]
        iterations = len(tiny_pipe.scheduler.timesteps)  # the stock loop's length for this scheduler
    finally:
        tiny_pipe.scheduler = original
    assert run.complete and run.steps_done == iterations >= 6
    assert run.timesteps.shape == (iterations,)
    assert np.array_equal(np.asarray(run.image), np.asarray(ref_image))
    assert torch.equal(run.latents[-1], ref_latent)
    # x0 at the last step is (close to) the final latent for every scheduler
    assert torch.allclose(run.x0[-1], run.latents[-1], atol=0.05 * run.latents[-1].abs().max().item())


def test_recording_all_heads_fp32_still_equal(tiny_pipe):
    policy = RecordingPolicy(heads="all", dtype="float32", negative=True)
    run = generate(tiny_pipe, PROMPT, seed=3, steps=4, guidance_scale=4.0, policy=policy, progress=False)
    out = tiny_pipe(
        PROMPT, num_inference_steps=4, guidance_scale=4.0, generator=torch.Generator().manual_seed(3)
    )
    assert np.array_equal(np.asarray(run.image), np.asarray(out.images[0]))


def test_processors_and_scheduler_restored(tiny_pipe):
    before = dict(tiny_pipe.unet.attn_processors)
    generate(tiny_pipe, PROMPT, seed=1, steps=2, progress=False)
    after = tiny_pipe.unet.attn_processors
    assert all(after[k] is before[k] for k in before)
    assert "step" not in vars(tiny_pipe.scheduler)
    hooked = [
        n
        for n, m in tiny_pipe.unet.named_modules()
        if m._forward_hooks or m._forward_pre_hooks or "forward" in vars(m)  # no hook, no tap left
    ]
    assert hooked == []

    def boom(step, x0, latent):
        raise RuntimeError("observer failed")

    with pytest.raises(RuntimeError, match="observer failed"):
        generate(tiny_pipe, PROMPT, seed=1, steps=3, progress=False, on_step=boom)
    after = tiny_pipe.unet.attn_processors
    assert all(after[k] is before[k] for k in before)
    assert "step" not in vars(tiny_pipe.scheduler)


def test_seeds(tiny_pipe):
    a = generate(tiny_pipe, PROMPT, seed=11, steps=3, progress=False)
    b = generate(tiny_pipe, PROMPT, seed=11, steps=3, progress=False)
    c = generate(tiny_pipe, PROMPT, seed=12, steps=3, progress=False)
    assert torch.equal(a.noise, b.noise) and torch.equal(a.latents, b.latents) and torch.equal(a.x0, b.x0)
    for name in a.attention.probs:
        assert torch.equal(a.attention.probs[name], b.attention.probs[name])
    assert not torch.equal(a.noise, c.noise)
    expected = randn_tensor((1, 4, 8, 8), generator=torch.Generator().manual_seed(11), dtype=torch.float32)
    assert torch.equal(a.noise, expected[0])
    # the loop starts from the drawn noise scaled by the scheduler's initial sigma (1 for DDIM)
    assert torch.equal(a.latents[0], expected[0] * tiny_pipe.scheduler.init_noise_sigma)


def test_same_seed_same_noise_for_different_prompts(tiny_pipe):
    a = generate(tiny_pipe, "a painting of a horse", seed=5, steps=2, progress=False)
    b = generate(tiny_pipe, "a horse of a painting", seed=5, steps=2, progress=False)
    assert torch.equal(a.noise, b.noise)
    assert not torch.equal(a.latents[-1], b.latents[-1])
