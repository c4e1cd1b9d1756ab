"""The embedded default model: a procedural world, its training script and its shipped weights.

`WEIGHTS_DIR` is a diffusers folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/,
scheduler/) that `StableDiffusionPipeline.from_pretrained(WEIGHTS_DIR)` loads.
"""

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def weights_available() -> bool:
    """True when exported weights are present."""
    return (WEIGHTS_DIR / "model_index.json").exists()


__all__ = ["WEIGHTS_DIR", "weights_available"]
