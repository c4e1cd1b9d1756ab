"""A model folder's declared defaults (``workbench_defaults.json``): its native size and the T5 length it
was made for reach the call, the recorded run equals the stock call made with them, bad values are
refused naming the file."""

import json
import shutil

import numpy as np
import pytest
import torch
from tiny_families import build_flux_folder

from workbench import generate, load_pipeline
from workbench.core.adapters import MODEL_DEFAULTS_FILE


@pytest.fixture(scope="module")
def flux_folder(tmp_path_factory):
    return build_flux_folder(tmp_path_factory.mktemp("flux-defaults"))


def test_declared_size_and_t5_length_reach_the_call(flux_folder, tmp_path):
    folder = tmp_path / "declared"
    shutil.copytree(flux_folder, folder)
    (folder / MODEL_DEFAULTS_FILE).write_text(
        json.dumps({"guidance_scale": 2.0, "size": 32, "max_sequence_length": 8})
    )
    pipe = load_pipeline(folder, dtype="float32")
    run = generate(pipe, "a red circle left of a blue square", seed=1, steps=2, progress=False)
    assert (run.config.height, run.config.width, run.config.guidance_scale) == (32, 32, 2.0)
    assert int((run.tokens.kind != "cut").sum()) == 8  # the T5 positions the denoiser saw
    stock = pipe(
        "a red circle left of a blue square",
        height=32,
        width=32,
        num_inference_steps=2,
        guidance_scale=2.0,
        max_sequence_length=8,
        generator=torch.Generator().manual_seed(1),
        output_type="np",
    ).images[0]
    assert np.array_equal(np.asarray(run.image), (stock * 255).round().astype("uint8"))


@pytest.mark.parametrize(
    "bad",
    [
        {"size": 0},
        {"size": True},
        {"max_sequence_length": 513},
        {"steps": 4},
        [1],
        {"true_cfg_scale": -1},
        {"true_cfg_scale": "2"},
        {"negative_prompt": 3},
    ],
)
def test_bad_declared_defaults_are_refused_naming_the_file(flux_folder, tmp_path, bad):
    folder = tmp_path / "bad"
    shutil.copytree(flux_folder, folder)
    (folder / MODEL_DEFAULTS_FILE).write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=MODEL_DEFAULTS_FILE):
        load_pipeline(folder, dtype="float32")
