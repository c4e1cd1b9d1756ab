"""Decoded frames equal the pipeline's own decode; change curves match hand computations."""

import dataclasses

import numpy as np
import pytest
import torch
from test_analysis_fakes import (
    fake_run,
    one_thread,  # noqa: F401  (autouse fixture)
)

from workbench import RecordingPolicy, generate
from workbench.analysis import change_curves, commit_step, decode_latents, filmstrip


@pytest.fixture(scope="module")
def tiny_run(tiny_pipe):
    return generate(
        tiny_pipe,
        "a red circle left of a blue square",
        seed=5,
        steps=4,
        guidance_scale=1.0,
        progress=False,
        policy=RecordingPolicy(record_attention=False),
    )


def test_filmstrip_final_frame_is_the_image(tiny_pipe, tiny_run):
    strip = filmstrip(tiny_pipe, tiny_run)
    assert strip.x0.shape == (5, 16, 16, 3) and strip.x0.dtype == np.uint8
    assert strip.steps == [-1, 0, 1, 2, 3]
    assert np.array_equal(strip.latent[-1], np.asarray(tiny_run.image))
    assert np.array_equal(strip.x0[0], strip.latent[0])  # both start from the decoded noise
    # frame i + 1 of the x0 track is x0 at step i, decoded independently here
    with torch.no_grad():
        img = tiny_pipe.vae.decode(tiny_run.x0[2:3] / tiny_pipe.vae.config.scaling_factor).sample
    ref = ((img[0].permute(1, 2, 0) / 2 + 0.5).clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    assert np.array_equal(strip.x0[3], ref)
    curves = change_curves(tiny_run, strip=strip)
    last = curves.iloc[-1]
    assert last.latent_rms == 0 and last.latent_pixel_rms == 0
    px = np.sqrt(((strip.x0[1:].astype(float) - strip.latent[-1].astype(float)) / 255) ** 2).reshape(4, -1)
    expected = np.sqrt((px**2).mean(axis=1))
    assert np.allclose(curves.x0_pixel_rms.to_numpy(), expected, atol=1e-6)


def test_decode_rejects_wrong_channels(tiny_pipe):
    with pytest.raises(ValueError, match="latents must be \\(N, 4, h, w\\)"):
        decode_latents(tiny_pipe, torch.zeros(2, 3, 8, 8))


def test_change_curves_latent_columns_by_hand():
    lat = torch.zeros(4, 4, 4, 8)  # noise, then 3 steps
    lat[0] = 2.0
    lat[3] = 1.0  # final latent
    x0 = torch.stack([torch.full((4, 4, 8), v) for v in (3.0, 1.5, 1.0)])  # (3, 4, 4, 8)
    run = fake_run(latents=lat, x0=x0, total_steps=3, steps=[0])
    df = change_curves(run)
    assert df.x0_latent_rms.tolist() == pytest.approx([2.0, 0.5, 0.0])
    assert df.latent_rms.tolist() == pytest.approx([1.0, 1.0, 0.0])
    assert df.x0_latent_rel.tolist() == pytest.approx([2.0, 0.5, 0.0])  # noise is 1.0 from the end
    assert commit_step(df, threshold=0.6) == 1
    assert commit_step(df, threshold=3.0) == 0
    with pytest.raises(ValueError, match="column 'nope'"):
        commit_step(df, "nope")


def test_filmstrip_refuses_another_models_run(tiny_pipe, tiny_run):
    other = dataclasses.replace(
        tiny_run,
        config=dataclasses.replace(
            tiny_run.config,
            provenance=dataclasses.replace(
                tiny_run.config.provenance, model={"weights_sha256": "f" * 64, "source": "elsewhere"}
            ),
        ),
    )
    with pytest.raises(ValueError, match="not the run's .*elsewhere"):
        filmstrip(tiny_pipe, other)
