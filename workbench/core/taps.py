"""Taps: functions run just before and just after a module's forward, without PyTorch's hooks.

A module with hooks leaves PyTorch's fast call path: every call of it then pays the general hook
machinery (several microseconds), which on a small denoiser is a visible share of a step. A tap puts
one plain function on the module's instance ``forward`` instead, which calls the taps' functions
around the forward the module has. The forward computes exactly what it computes untapped; the
functions see the arguments as that forward receives them (after any PyTorch pre-hooks) and its output.

A module whose ``forward`` something else already wraps (accelerate's offloading hooks, diffusers'
hook registry: group offloading, caches) gets PyTorch hooks instead: such a wrapper may put back the
forward it saved while a tap is on (diffusers removes some of its hooks during the first call), which
would silently take the tap off.

The handles answer ``remove()`` like hooks' handles do, in any order and more than once; the module's
own ``forward`` is back when its last tap goes (left alone if something else has wrapped it since:
that wrapper still calls the tapped forward, which then only passes through).

    >>> handle = after(module, lambda module, args, kwargs, output: print(output.shape))  # doctest: +SKIP
    >>> handle.remove()  # doctest: +SKIP
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable

_lock = threading.Lock()
_STATE = "_workbench_taps"  # the attribute of a tapped forward that holds its ``_Taps``


class _Taps:
    """One module's taps. The functions are tuples, replaced on every change: a call reads a snapshot."""

    def __init__(self):
        self.before: tuple[Callable, ...] = ()
        self.after: tuple[Callable, ...] = ()
        self.forward: weakref.ref | None = None  # the tapped forward these belong to (weakly: a handle
        # kept after its module is dropped must not keep the module alive)


def _tap(module) -> _Taps:
    """Put a tapped forward on ``module`` (over the class's own forward); returns its taps."""
    taps, forward = _Taps(), module.forward

    def tapped(*args, **kwargs):
        for fn in taps.before:
            fn(module, args, kwargs)
        output = forward(*args, **kwargs)
        for fn in taps.after:
            fn(module, args, kwargs, output)
        return output

    tapped.__wrapped__ = forward  # ``inspect.signature`` reads the forward's own
    setattr(tapped, _STATE, taps)
    taps.forward = weakref.ref(tapped)
    module.__dict__["forward"] = tapped
    return taps


def _taps_of(module) -> _Taps | None:
    """The taps whose forward ``module`` has now (a wrapper made with ``functools.wraps`` over a tapped
    forward copies its attributes, so the attribute alone does not say the forward is the tapped one)."""
    forward = module.__dict__.get("forward")
    taps = getattr(forward, _STATE, None)
    return taps if taps is not None and taps.forward() is forward else None


def _wrapped_by_another(module) -> bool:
    """Whether something else wraps the forward of ``module`` (which has no taps), or may come to."""
    return "forward" in module.__dict__ or hasattr(module, "_diffusers_hook") or hasattr(module, "_hf_hook")


class Tap:
    """One function on one module; ``remove`` takes it off (the handle protocol of hooks)."""

    def __init__(self, module, taps: _Taps, where: str, fn: Callable):
        self.module, self.taps, self.where, self.fn = weakref.ref(module), taps, where, fn

    def remove(self) -> None:
        with _lock:
            if self.fn is None:
                return
            functions = list(getattr(self.taps, self.where))
            if self.fn in functions:
                functions.remove(self.fn)
            setattr(self.taps, self.where, tuple(functions))
            module = self.module()
            empty = not self.taps.before and not self.taps.after
            if empty and module is not None and _taps_of(module) is self.taps:
                del module.__dict__["forward"]  # the class's forward again
            self.fn = self.taps = None


def _add(module, where: str, fn: Callable):
    with _lock:
        taps = _taps_of(module)
        if taps is None:
            if _wrapped_by_another(module):
                if where == "before":
                    return module.register_forward_pre_hook(fn, with_kwargs=True)
                return module.register_forward_hook(fn, with_kwargs=True)
            taps = _tap(module)
        setattr(taps, where, (*getattr(taps, where), fn))
    return Tap(module, taps, where, fn)


def before(module, fn: Callable):
    """Run ``fn(module, args, kwargs)`` before each call of ``module``'s forward; returns a handle."""
    return _add(module, "before", fn)


def after(module, fn: Callable):
    """Run ``fn(module, args, kwargs, output)`` after each call of ``module``'s forward; returns a handle."""
    return _add(module, "after", fn)
