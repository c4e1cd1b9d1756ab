"""The study on both embedded models: the same requests on each, one report that names every run,
figure and table by its model, and IoU against the toy world's masks per word and per block."""

import dataclasses
import re

import numpy as np
import pytest

from workbench.crossmodel import mask_ious
from workbench.study import run_study
from workbench.toy.catalog import EMBEDDED
from workbench.toy.evaluate import Sample, score
from workbench.toy.world import ObjectSpec, SceneSpec

pytestmark = pytest.mark.skipif(
    not all(m.available() for m in EMBEDDED.values()), reason="embedded weights not exported"
)
PROMPT, SWAP = "a red circle left of a blue square", "a blue square left of a red circle"


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    out = tmp_path_factory.mktemp("models") / "s"
    return run_study(out, model=["toy", "toy-dit"], seeds=(0, 1), steps=8, log=lambda *_: None)


def test_each_model_ran_the_same_requests_into_its_own_folder(compared):
    assert list(compared.studies) == ["toy", "toy-dit"]
    for name, study in compared.studies.items():
        assert [(r.prompt, r.seed) for r in study.runs] == [(PROMPT, 0), (PROMPT, 1), (SWAP, 0), (SWAP, 1)]
        assert all(d.parent == compared.out / name / "runs" for d in study.dirs)
        assert study.index.exists()
    pipelines = {r.config.model["pipeline"] for r in compared.runs}
    assert pipelines == {"StableDiffusionPipeline", "FluxPipeline"}
    assert set(compared.summary.model) == {"toy", "toy-dit"} and len(compared.summary) == 4


def test_the_report_labels_every_run_figure_and_table_by_model(compared):
    page = compared.report.read_text()
    headings = re.findall(r'<h2 id="run-\d+">(.*?)</h2>', page)
    assert len(headings) == 8
    assert [h.rsplit(" · model ", 1)[1] for h in headings] == ["toy"] * 4 + ["toy-dit"] * 4
    captions = re.findall(r"<h2>(.*?)</h2>", page)
    per_model = [
        c for c in captions if not c.startswith(("Models side by side", "Placement", "Word-map IoU"))
    ]
    assert per_model and all(c.startswith(("toy · ", "toy-dit · ")) for c in per_model), per_model
    assert sum(c.startswith("toy-dit · ") for c in captions) == sum(c.startswith("toy · ") for c in captions)
    for shared in (
        "Models side by side: final images",
        "Placement and commitment, per model",
        "IoU per block",
    ):
        assert shared in page


def test_placement_and_commitment_per_model(compared):
    from workbench.crossmodel import placement_table

    table = placement_table(compared.studies, (PROMPT, SWAP))
    assert list(table.model) == ["toy", "toy-dit"]
    assert table.guidance.tolist() == ["guidance 4", "true CFG 2 against “” · guidance_scale 1"]
    for name, study in compared.studies.items():
        s = study.summary
        commits = [*s["commitment step (prompt)"], *s["commitment step (swap)"]]
        assert table.set_index("model").loc[name, "commitment step (median, both orders)"] == np.median(
            commits
        )


def test_ious_per_word_and_block_match_the_evaluation(compared):
    ious = compared.ious
    blocks = {m: list(dict.fromkeys(g.layers)) for m, g in ious.groupby("model")}
    assert blocks["toy"] == ["all", "8x8", "4x4"]
    assert blocks["toy-dit"] == ["all", "dual 0", "dual 1", "single 0", "single 1", "single 2", "single 3"]
    # the evaluation's scoring (word positions from the scene spec) agrees with the study's (word names)
    red, blue = ObjectSpec("red", "circle"), ObjectSpec("blue", "square")
    run = compared.studies["toy-dit"].runs[0]
    from workbench.analysis.heatmaps import word_maps

    sample = Sample(
        SceneSpec((red, blue), "left of"),
        0,
        np.asarray(run.image.convert("RGB")),
        word_maps(run, "all-mean", size=(32, 32)).maps.float(),
    )
    expected = score([sample])
    rows = mask_ious(run)
    whole = rows[rows.layers == "all"]
    assert whole.word.tolist() == ["red", "circle", "blue", "square"]
    assert whole[whole.role == "colour"].iou.mean() == pytest.approx(expected["iou_color"], abs=1e-6)
    assert whole[whole.role == "shape"].iou.mean() == pytest.approx(expected["iou_shape"], abs=1e-6)


def test_a_prompt_outside_the_toy_world_has_no_mask_ious(compared):
    run = compared.studies["toy"].runs[0]
    horse = run.config.request.replace(prompt="a painting of a horse")
    other = dataclasses.replace(run, config=dataclasses.replace(run.config, request=horse))
    assert len(mask_ious(run)) > 0 and len(mask_ious(other)) == 0


def test_a_bad_model_is_refused_before_any_model_runs(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder or named model.*nosuchmodel"):
        run_study(tmp_path / "s", model=["toy", "nosuchmodel"], seeds=(0,), steps=2, log=lambda *_: None)
    assert not (tmp_path / "s").exists()  # nothing ran, nothing written
