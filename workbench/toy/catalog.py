"""The embedded models, by name: where each one's weights and model card live, how it was trained and
how the toy evaluation drives it (standard library only, so that naming them imports no torch).

    "toy"      a Stable Diffusion-architecture UNet (cross-attention), DDIM
    "toy-dit"  a Flux.1-architecture MM-DiT (joint attention, dual- and single-stream blocks), flow matching
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import WEIGHTS_DIR as UNET_WEIGHTS
from .dit import WEIGHTS_DIR as DIT_WEIGHTS


@dataclass(frozen=True)
class EmbeddedModel:
    """One embedded model.

    Attributes:
        name: the name ``load_pipeline`` takes.
        weights: its diffusers folder.
        card: its model card (the evaluation writes its results block there).
        train: the command that trains it (and resumes from its checkpoints).
        architecture: in words, for tables and headings.
        guidance_field: the ``Request`` field the evaluation's guidance sets (``guidance_scale`` for the
            UNet's batched CFG, ``true_cfg_scale`` for Flux's separate negative call).
        guidance: the evaluation's guidance (chosen on held-in captions with seeds 100-101, never the
            evaluation's own seeds; see the model card).
        sampler: the sampler the evaluation uses (the pipeline's own scheduler), in words.
    """

    name: str
    weights: Path
    card: Path
    train: str
    architecture: str
    guidance_field: str
    guidance: float
    sampler: str

    def available(self) -> bool:
        """True when its exported weights are present."""
        return (self.weights / "model_index.json").exists()

    @property
    def missing_hint(self) -> str:
        return f"train them with `{self.train}` or reinstall the package"


EMBEDDED: dict[str, EmbeddedModel] = {
    "toy": EmbeddedModel(
        name="toy",
        weights=UNET_WEIGHTS,
        card=UNET_WEIGHTS.parent / "MODEL_CARD.md",
        train="python -m workbench.toy.train",
        architecture="UNet, cross-attention (Stable Diffusion 1.x layout)",
        guidance_field="guidance_scale",
        guidance=2.5,
        sampler="DDIM",
    ),
    "toy-dit": EmbeddedModel(
        name="toy-dit",
        weights=DIT_WEIGHTS,
        card=DIT_WEIGHTS.parent / "MODEL_CARD.md",
        train="python -m workbench.toy.dit.train",
        architecture="MM-DiT, joint attention (Flux.1 layout: dual- and single-stream blocks)",
        guidance_field="true_cfg_scale",
        guidance=2.0,
        sampler="flow-matching Euler",
    ),
}
