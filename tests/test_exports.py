"""Exports: every app writes what it shows (figures as PNG and SVG drawn offline, maps as .npy with their
labels, tables as CSV, the preview image as PNG), and the files load back to what was shown; reports save
their figures and tables; the runs' filmstrips side by side in a comparison."""

import base64
import json
import re
import shutil
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from PIL import Image

from workbench import analysis, generate, save_run
from workbench.analysis.trajectory import decode_latents, strip_steps
from workbench.report import report
from workbench.viz import export as export_mod
from workbench.viz.export import ExportError, MapExport, write_figures, write_maps, write_tables
from workbench.widgets import AttentionExplorer, ExperimentBrowser, GenerateApp, SeedLab
from workbench.widgets.export import ExportBar

PROMPT = "a red circle left of a blue square"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
needs_browser = pytest.mark.skipif(CHROMIUM is None, reason="PNG/SVG export draws in Chrome or Chromium")


@pytest.fixture(scope="module")
def run(tiny_pipe):
    return generate(tiny_pipe, PROMPT, seed=0, steps=4, progress=False)


def _svg_root(path):
    root = ET.parse(path).getroot()
    assert root.tag.endswith("svg")
    return root


# ------------------------------------------------------------------ the writers


@needs_browser
def test_figures_are_drawn_offline_at_their_own_size(tmp_path):
    fig = go.Figure(go.Heatmap(z=[[0, 1], [2, 3]]))
    fig.update_layout(width=300, height=200, title="a heat map")
    png, png2 = write_figures({"one": fig, "two": fig}, tmp_path, "test", "png")
    (svg,) = write_figures({"one": fig}, tmp_path, "test", "svg")
    assert png != png2 and png.parent == tmp_path and png.name.startswith("test-one-")
    assert Image.open(png).size == (600, 400)  # twice the layout size
    root = _svg_root(svg)
    assert (root.get("width"), root.get("height")) == ("300", "200")
    assert "a heat map" in svg.read_text()


def test_no_browser_is_said_in_one_line(tmp_path, monkeypatch):
    import kaleido
    from kaleido.errors import ChromeNotFoundError

    def no_chrome(*args, **kwargs):
        raise ChromeNotFoundError("no chrome")

    monkeypatch.setattr(kaleido, "write_fig_from_object_sync", no_chrome)
    with pytest.raises(ExportError) as err:
        write_figures({"f": go.Figure()}, tmp_path, "x", "png")
    assert err.value.field == "format" and "PNG needs a headless Chrome or Chromium" in str(err.value)
    assert list(tmp_path.iterdir()) == []  # no empty file left behind


def test_maps_tables_and_bad_folders(tmp_path):
    maps = MapExport(np.arange(32, dtype=np.float64).reshape(2, 4, 4), ["red", "a#2"], {"recipe": "all-mean"})
    (npy,) = write_maps({"m": maps}, tmp_path, "ex")
    loaded = np.load(npy, allow_pickle=False)
    assert loaded.dtype == np.float32 and np.array_equal(loaded, maps.array)
    about = json.loads(npy.with_suffix(".json").read_text())
    assert about["labels"] == ["red", "a#2"] and about["shape"] == [2, 4, 4] and about["recipe"] == "all-mean"
    table = pd.DataFrame({"word": ["red", "circle"], "mass": [0.25, 0.5]})
    (csv,) = write_tables({"t": table}, tmp_path, "lab")
    pd.testing.assert_frame_equal(pd.read_csv(csv), table)
    (again,) = write_tables({"t": table}, tmp_path, "lab")
    assert again != csv  # never written over
    afile = tmp_path / "a-file"
    afile.write_text("x")
    for folder, problem in ((afile, "is a file"), ("", "is empty"), ("  ", "is empty")):
        with pytest.raises(ExportError) as err:
            write_tables({"t": table}, folder, "lab")
        assert err.value.field == "folder" and problem in str(err.value)
    with pytest.raises(ExportError) as err:
        write_tables({}, tmp_path, "lab")
    assert (
        err.value.field == "tables" and str(err.value) == "tables to export: none yet (run something first)"
    )
    with pytest.raises(ExportError, match="format must be one of"):
        write_figures({"f": go.Figure()}, tmp_path, "x", "pdf")
    with pytest.raises(ValueError, match="one label per map"):
        MapExport(np.zeros((2, 4, 4)), ["only one"])


