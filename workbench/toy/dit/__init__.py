"""The toy world as a tiny Flux.1-architecture model ("toy-dit"): its component builders and trainer.

`WEIGHTS_DIR` is where the trainer exports a diffusers ``FluxPipeline`` folder by default
(``model_index.json``, ``transformer/``, ``vae/``, ``text_encoder/``, ``text_encoder_2/``,
``tokenizer/``, ``tokenizer_2/``, ``scheduler/``).
"""

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def weights_available() -> bool:
    """True when exported weights are present."""
    return (WEIGHTS_DIR / "model_index.json").exists()


__all__ = ["WEIGHTS_DIR", "weights_available"]
