"""Edits as a sweep axis: every request runs once per edit list, each run keeps its edits (config, index
row, id), an edited run equals ``generate(edits=...)``, and a resumed sweep runs nothing again."""

import pytest
import torch

import workbench
from workbench import Edit, generate, load_run
from workbench.sweeps import SpecError, SweepSpec, read_index

PROMPT = "a red circle left of a blue square"
EDITS = [
    [],
    [Edit.ablate("red")],
    [{"kind": "switch", "prompt": "a blue square left of a red circle", "from_step": 1}],
]


def test_edit_lists_are_an_axis_with_their_edits_in_every_row(tiny_folder, tiny_pipe, tmp_path):
    spec = SweepSpec(
        model=str(tiny_folder), prompts=[PROMPT], seeds=[0, 1], steps=3, guidance_scales=[4.0], edits=EDITS
    )
    assert len(spec.plan()) == 6
    assert SweepSpec.from_dict(spec.to_dict()) == spec
    workbench.sweep(spec, out=tmp_path)
    index = read_index(tmp_path)
    assert len(index) == 6 and set(index.status) == {"done"}
    assert sorted(index.edits.unique()) == sorted(
        ["", "ablate 'red'", "switch to 'a blue square left of a red circle' from step 1"]
    )
    assert index.request_id.nunique() == 6
    row = index[(index.edits == "ablate 'red'") & (index.seed == 1)].iloc[0]
    run = load_run(tmp_path / row.path)
    assert run.config.edits == (Edit.ablate("red"),)
    direct = generate(
        tiny_pipe, PROMPT, seed=1, steps=3, guidance_scale=4.0, edits=[Edit.ablate("red")], progress=False
    )
    assert torch.equal(run.latents, direct.latents)
    import json

    from workbench.analysis.sweeps import SETTINGS, done_runs, settings_label

    (record,) = (tmp_path / "sweeps").glob("*.json")  # every planned request with its edits
    planned = {r["request_id"]: r.get("edits", []) for r in json.loads(record.read_text())["requests"]}
    assert planned[row.request_id] == [Edit.ablate("red").to_dict()] and sorted(
        map(len, planned.values())
    ) == [0, 0, 1, 1, 1, 1]
    # the analyses group by the edits as by any other setting, and say them
    groups = done_runs(index).groupby("edits")
    assert "edits" in SETTINGS and len(groups) == 3
    assert settings_label({**index.iloc[0][SETTINGS].to_dict(), "edits": "ablate 'red'"}).endswith(
        "edited: ablate 'red'"
    )
    assert "edits" in done_runs(index.drop(columns="edits")).columns  # an index from before edits
    again = workbench.sweep(spec, out=tmp_path)  # resumed: nothing left to run
    assert len(read_index(tmp_path)) == 6 and again is not None


def test_an_unedited_sweep_keeps_its_id_and_bad_edit_lists_name_the_field():
    plain = SweepSpec(model="toy", prompts=[PROMPT])
    assert "edits" not in plain.to_dict()
    for bad in ([], [{"kind": "ablate"}], [[{"kind": "nope"}]], [[], []]):
        with pytest.raises(SpecError) as info:
            SweepSpec(model="toy", prompts=[PROMPT], edits=bad)
        assert info.value.field == "edits"


@pytest.mark.parametrize(
    "edits, says",
    [
        ([{"kind": "ablate", "words": ["green"]}], "'green' is not a word of the prompt"),
        (
            [{"kind": "switch", "prompt": "a blue square", "from_step": 10}],
            "edit from_step 10 is past the last step",
        ),
        (
            [{"kind": "reweight", "words": ["red"], "factor": 2.0, "heads": [7]}],
            "edit heads [7] name heads past",
        ),
        ([{"kind": "ablate", "words": ["red"], "layers": ["99x99"]}], "edit layers"),
    ],
)
def test_edit_lists_the_model_refuses_are_refused_before_any_run(tiny_folder, tmp_path, edits, says):
    spec = SweepSpec(model=str(tiny_folder), prompts=[PROMPT], seeds=[0], steps=3, edits=[[], edits])
    with pytest.raises(SpecError) as info:
        workbench.sweep(spec, out=tmp_path)
    assert info.value.field == "edits" and f"edits[1] on the prompt {PROMPT!r}: " in str(info.value)
    assert says in str(info.value)
    assert not (tmp_path / "index.parquet").exists()  # nothing ran


def test_edit_lists_alike_in_their_short_label_stay_apart_and_old_indexes_read_unedited(
    tiny_folder, tmp_path
):
    import numpy as np

    from workbench.analysis.sweeps import done_runs
    from workbench.sweeps.runner import check_edit_lists

    long = "a painting of a blue square left of a red circle, "
    switches = [[Edit.switch(long + "in the evening", 1)], [Edit.switch(long + "in the morning", 1)]]
    assert switches[0][0].describe() == switches[1][0].describe()  # the titles' short form
    spec = SweepSpec(model=str(tiny_folder), prompts=[PROMPT], seeds=[0], steps=2, edits=switches)
    workbench.sweep(spec, out=tmp_path)
    index = read_index(tmp_path)
    assert index.edits.nunique() == 2 and len(done_runs(index).groupby("edits")) == 2
    old = done_runs(index.assign(edits=np.nan))  # an index from before edits, extended by a newer sweep
    assert set(old.edits) == {""}
    check_edit_lists(object(), spec, spec.plan())  # an executor that cannot check: its runs fail one by one
