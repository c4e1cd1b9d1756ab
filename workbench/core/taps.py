"""Taps: functions run just before and just after a module's forward, without PyTorch's hooks.

A module with hooks leaves PyTorch's fast call path: every call of it then pays the general hook
machinery (several microseconds), which on a small denoiser is a visible share of a step. A tap puts
one plain function on the module's instance ``forward`` instead, which calls the taps' functions
around the forward the module had. The forward computes exactly what it computes untapped; the
functions see the arguments as that forward receives them (after any PyTorch pre-hooks) and its output.

The handles answer ``remove()`` like hooks' handles do, in any order; the module's own ``forward`` is
back when its last tap goes (left alone if something else has wrapped it since: that wrapper still
calls the tapped forward, which then only passes through).

    >>> handle = after(module, lambda module, args, kwargs, output: print(output.shape))  # doctest: +SKIP
    >>> handle.remove()  # doctest: +SKIP
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable

_lock = threading.Lock()
_taps: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # module -> _Taps


class _Taps:
    """One module's taps: its instance ``forward`` while any is on it."""

    def __init__(self, module):
        self.had = "forward" in module.__dict__  # an instance forward (another wrapper) was there
        self.before: list[Callable] = []
        self.after: list[Callable] = []
        self.forward = _tapped(module, module.forward, self.before, self.after)
        module.forward = self.forward

    def release(self, module) -> None:
        if module.__dict__.get("forward") is not self.forward:  # wrapped again since: leave it
            return
        original = self.forward.__wrapped__
        if self.had:
            module.forward = original
        else:
            del module.forward


def _tapped(module, forward, before: list, after: list):
    def tapped(*args, **kwargs):
        for fn in before:
            fn(module, args, kwargs)
        output = forward(*args, **kwargs)
        for fn in after:
            fn(module, args, kwargs, output)
        return output

    tapped.__wrapped__ = forward
    return tapped


class Tap:
    """One function on one module; ``remove`` takes it off (the handle protocol of hooks)."""

    def __init__(self, module, where: str, fn: Callable):
        self.module, self.where, self.fn = weakref.ref(module), where, fn

    def remove(self) -> None:
        module = self.module()
        if module is None or self.fn is None:
            return
        with _lock:
            taps = _taps.get(module)
            if taps is not None:
                functions = getattr(taps, self.where)
                if self.fn in functions:
                    functions.remove(self.fn)
                if not taps.before and not taps.after:
                    taps.release(module)
                    del _taps[module]
        self.fn = None


def _add(module, where: str, fn: Callable) -> Tap:
    with _lock:
        taps = _taps.get(module)
        if taps is None:
            taps = _taps[module] = _Taps(module)
        getattr(taps, where).append(fn)
    return Tap(module, where, fn)


def before(module, fn: Callable) -> Tap:
    """Run ``fn(module, args, kwargs)`` before each call of ``module``'s forward."""
    return _add(module, "before", fn)


def after(module, fn: Callable) -> Tap:
    """Run ``fn(module, args, kwargs, output)`` after each call of ``module``'s forward."""
    return _add(module, "after", fn)
