"""Every notebook in notebooks/ runs top to bottom (nbclient) and is committed without outputs.

They run on the embedded model. While its weights are absent (a checkout without them), they run on
the tiny random test pipeline instead, which still checks every call; set WORKBENCH_NOTEBOOKS_REQUIRE_TOY=1
to make that a skip instead. WORKBENCH_NOTEBOOKS_MODEL names another model to run them on (e.g. toy-dit);
the notebooks whose cells depend on the architecture run on toy-dit in every run of the suite.
"""

import os
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _toy_available() -> bool:
    from workbench.toy import weights_available

    return weights_available()


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    if _toy_available():  # WORKBENCH_NOTEBOOKS_MODEL=toy-dit runs every notebook on the MM-DiT instead
        return os.environ.get("WORKBENCH_NOTEBOOKS_MODEL", "toy")
    if os.environ.get("WORKBENCH_NOTEBOOKS_REQUIRE_TOY"):
        pytest.skip("the embedded model's weights (workbench/toy/weights/) are absent")
    from tiny import build_pipeline_folder

    return str(build_pipeline_folder(tmp_path_factory.mktemp("nb-tiny"), max_length=32))


def test_there_are_notebooks():
    names = {p.name for p in NOTEBOOKS}
    assert {"01_quickstart.ipynb", "02_attention.ipynb", "03_word_order.ipynb", "04_seeds.ipynb"} <= names
    assert {"05_attributions.ipynb", "06_report.ipynb", "07_model_families.ipynb"} <= names
    assert {"08_interventions.ipynb"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: strip outputs"


@pytest.fixture(scope="module")
def families(tmp_path_factory) -> dict[str, str]:
    """Tiny random-weight SDXL, SD3 and Flux folders for the model-families notebook."""
    from tiny_families import build_flux_folder, build_sd3_folder, build_sdxl_folder

    root = tmp_path_factory.mktemp("nb-families")
    return {
        "WORKBENCH_SDXL": str(build_sdxl_folder(root)),
        "WORKBENCH_SD3": str(build_sd3_folder(root)),
        "WORKBENCH_FLUX": str(build_flux_folder(root)),
    }


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, model, tmp_path, monkeypatch, request):
    if "families" in path.stem:
        for name, folder in request.getfixturevalue("families").items():
            monkeypatch.setenv(name, folder)
    _execute(path, model, tmp_path, monkeypatch)


# The notebooks whose cells depend on the architecture (a UNet-only preset, occlusion's one CLIP encoder);
# the others make the same calls on any model.
ARCHITECTURE_DEPENDENT = [ROOT / "notebooks" / n for n in ("02_attention.ipynb", "05_attributions.ipynb")]


@pytest.mark.skipif(not _toy_available(), reason="the embedded models' weights are absent")
@pytest.mark.parametrize("path", ARCHITECTURE_DEPENDENT, ids=[p.stem for p in ARCHITECTURE_DEPENDENT])
def test_architecture_dependent_notebooks_run_on_toy_dit(path, tmp_path, monkeypatch):
    nb = _execute(path, "toy-dit", tmp_path, monkeypatch)
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    if "02" in path.stem:
        assert "preset: dit-word-share" in printed  # DAAM reads a UNet: the cell says what it used
    else:
        assert "occlusion: occlusion re-encodes token ids with one CLIP text encoder" in printed


def _execute(path, model, tmp_path, monkeypatch):
    """Run a notebook on ``model`` (nbclient); fails on the first failing cell; returns it with outputs."""
    from nbclient import NotebookClient

    monkeypatch.setenv("WORKBENCH_MODEL", model)
    monkeypatch.setenv("WORKBENCH_OUT", str(tmp_path / "out"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    return nb
