"""What changes a run's numbers besides its request: torch threads, device, dtype, attention backend,
library versions. Recorded with every run (``Provenance.numerics``) and held fixed across a sweep.

The same request on one torch thread and on two gives different attention bytes (the order of float
reductions changes) and, rarely, a different image; so the thread count is part of a run's numerics.

Example:
    >>> with torch_threads(1):  # doctest: +SKIP
    ...     run = generate(pipe, request)
    >>> run.config.provenance.numerics["threads"]  # doctest: +SKIP
    1
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import torch

from .errors import FieldError, FieldTypeError

#: What ``numerics`` reports that must agree for two runs of one request to be bit-identical.
NUMERIC_KEYS = ("threads", "device", "dtype", "attention_backend", "versions")


def machine_cores() -> int:
    """The CPU cores this process may run on (its affinity where the OS tells, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def check_threads(value, name: str = "threads") -> int:
    """A torch thread count in ``1..machine_cores()``, else a ``FieldError`` whose field is ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise FieldTypeError(name, f"must be an int, got {value!r}")
    cores = machine_cores()
    if not 1 <= value <= cores:
        raise FieldError(name, f"must be in 1..{cores} (the CPU cores this machine gives), got {value}")
    return value


@contextmanager
def torch_threads(threads: int | None):
    """Run the block with ``threads`` torch CPU threads, then put the caller's count back (``None``:
    leave torch's setting as it is)."""
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(check_threads(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def attention_backend() -> str:
    """The attention backend diffusers dispatches to (``"native"`` unless one was set)."""
    try:
        from diffusers.models.attention_dispatch import _AttentionBackendRegistry

        return str(getattr(_AttentionBackendRegistry.get_active_backend()[0], "value", "native"))
    except (ImportError, AttributeError, IndexError, TypeError):
        return "native"


def versions() -> dict[str, str]:
    """The versions of the libraries whose arithmetic a run went through."""
    import diffusers
    import transformers

    from workbench._version import __version__

    return {
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "workbench": __version__,
    }


def numerics(device: torch.device | str, dtype: torch.dtype | str) -> dict:
    """What decides a run's numbers besides its request, as recorded in ``Provenance.numerics``."""
    return {
        "threads": torch.get_num_threads(),
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        "attention_backend": attention_backend(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "versions": versions(),
    }


def numerics_differ(recorded: dict, here: dict) -> dict[str, tuple]:
    """``{key: (recorded, here)}`` for each of ``NUMERIC_KEYS`` that differs (keys a run did not record
    are not compared)."""
    return {
        key: (recorded[key], here.get(key))
        for key in NUMERIC_KEYS
        if key in recorded and recorded[key] != here.get(key)
    }