# ------------------------------------------------------------------ the apps


@needs_browser
def test_explorer_exports_its_figure_and_maps(run, tmp_path):
    ex = AttentionExplorer(run)
    ex.export.folder.value = str(tmp_path)
    ex.words.value = 2  # "circle"
    ex.export.buttons["npy"].click()
    assert ex.export.error is None
    shown, every = ex.export.written
    np.testing.assert_array_equal(np.load(shown)[0], ex.current)
    wm = analysis.word_maps(run, normalize="max")
    assert json.loads(every.with_suffix(".json").read_text())["labels"] == wm.labels
    np.testing.assert_allclose(np.load(every), wm.maps.numpy(), rtol=1e-6)
    about = json.loads(shown.with_suffix(".json").read_text())
    assert about["labels"] == ["circle"] and about["prompt"] == PROMPT and about["seed"] == 0
    assert about["controls"]["preset"] == "all-mean"
    ex.export.buttons["svg"].click()
    (svg,) = ex.export.written
    assert "circle" in svg.read_text()
    ex.show_layout.value = True
    ex.export.buttons["png"].click()
    assert [p.name.split("-")[1] for p in ex.export.written] == ["map", "by", "by"]
    assert all(Image.open(p).size[0] > 100 for p in ex.export.written)
    assert "wrote 3 files" in ex.export.note.value


def test_an_export_with_nothing_shown_says_so(tmp_path):
    bar = ExportBar(lambda: export_mod.Exportable(), "nothing", ("png", "csv"))
    bar.folder.value = str(tmp_path)
    assert bar.export("csv") == [] and "tables to export: none yet" in bar.error
    assert "nothing written" in bar.note.value and not any(b.disabled for b in bar.buttons.values())


def test_generate_app_exports_the_image_shown(tiny_pipe, tmp_path):
    app = GenerateApp(tiny_pipe, prompt=PROMPT, steps=3)
    app.export.folder.value = str(tmp_path)
    app.export.buttons["image"].click()
    assert app.export.error == "images to export: none yet (run something first)"
    run = app.run_sync()
    app.export.buttons["image"].click()
    (final,) = app.export.written
    assert "final" in final.name
    assert np.array_equal(np.asarray(Image.open(final)), np.asarray(run.image.convert("RGB")))
    app.step_slider.value = 1
    app.export.buttons["image"].click()
    (step,) = app.export.written
    assert "x0-step-1" in step.name
    assert np.array_equal(np.asarray(Image.open(step)), decode_latents(tiny_pipe, run.x0[1:2])[0])


def test_lab_exports_its_tables_as_csv(tiny_pipe, tmp_path):
    lab = SeedLab(tiny_pipe, prompt=PROMPT, seeds="0, 1", steps=2)
    lab.export.folder.value = str(tmp_path)
    lab.run_sync()
    tables = {p.caption: p.table for p in lab.shown_panels if p.table is not None}
    assert tables
    lab.export.buttons["csv"].click()
    assert len(lab.export.written) == len(tables)
    for path, (caption, table) in zip(lab.export.written, tables.items()):
        assert re.sub(r"[^a-z0-9]+", "-", caption.lower()).strip("-")[:40] in path.name
        back = pd.read_csv(path)
        assert list(back.columns) == [str(c) for c in table.columns] and len(back) == len(table)


# ------------------------------------------------------------------ comparisons and reports


@pytest.fixture(scope="module")
def two_runs(tiny_pipe):
    a = generate(tiny_pipe, PROMPT, seed=0, steps=3, progress=False)
    b = generate(tiny_pipe, "a blue square left of a red circle", seed=0, steps=3, progress=False)
    return a, b


