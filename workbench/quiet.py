"""Loading a model without the libraries' loading noise, for notebooks and the command line alike.

diffusers and transformers print, while a pipeline loads, progress bars of its components and weights
("Loading pipeline components", "Loading weights") and notices that need nothing from the user (no
``accelerate`` installed, no ``torchvision`` for an image processor the pipeline does not use).
``quiet_loading`` hides those while its block runs; every other library message at warning level or
above still shows (missing or unexpected weights, for instance), as do Python warnings (a prompt cut off
by the text encoder), and everything is as before afterwards.

This module imports only the standard library; diffusers and transformers load when a block starts.

Example:
    with quiet_loading():                    # quiet_loading(verbose=True) shows everything
        pipe = workbench.load_pipeline("toy")
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager

# Loading notices that ask nothing of the user: the optional packages they name are not needed here.
NOTICES = (
    re.compile(r"requires torchvision \(not installed\); falling back to"),
    re.compile(r"Cannot initialize model with low cpu memory usage because `accelerate` was not found"),
)
LIBRARIES = ("diffusers", "transformers")


class _DropNotices(logging.Filter):
    """A logging filter that drops the records matching one of ``NOTICES`` and passes all others."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(p.search(message) for p in NOTICES)


@contextmanager
def quiet_loading(verbose: bool = False) -> Iterator[None]:
    """Hide the libraries' loading progress bars and harmless notices inside the block.

    Args:
        verbose: show everything (the block runs as without this).
    """
    if verbose:
        yield
        return
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    bars = [(lib, lib.is_progress_bar_enabled()) for lib in (diffusers_logging, transformers_logging)]
    drop = _DropNotices()
    roots = [diffusers_logging.get_logger("diffusers"), transformers_logging.get_logger("transformers")]
    handlers = [h for root in roots for h in root.handlers]  # get_logger set them up
    levels = {name: logging.getLogger(name).level for name in LIBRARIES}
    try:
        for lib, _ in bars:
            lib.disable_progress_bar()
        for name in LIBRARIES:  # warnings and above, whatever a library was set to
            logger = logging.getLogger(name)
            if logger.getEffectiveLevel() < logging.WARNING:
                logger.setLevel(logging.WARNING)
        for h in handlers:
            h.addFilter(drop)
        yield
    finally:
        for h in handlers:
            h.removeFilter(drop)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        for lib, enabled in bars:
            if enabled:
                lib.enable_progress_bar()
