"""What a notebook's first cell uses: loading a model without the libraries' loading noise.

diffusers and transformers print, while a pipeline loads, progress bars of its components and weights
and notices that read like errors in a notebook's red stderr box but need nothing from a researcher
(no ``accelerate`` installed, no ``torchvision`` for an image processor the pipeline does not use).
``quiet_loading`` hides those while the block runs; every other library message at warning level or
above still shows (missing or unexpected weights, for instance), and everything is as before afterwards.
It lives in ``workbench.quiet``, which the command line uses too.

Example:
    with quiet_loading():                    # quiet_loading(verbose=True) shows everything
        pipe = workbench.load_pipeline("toy")
"""

from __future__ import annotations

from workbench.quiet import LIBRARIES, NOTICES, quiet_loading

__all__ = ["LIBRARIES", "NOTICES", "quiet_loading"]
