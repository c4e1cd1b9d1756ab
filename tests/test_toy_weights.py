"""The shipped toy weights load through the stock diffusers call and generate (skipped until exported)."""

import json

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from transformers import CLIPTokenizer

from workbench.toy import WEIGHTS_DIR, weights_available

pytestmark = pytest.mark.skipif(
    not weights_available(), reason="toy weights not exported yet: run `python -m workbench.toy.train`"
)


@pytest.fixture(scope="module")
def pipe():
    torch.set_num_threads(2)
    p = StableDiffusionPipeline.from_pretrained(WEIGHTS_DIR)
    p.set_progress_bar_config(disable=True)
    return p


def test_folder_layout_and_size():
    for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (WEIGHTS_DIR / sub).is_dir()
    assert (WEIGHTS_DIR / "tokenizer" / "vocab.json").exists()
    assert (WEIGHTS_DIR / "tokenizer" / "merges.txt").exists()
    assert not list(WEIGHTS_DIR.rglob("*.bin")) and not list(WEIGHTS_DIR.rglob("*.pt"))
    total = sum(p.stat().st_size for p in WEIGHTS_DIR.rglob("*") if p.is_file())
    assert total <= 40 * 2**20, f"{total / 2**20:.1f} MB"
    index = json.loads((WEIGHTS_DIR / "model_index.json").read_text())
    assert index["safety_checker"] == [None, None] and index["requires_safety_checker"] is False


def test_components_are_stock_and_consistent(pipe):
    assert type(pipe.unet).__name__ == "UNet2DConditionModel"
    assert type(pipe.tokenizer).__name__ == "CLIPTokenizer"
    assert pipe.text_encoder.config.max_position_embeddings == pipe.tokenizer.model_max_length
    assert pipe.unet.config.cross_attention_dim == pipe.text_encoder.config.hidden_size
    assert 0.1 < pipe.vae.config.scaling_factor < 10
    assert all(
        type(p).__name__ in ("AttnProcessor2_0", "AttnProcessor") for p in pipe.unet.attn_processors.values()
    )
    assert CLIPTokenizer.from_pretrained(WEIGHTS_DIR / "tokenizer").tokenize("yellow") == ["yel", "low</w>"]


def test_generates_a_coloured_32px_image(pipe):
    image = pipe(
        "a red circle left of a blue square",
        num_inference_steps=25,
        guidance_scale=4.0,
        height=32,
        width=32,
        generator=torch.Generator().manual_seed(0),
    ).images[0]
    arr = np.asarray(image)
    assert image.size == (32, 32)
    assert (arr < 200).any(-1).mean() > 0.02  # something other than white background was drawn
