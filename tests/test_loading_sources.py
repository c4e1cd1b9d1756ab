"""Model sources and devices are checked before anything loads, with messages that say what to pass."""

import json
import shutil

import pytest
import torch

from workbench import ModelNotAvailableError, load_pipeline
from workbench.core import loading
from workbench.core.loading import check_device, device_available


@pytest.mark.parametrize("source", ["", "   "])
def test_empty_source_is_refused(source):
    with pytest.raises(ValueError, match="source must name a model"):
        load_pipeline(source, device="cpu")


@pytest.mark.parametrize("source", ["./nope", "/x/y", "../up/there", "nope/../x", "~/no-such-folder-here"])
def test_missing_local_paths_are_no_such_folder(source):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        load_pipeline(source, device="cpu")


def test_missing_bare_name_lists_the_named_models():
    with pytest.raises(FileNotFoundError, match=r"no such folder or named model.*toy"):
        load_pipeline("toyy", device="cpu")


def test_hub_ids_still_go_to_the_hub(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotAvailableError, match="no folder of that name here"):
        load_pipeline("owner/name", device="cpu")


def test_model_index_without_class_name(tiny_folder, tmp_path):
    other = tmp_path / "m"
    shutil.copytree(tiny_folder, other)
    index = json.loads((other / "model_index.json").read_text())
    del index["_class_name"]
    (other / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="_class_name"):
        load_pipeline(other, device="cpu")
    (other / "model_index.json").write_text("[1, 2")
    with pytest.raises(ValueError, match="cannot be read as JSON"):
        load_pipeline(other, device="cpu")


def test_pickled_weights_only_are_refused_before_diffusers(tiny_folder, tmp_path, monkeypatch):
    other = tmp_path / "bin"
    shutil.copytree(tiny_folder, other)
    weights = other / "unet" / "diffusion_pytorch_model.safetensors"
    weights.rename(weights.with_suffix(".bin"))

    def no_loading(*args, **kwargs):
        raise AssertionError("from_pretrained must not be reached")

    import diffusers

    monkeypatch.setattr(diffusers.StableDiffusionPipeline, "from_pretrained", no_loading)
    with pytest.raises(ValueError, match=r"unet holds only pickled weights \(diffusion_pytorch_model.bin\)"):
        load_pipeline(other, device="cpu")


def test_a_folder_diffusers_cannot_load_is_a_value_error(tiny_folder, tmp_path):
    other = tmp_path / "gap"
    shutil.copytree(tiny_folder, other)
    (other / "unet" / "diffusion_pytorch_model.safetensors").unlink()  # nothing left to load
    with pytest.raises(ValueError, match="cannot be loaded as a diffusers pipeline"):
        load_pipeline(other, device="cpu")


def test_devices_are_checked_against_this_torch(monkeypatch):
    assert check_device("cpu") == "cpu" and device_available("cpu")
    assert check_device(torch.device("cpu")) == "cpu"
    with pytest.raises(ValueError, match="not a device torch knows"):
        check_device("foo")
    with pytest.raises(TypeError, match="device must be a str"):
        check_device(3)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"device 'cuda' is not available here .*use 'cpu'"):
        check_device("cuda")
    assert not device_available("cuda:0")
    assert check_device(None) == "cpu"


def test_load_pipeline_checks_the_device_before_loading(tiny_folder, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(loading, "_model_index", lambda folder: pytest.fail("loaded before the device check"))
    with pytest.raises(ValueError, match="device 'cuda'"):
        load_pipeline(tiny_folder, device="cuda")
