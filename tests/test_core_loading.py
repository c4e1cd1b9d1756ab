"""Loading: the real from_pretrained path on local folders; clear errors when weights are unavailable."""

import json
import shutil

import pytest

from workbench import ModelNotAvailableError, generate, load_pipeline
from workbench.core.loading import model_source, weights_hash


def test_local_folder_round_trip(tiny_folder):
    pipe = load_pipeline(tiny_folder, device="cpu")
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    assert pipe.safety_checker is None and str(pipe.unet.dtype) == "torch.float32"
    run = generate(pipe, "a red circle", seed=0, steps=2, progress=False)
    assert run.config.model["source"] == str(tiny_folder)
    assert run.config.model["weights_sha256"] == weights_hash(pipe) and len(weights_hash(pipe)) == 64
    assert run.config.versions["diffusers"] and run.config.scheduler == "DDIMScheduler"
    assert model_source(pipe) == str(tiny_folder)


def test_weights_hash_changes_with_weights(tiny_folder):
    a = load_pipeline(tiny_folder, device="cpu")
    b = load_pipeline(tiny_folder, device="cpu")
    assert weights_hash(a) == weights_hash(b)
    with __import__("torch").no_grad():
        b.unet.conv_in.weight[0, 0, 0, 0] += 1
    b2 = load_pipeline(tiny_folder, device="cpu")
    b2.unet.load_state_dict(b.unet.state_dict())
    assert weights_hash(b2) != weights_hash(a)


def test_hub_id_offline_fails_clearly(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotAvailableError, match="not available locally.*download"):
        load_pipeline("nobody-here/no-such-model", device="cpu")


def test_unsupported_and_bad_sources(tiny_folder, tmp_path):
    other = tmp_path / "kandinsky"
    shutil.copytree(tiny_folder, other)
    index = json.loads((other / "model_index.json").read_text())
    index["_class_name"] = "KandinskyV22Pipeline"  # a family without an adapter
    (other / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(NotImplementedError, match="KandinskyV22Pipeline.*supported.*FluxPipeline"):
        load_pipeline(other)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="model_index.json"):
        load_pipeline(tmp_path / "empty")
    with pytest.raises(TypeError, match="source"):
        load_pipeline(42)
    with pytest.raises(ValueError, match="dtype"):
        load_pipeline(tiny_folder, dtype="float8")
