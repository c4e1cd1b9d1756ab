"""The query and key an attention kernel is handed, read as the processor hands them over.

Diffusers' newer processors (Flux.1, Chroma, Flux.2, Qwen-Image) form q and k (projections, q/k
norms, joining the text and image streams, rotary) and pass them to ``dispatch_attention_fn``, the
function of their module that picks the attention backend. While a layer is observed, that name in
the processor's module refers to a pass-through: it hands the very tensors it receives to the layer's
observer, then calls the original with every argument unchanged. The observer then need not form q and
k a second time (the rotary alone is half of the recording's work on Flux.1), and what it reads is
exactly what the kernel computed with.

Only the thread that is inside an observed layer is seen (others pass straight through), and only the
layer's first kernel call (an IP adapter's own attention comes after it). The original is put back
when the last observer of the module is removed.
"""

from __future__ import annotations

import sys
import threading

NAME = "dispatch_attention_fn"

_local = threading.local()  # .observer: the observer whose layer runs now in this thread (or None)
_lock = threading.Lock()
_watched: dict[str, list] = {}  # module name -> [original, pass-through, observers]


class Watch:
    """One observer's use of a module's pass-through; ``remove`` ends it (the handle protocol of hooks)."""

    def __init__(self, module: str):
        self.module, self.removed = module, False

    def remove(self) -> None:
        if self.removed:
            return
        self.removed = True
        _local.observer = None  # a layer that ended in an error leaves no observer expecting its kernel
        with _lock:
            entry = _watched[self.module]
            entry[2] -= 1
            if entry[2] == 0:
                del _watched[self.module]
                module = sys.modules.get(self.module)
                if getattr(module, NAME, None) is entry[1]:  # still ours: put the original back
                    setattr(module, NAME, entry[0])


def watch(processor) -> Watch | None:
    """Pass ``processor``'s kernel inputs to observers (``expect``); None where its module has no
    ``dispatch_attention_fn`` (its q and k are then formed by the observer itself)."""
    name = type(processor).__module__
    module = sys.modules.get(name)
    if module is None or not callable(getattr(module, NAME, None)):
        return None
    with _lock:
        entry = _watched.get(name)
        if entry is None:
            original = getattr(module, NAME)
            entry = _watched[name] = [original, _pass_through(original), 0]
            setattr(module, NAME, entry[1])
        entry[2] += 1
    return Watch(name)


def _pass_through(original):
    def dispatch_attention_fn(query, key, value, *args, **kwargs):
        observer = getattr(_local, "observer", None)
        if observer is not None:
            _local.observer = None  # the layer's first kernel call only
            observer.kernel_inputs(query, key)
        return original(query, key, value, *args, **kwargs)

    dispatch_attention_fn.__wrapped__ = original
    return dispatch_attention_fn


def expect(observer) -> None:
    """The layer of ``observer`` runs now in this thread (None: no observed layer runs)."""
    _local.observer = observer
