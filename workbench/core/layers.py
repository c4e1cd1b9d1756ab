"""Cross-attention layers of a denoiser: names, heads and the grid each one's queries lie on."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CrossAttentionLayer:
    """One cross-attention module, keyed by its module path (without ``.processor``)."""

    name: str
    heads: int
    factor: int  # how many times the latent grid is halved before this layer

    def grid(self, latent_height: int, latent_width: int) -> tuple[int, int]:
        """The (rows, cols) of this layer's query grid for a latent of the given size.

        Stride-2 convolutions with padding 1 map n to ceil(n / 2), so the grid follows the latent's own
        height and width (never a square root of the query count).
        """
        h, w = latent_height, latent_width
        for _ in range(self.factor):
            h, w = -(-h // 2), -(-w // 2)
        return h, w

    def resolution(self, latent_height: int, latent_width: int) -> str:
        h, w = self.grid(latent_height, latent_width)
        return f"{h}x{w}"


def _factor(path: str, n_down: int, n_up: int) -> int:
    parts = path.split(".")
    if parts[0] == "down_blocks":
        return int(parts[1])
    if parts[0] == "up_blocks":
        return n_up - 1 - int(parts[1])
    if parts[0] == "mid_block":
        return n_down - 1
    raise ValueError(f"cannot place attention layer {path!r} in the UNet's resolution levels")


def cross_attention_layers(unet) -> list[CrossAttentionLayer]:
    """All cross-attention layers of a ``UNet2DConditionModel``, in execution order."""
    n_down = len(unet.down_blocks)
    n_up = len(unet.up_blocks)
    layers = []
    for name, module in unet.named_modules():
        if getattr(module, "is_cross_attention", False) and hasattr(module, "processor"):
            layers.append(
                CrossAttentionLayer(name=name, heads=int(module.heads), factor=_factor(name, n_down, n_up))
            )
    order = {"down_blocks": 0, "mid_block": 1, "up_blocks": 2}
    layers.sort(key=lambda layer: (order[layer.name.split(".")[0]], _numeric_key(layer.name)))
    return layers


def _numeric_key(name: str) -> tuple:
    return tuple(int(p) if p.isdigit() else 0 for p in name.split("."))