def _figure_traces(page: str, div_id: str) -> list[dict]:
    start = re.search(rf'Plotly\.newPlot\(\s*"{div_id}",\s*', page).end()
    data, _ = json.JSONDecoder().raw_decode(page, start)
    return data


def _typed(spec) -> np.ndarray:
    shape = [int(s) for s in spec["shape"].split(",")]
    return np.frombuffer(base64.b64decode(spec["bdata"]), dtype=spec["dtype"]).reshape(shape)


def test_report_compares_filmstrips_and_saves_figures_and_tables(tiny_pipe, two_runs, tmp_path):
    a, b = two_runs
    page = report([a, b], tmp_path / "r.html", quiet=True, pipes=[tiny_pipe]).read_text()
    traces = _figure_traces(page, "compare-strips")
    steps = strip_steps(a)
    assert steps == [0, 1, 2] and len(traces) == 6
    for k, run in enumerate((a, b)):
        want = decode_latents(tiny_pipe, run.x0)
        for j, s in enumerate(steps):
            assert np.array_equal(_typed(traces[k * 3 + j]["z"]), want[s])
    without = report([a, b], tmp_path / "w.html", quiet=True).read_text()
    assert (
        not re.search(r"newPlot\(\s*\"compare-strips\"", without)
        and "decoding the steps needs the runs" in without
    )
    # every figure has its save links, every table its CSV
    figures = re.findall(r'Plotly\.newPlot\(\s*"([^"]+)"', page)
    for div in figures:
        assert f"Plotly.downloadImage('{div}',{{format:'svg'" in page
        assert f"Plotly.downloadImage('{div}',{{format:'png'" in page
    (csv,) = re.findall(r'download="tokens-run-1.csv" href="data:text/csv;base64,([^"]+)"', page)
    tokens = a.tokens[a.tokens.kind != "pad"]
    assert base64.b64decode(csv).decode() == tokens.to_csv(index=False)


@needs_browser
def test_browser_compares_filmstrips_and_exports_the_comparison(tiny_pipe, two_runs, tmp_path):
    a, b = two_runs
    save_run(a, tmp_path / "a")
    save_run(b, tmp_path / "b")
    browser = ExperimentBrowser(tmp_path, pipes=[tiny_pipe])
    browser.tick("a")
    browser.tick("b")
    browser.compare(threaded=False)
    assert browser.error is None and browser.compare_strips.figure is not None
    images = [t for t in browser.compare_strips.figure.data if t.type == "image"]
    assert len(images) == 6
    browser.export.folder.value = str(tmp_path / "out")
    browser.export.buttons["npy"].click()
    one, two = browser.export.written
    for path in (one, two):
        labels = json.loads(path.with_suffix(".json").read_text())["labels"]
        assert len(labels) == np.load(path).shape[0] == 6
    # run 1's maps are its first six words' maps, as the figure draws them (one scale: not renormalised)
    np.testing.assert_allclose(np.load(one), analysis.word_maps(a).maps[:6].numpy(), rtol=1e-6)
    browser.export.buttons["svg"].click()
    assert [p.name.split("-")[1] for p in browser.export.written] == ["images", "filmstrips", "maps"]
    browser.export.buttons["csv"].click()
    (index,) = browser.export.written
    assert sorted(pd.read_csv(index).path) == ["a", "b"]


def test_pipes_that_are_not_pipelines_are_refused_by_field(tiny_pipe, two_runs, tmp_path):
    from workbench.core.errors import FieldTypeError

    a, b = two_runs
    for bad, where in (("tiny", "a str"), ([tiny_pipe, tiny_pipe.unet], "(item 1)")):
        with pytest.raises(FieldTypeError) as err:
            report([a, b], tmp_path / "r.html", quiet=True, pipes=bad)
        assert err.value.field == "pipes" and where in str(err.value), str(err.value)
        with pytest.raises(FieldTypeError) as err:
            ExperimentBrowser(tmp_path, pipes=bad)
        assert err.value.field == "pipes"
    assert not (tmp_path / "r.html").exists()  # refused before anything was written
    assert ExperimentBrowser(tmp_path, pipes=tiny_pipe).pipes == [tiny_pipe]  # one pipeline alone
