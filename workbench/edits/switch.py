"""A prompt switch: the conditional text conditioning changes from prompt A to prompt B from a step on.

When the call encodes its prompt, B is encoded too, by the pipeline's own ``encode_prompt`` with the
same arguments (so B's conditioning is exactly what a call on B would get); from the switch's step on,
the conditional rows of the denoiser's text inputs (``adapter.conditioning``: the token embeddings and,
where the family has them, the pooled embeddings) are B's. The unconditional rows stay as they are.
"""

from __future__ import annotations

import inspect
import threading

import torch

from ..core.edit import Edit


class Switch:
    def __init__(self, pipe, adapter, edit: Edit):
        self.pipe, self.adapter, self.edit = pipe, adapter, edit
        self.owner = threading.get_ident()
        self.twin: tuple | None = None  # B's ``encode_prompt`` outputs for the call under way
        self.prompts = 0

    def start(self, text) -> None:
        """A call starts: B is encoded at its first ``encode_prompt``."""
        self.twin, self.prompts = None, len(text.prompts)

    def wrap_encode(self, original):
        signature = inspect.signature(original)

        def encode_prompt(*args, **kwargs):
            out = original(*args, **kwargs)
            if threading.get_ident() == self.owner and self.twin is None and self.prompts:
                bound = signature.bind_partial(*args, **kwargs).arguments
                one = isinstance(bound.get("prompt"), str)  # the same form: pipelines check it against others
                bound["prompt"] = self.edit.prompt if one else [self.edit.prompt] * self.prompts
                for other in ("prompt_2", "prompt_3", "prompt_embeds", "pooled_prompt_embeds"):
                    if other in bound:
                        bound[other] = None
                stock = type(self.pipe).encode_prompt  # the class's own: no observer sees the twin call
                self.twin = tuple(stock(self.pipe, **bound))
            return out

        return encode_prompt

    def apply(self, args, kwargs, step: int, cond: list[int]):
        """The denoiser call's arguments with B's conditioning on the conditional rows (None: unchanged)."""
        if step < self.edit.from_step or self.twin is None:
            return None
        args, kwargs = list(args), dict(kwargs)
        for index, path in self.adapter.conditioning:
            new = self.twin[index]
            name, _, key = path.partition(".")
            if name == "encoder_hidden_states" and name not in kwargs and len(args) > 2:
                args[2] = _put(args[2], new, cond)
            elif key:
                inner = dict(kwargs[name])
                inner[key] = _put(inner[key], new, cond)
                kwargs[name] = inner
            else:
                kwargs[name] = _put(kwargs[name], new, cond)
        return tuple(args), kwargs


def _put(current: torch.Tensor, new: torch.Tensor, rows: list[int]) -> torch.Tensor:
    if new.shape[0] != len(rows) or new.shape[1:] != current.shape[1:]:
        raise RuntimeError(
            f"cannot switch the conditioning: {tuple(new.shape)} from the switched prompt does not fit "
            f"{len(rows)} rows of {tuple(current.shape)}"
        )
    out = current.clone()
    out[rows] = new.to(device=current.device, dtype=current.dtype)
    return out
