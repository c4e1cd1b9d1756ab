"""Which edits act on a denoiser's calls now: the one place where interventions and recording meet.

The recorder only reads this (a recorded call's config keeps the edits that acted on it); the
``workbench.edits`` package writes it while edits are installed. A denoiser is edited by at most one
block at a time, and only its owner thread's calls are edited.
"""

from __future__ import annotations

import threading
import weakref
from contextlib import contextmanager

from .edit import Edit

_ACTIVE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # denoiser -> (owner thread, edits)
_GUARD = threading.Lock()


def active_edits(denoiser) -> tuple[Edit, ...]:
    """The edits acting on this thread's calls of ``denoiser`` (empty when none)."""
    with _GUARD:
        owner, edits = _ACTIVE.get(denoiser, (None, ()))
    return edits if owner == threading.get_ident() else ()


@contextmanager
def marked(denoiser, edits: tuple[Edit, ...]):
    """Mark ``denoiser`` as edited by ``edits`` for this thread, for the block.

    Raises:
        RuntimeError: it is already being edited (by this or another block).
    """
    with _GUARD:
        if denoiser in _ACTIVE:
            raise RuntimeError(
                "this pipeline (or one sharing its denoiser) is already being edited; put all edits in one "
                "editing(pipe, [...]) block instead of nesting blocks"
            )
        _ACTIVE[denoiser] = (threading.get_ident(), tuple(edits))
    try:
        yield
    finally:
        with _GUARD:
            _ACTIVE.pop(denoiser, None)
