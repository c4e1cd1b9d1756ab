"""The study with the causal word-order lab: its section in the report, its curves, its placement judge,
and ``workbench study --interventions``."""

import html

import pandas as pd
import pytest

from workbench.lab.causal import LabResult, LabSettings, relation_holds
from workbench.study import INTERVENTIONS, StudyResult, default_ks, run_study

PROMPT = "a red circle left of a blue square"
SWAP = "a blue square left of a red circle"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    lines = []
    out = tmp_path_factory.mktemp("study") / "s"
    result = run_study(out, seeds=(0,), steps=6, interventions=True, lab_ks=(6, 0, 3, 3), log=lines.append)
    return result, lines


def test_report_has_the_lab_section_and_its_judge(study):
    result, lines = study
    page = html.unescape(result.report.read_text(encoding="utf-8"))
    assert f"<h2>{INTERVENTIONS}</h2>" in page
    assert "placement was judged by the toy world's checker (image)" in page
    assert "each point averages 1 (pair, seed) units" in page
    assert result.lab.judge == "the toy world's checker (image)"
    lab_lines = [line for line in lines if "lab" in line]
    assert 2 <= len(lab_lines) <= 10  # progress, not a line per generation


def test_lab_summary_has_the_four_curves_at_the_asked_steps(study):
    result, _ = study
    summary = result.lab.summary
    assert set(summary.curve) == {"inject-step", "inject-layers", "switch", "ablate"}
    for curve in ("inject-step", "switch", "ablate"):
        assert sorted(summary[summary.curve == curve].x) == [0, 3, 6]
    assert sorted(summary[summary.curve == "inject-layers"].x) == ["4x4", "8x8"]  # the toy's resolutions
    assert (summary.n == 1).all() and summary["mean"].isin([0.0, 1.0]).all()
    assert result.lab.settings.ks == (0, 3, 6) and result.lab.settings.seeds == (0,)
    saved = pd.read_csv(result.lab_table)
    assert len(saved) == len(summary) and (result.out / "interventions-rows.csv").is_file()


def test_unedited_points_agree_with_the_checker_on_the_study_runs(study):
    """At k = steps nothing is edited: the lab's run is the plain prompt, from the seed the study ran it
    with, so its placement-as-the-swap-says must be the checker's verdict on the study's own run."""
    result, _ = study
    plain = next(r for r in result.runs if r.prompt == PROMPT and r.seed == 0)
    expected = float(relation_holds(plain, SWAP))
    rows = result.lab.rows
    for curve in ("inject-step", "switch"):
        assert rows[(rows.curve == curve) & (rows.x == 6)].y.tolist() == [expected]
    # the study's own placement column is the same checker
    assert result.summary["relation as written (prompt)"].tolist() == [relation_holds(plain)]


def test_relation_holds_is_the_labs_and_says_none_for_other_captions(study):
    import workbench.study

    result, _ = study
    assert workbench.study.relation_holds is relation_holds
    assert relation_holds(result.runs[0], "a photo of a cat") is None


def test_default_ks_and_bad_ks():
    assert default_ks(25) == (0, 12, 18, 22, 25)
    assert default_ks(2) == (0, 1, 2)
    with pytest.raises(ValueError, match="lab_ks must lie in 0..steps"):
        run_study("unused", seeds=(0,), steps=6, interventions=True, lab_ks=(9,), model=None)
    with pytest.raises(ValueError, match="two-object captions"):
        run_study("unused", prompt="a cat", swapped="a dog", interventions=True, model=None)


def test_cli_passes_interventions_and_prints_the_lab(monkeypatch, tmp_path, capsys):
    import workbench.study
    from workbench.cli import main

    seen = {}
    summary = pd.DataFrame(
        [dict(curve="switch", x=0, n=2, mean=0.5, low=0.0, high=1.0)],
        columns=["curve", "x", "n", "mean", "low", "high"],
    )

    def fake(out, **kwargs):
        seen.update(kwargs)
        lab = LabResult(pd.DataFrame(), summary, "the toy world's checker (image)", LabSettings(seeds=(0,)))
        return StudyResult(out, [], [], out / "report.html", out / "i", pd.DataFrame(), lab, out / "x.csv")

    monkeypatch.setattr(workbench.study, "run_study", fake)
    assert main(["study", "--out", str(tmp_path / "s"), "--seeds", "0", "--interventions"]) == 0
    assert seen["interventions"] is True
    printed = capsys.readouterr().out
    assert str(tmp_path / "s" / "x.csv") in printed and "switch: 0 0.50 [0.00, 1.00]" in printed
    assert main(["study", "--out", str(tmp_path / "t"), "--seeds", "0"]) == 0
    assert seen["interventions"] is False
