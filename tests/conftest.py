import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory) -> Path:
    from tiny import build_pipeline_folder

    return build_pipeline_folder(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def tiny_pipe(tiny_folder):
    from workbench import load_pipeline

    return load_pipeline(tiny_folder, device="cpu", dtype="float32")
