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


def select_layers(
    entries, grids: dict[str, tuple[int, int]], *, label: str = "layers", among: str = "layer"
) -> list[str]:
    """The layer names (in ``grids``' order) that ``entries`` pick.

    Args:
        entries: ``None`` (every layer), or module paths (a trailing ``.processor`` is ignored),
            resolutions ``"HxW"`` and ints (a grid's larger side), or one of those alone.
        grids: layer name -> (rows, cols) of its query grid.
        label, among: for the error message: what the entries are called and what they choose from.

    Raises ``TypeError``/``ValueError`` naming the entry and the valid resolutions and names.
    """
    names = list(grids)
    if entries is None:
        return names
    if isinstance(entries, (str, int)):
        entries = (entries,)
    wanted: set[str] = set()
    for item in entries:
        if isinstance(item, bool) or not isinstance(item, (str, int)):
            raise TypeError(f"{label} entries must be str or int, got {item!r}")
        if isinstance(item, int):
            hits = {n for n, g in grids.items() if max(g) == item}
        elif item.removesuffix(".processor") in grids:
            hits = {item.removesuffix(".processor")}
        else:
            hits = {n for n, (h, w) in grids.items() if f"{h}x{w}" == item}
        if not hits:
            resolutions = sorted({f"{h}x{w}" for h, w in grids.values()})
            raise ValueError(
                f"{label} entry {item!r} matches no {among}; resolutions here are {resolutions}, "
                f"layer names e.g. {names[:3]}"
            )
        wanted |= hits
    return [n for n in names if n in wanted]
