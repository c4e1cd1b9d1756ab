"""Reports of two or more runs open with a Compare section; a sweep's report counts its runs, labels
every settings group's contact sheet, and keeps the settings every row shares out of its tables."""

import base64
import io
import json
import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import workbench
from workbench import Request, generate
from workbench.analysis.heatmaps import word_maps
from workbench.core.edit import Edit
from workbench.edits import generate as generate_edited
from workbench.report import compare_maps_figure, final_image_difference, report, request_differences
from workbench.sweeps import read_index
from workbench.viz.sweeps import contact_sheets

PROMPT = "a red circle left of a blue square"
SWAP = "a blue square left of a red circle"
HORSE = "a painting of a horse"


class Tables(HTMLParser):
    """Every ``<table>`` of a page: its class and its rows (the ``<tr>`` class and the cells' text)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tables, self._text = [], None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self.tables.append({"class": attrs.get("class") or "", "rows": []})
        elif tag == "tr" and self.tables:
            self.tables[-1]["rows"].append({"class": attrs.get("class") or "", "cells": []})
        elif tag in ("td", "th"):
            self._text = []

    def handle_data(self, data):
        if self._text is not None:
            self._text.append(data)

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._text is not None:
            self.tables[-1]["rows"][-1]["cells"].append("".join(self._text).strip())
            self._text = None


def tables_of(html: str, cls: str) -> list[dict]:
    parser = Tables()
    parser.feed(html)
    return [t for t in parser.tables if cls in t["class"].split()]


def decode_png(data: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))


def figure_data(page: str, div_id: str) -> list[dict]:
    """The traces of the plotly figure drawn into ``div_id``, as the page holds them."""
    start = re.search(rf'Plotly\.newPlot\(\s*"{div_id}",\s*', page).end()
    data, _ = json.JSONDecoder().raw_decode(page, start)
    return data


def typed_array(spec: dict) -> np.ndarray:
    shape = [int(s) for s in spec["shape"].split(",")]
    return np.frombuffer(base64.b64decode(spec["bdata"]), dtype=spec["dtype"]).reshape(shape)


def header_counts(page: str) -> str:
    return re.search(r'<p class="note">Written [^;]*; (.*?)\. JupyterLab', page).group(1)


# ------------------------------------------------------------------ sweeps


@pytest.fixture(scope="module")
def swept(tiny_folder, tiny_pipe, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    spec = {
        "model": str(tiny_folder),
        "prompts": [PROMPT, SWAP],
        "seeds": [0, 1],
        "steps": 2,
        "guidance_scales": [3.0, 5.0],
    }
    result = workbench.sweep(spec, out=out, pipe=tiny_pipe, progress=False, log=None)
    page = report([], out / "report.html", sweep=result.index, quiet=True).read_text()
    return out, result, page


def test_sweep_report_says_the_sweeps_counts(swept, tmp_path):
    out, result, page = swept
    sid = result.sweep_id
    # beside the sweep's plan record (where `workbench sweep` writes it): done, failed, planned
    assert header_counts(page) == f"sweep {sid}: 8 done · 0 failed · 8 planned"
    assert "0 runs" not in page and "0 run(s)" not in page
    # given the SweepResult, anywhere
    other = report([], tmp_path / "r.html", sweep=result, quiet=True).read_text()
    assert header_counts(other) == f"sweep {sid}: 8 done · 0 failed · 8 planned"
    # an index alone, away from its folder, with a failed run: what the index knows
    index = read_index(out)
    failed = index.iloc[:1].assign(request_id="broken", status="failed", error="ValueError: x")
    alone = report([], tmp_path / "a.html", sweep=pd.concat([index, failed]), quiet=True).read_text()
    assert header_counts(alone).startswith(f"sweep {sid}: 8 done · 1 failed · 9 ended")


def test_sweep_contact_sheet_covers_every_group_labelled(swept):
    out, result, page = swept
    index = read_index(out)
    ((h, w),) = set(zip(index.height, index.width))
    sheets = page[page.index("<h3>Final images") : page.index("<h3>Seed vs prompt")]
    labels = re.findall(r'<h4 class="sheet-label">(.*?)</h4>', sheets)
    assert labels == [f"steps 2 · guidance {g} · default · {h}×{w}" for g in (3, 5)]
    for table in tables_of(sheets, "contact-sheet"):
        head, *rows = table["rows"]
        assert head["cells"] == ["prompt", "seed 0", "seed 1"]
        assert [r["cells"][0] for r in rows] == [PROMPT, SWAP]
    # every cell is that run's own thumbnail, named by prompt and seed
    cells = re.findall(
        r'<img alt="([^"]*) · seed (\d)" title="[^"]*" src="data:image/png;base64,([^"]+)"', sheets
    )
    assert len(cells) == 8
    groups = [cells[:4], cells[4:]]
    for guidance, group in zip((3.0, 5.0), groups):
        for prompt, seed, data in group:
            row = index[(index.guidance == guidance) & (index.prompt == prompt) & (index.seed == int(seed))]
            thumb = np.frombuffer(row.thumb.iloc[0], dtype=np.uint8).reshape(16, 16, 3)
            assert np.array_equal(decode_png(data), thumb)
    assert "border-spacing: 4px" in page  # visible gaps between the cells
    # the sheets as pictures: one per group, 4 white pixels between 64-pixel cells
    pictures = contact_sheets(index)
    assert [s.label for s in pictures] == labels
    image = pictures[1].image
    assert image.size == (2 * 68 + 4, 2 * 68 + 4)
    assert image.getpixel((68, 30)) == (255, 255, 255) and image.getpixel((30, 68)) == (255, 255, 255)
    assert image.getpixel((72, 72)) == tuple(pictures[1].cells[(SWAP, 1)][0, 0])


def test_sweep_tables_hold_no_constant_columns(swept):
    _, _, page = swept
    section = page[page.index("<h2>Sweep</h2>") :]
    tables = tables_of(section, "wb-table")
    assert len(tables) == 3  # variance split, word-order distances, word-order attention mass
    for table in tables:
        head, *rows = table["rows"]
        assert len(rows) >= 2 and head["cells"][0] == "guidance"
        for k, name in enumerate(head["cells"]):
            assert len({r["cells"][k] for r in rows}) > 1, f"column {name} is the same in every row"
        assert not {"steps", "scheduler", "height", "width", "negative_prompt"} & set(head["cells"])
    line = "The same in every row: steps 2 · scheduler default · size 16×16 · negative prompt none"
    assert section.count(line) == 3
    # every table sits in a container that scrolls sideways, and long cells wrap
    assert len(re.findall(r'<div class="wb-scroll"><table class="dataframe wb-table">', page)) == 3
    assert ".wb-scroll { max-width: 100%; overflow-x: auto; }" in page and "overflow-wrap: anywhere" in page


# ------------------------------------------------------------------ comparing runs


@pytest.fixture(scope="module")
def runs(tiny_pipe):
    a = generate(tiny_pipe, PROMPT, seed=0, steps=2, progress=False)
    b = generate(tiny_pipe, PROMPT, seed=1, steps=2, progress=False)
    big = generate(tiny_pipe, HORSE, seed=0, steps=2, height=32, width=32, progress=False)
    edited = generate_edited(
        tiny_pipe, Request(PROMPT, seed=0, steps=2), edits=[Edit.ablate(["red"])], progress=False
    )
    return {"a": a, "b": b, "big": big, "edited": edited}


def test_compare_section_comes_first_with_the_differing_fields(tmp_path, runs):
    a, b = runs["a"], runs["b"]
    page = report([a, b], tmp_path / "r.html", quiet=True).read_text()
    assert page.index('<h2 id="compare">Compare</h2>') < page.index('id="run-0"') < page.index('id="run-1"')
    assert '<a href="#compare">Compare</a>' in page
    (fields,) = tables_of(page, "compare-fields")
    rows = {r["cells"][0]: r for r in fields["rows"][1:]}
    assert rows["seed"]["class"] == "differs" and rows["seed"]["cells"] == ["seed", "0", "1", "differs"]
    assert rows["prompt"]["class"] == "" and rows["prompt"]["cells"] == ["prompt", PROMPT, PROMPT, "same"]
    assert [k for k, r in rows.items() if r["class"] == "differs"] == ["seed"]
    assert "Differ: seed." in page
    diff = request_differences([a, b])
    assert diff.differs.to_dict() == {
        "prompt": False,
        "negative prompt": False,
        "seed": True,
        "steps": False,
        "guidance": False,
        "scheduler": False,
        "size (width×height)": False,
        "model": False,
        "edits": False,
    }


def test_compare_section_shows_images_shared_scale_maps_and_difference(tmp_path, runs):
    a, b = runs["a"], runs["b"]
    page = report([a, b], tmp_path / "r.html", quiet=True).read_text()
    # the final images side by side, as the runs made them
    images = figure_data(page, "compare-images")
    assert [t["type"] for t in images] == ["image", "image"]
    for trace, run in zip(images, (a, b)):
        assert np.array_equal(typed_array(trace["z"]), np.asarray(run.image.convert("RGB")))
    # every word both prompts hold (the first 6), in both runs, on one colour scale
    maps = [t for t in figure_data(page, "compare-maps") if t["type"] == "heatmap"]
    wm = [word_maps(r) for r in (a, b)]
    expected = [wm[k].maps[j].numpy() for k in range(2) for j in range(6)]
    assert len(maps) == 12
    for trace, z in zip(maps, expected):
        assert np.allclose(typed_array(trace["z"]), z)
    (zmin,), (zmax,) = {t["zmin"] for t in maps}, {t["zmax"] for t in maps}  # one scale for all panels
    assert zmin == pytest.approx(float(min(z.min() for z in expected)))
    assert zmax == pytest.approx(float(max(z.max() for z in expected)))
    assert sum(t.get("showscale", True) for t in maps) == 1
    # the absolute difference of the final images, as an image
    (data,) = re.findall(
        r'<img class="run-image diff-image" alt="[^"]*" src="data:image/png;base64,([^"]+)"', page
    )
    want = np.abs(np.asarray(a.image.convert("RGB"), np.int16) - np.asarray(b.image.convert("RGB"), np.int16))
    assert np.array_equal(decode_png(data), want) and want.max() > 0
    assert f"|run 2 − run 1|: mean {want.mean():.2f}, largest {want.max()} of 255" in page


def test_compare_runs_of_other_sizes_prompts_and_edits(tmp_path, runs):
    a, big, edited = runs["a"], runs["big"], runs["edited"]
    diff, note = final_image_difference(big, a)
    small = np.asarray(big.image.convert("RGB").resize((16, 16), Image.BOX), np.int16)
    assert diff.shape == (16, 16, 3) and np.array_equal(diff, np.abs(small - np.asarray(a.image, np.int16)))
    assert note == "the images are 32×32 and 16×16: both resized to 16×16 (area average) for the difference"
    page = report([a, big], tmp_path / "r.html", quiet=True).read_text()
    assert note in page and "Differ: prompt, size (width×height)." in page
    fig = compare_maps_figure([a, big])  # only "a", "of" and the second "a" are in both prompts
    assert [t.name for t in fig.data] == [f"run {k}: {w}" for k in (1, 2) for w in ("a", "of", "a (2)")]
    title = fig.layout.title.text.replace("</sup><br><sup>", " ")  # the subtitle, wrapped to the figure
    assert "not in every prompt (not shown): red, circle, left, blue, square, painting, horse" in title
    assert [t.z.shape for t in fig.data] == [(16, 16)] * 3 + [(32, 32)] * 3
    assert request_differences([a, edited]).query("differs").to_dict("index") == {
        "edits": {"run 1": "none", "run 2": edited.config.edit_label, "differs": True}
    }
    with pytest.raises(ValueError, match="2 or more runs"):
        compare_maps_figure([a])
    one = report(a, tmp_path / "one.html", quiet=True).read_text()
    assert 'id="compare"' not in one
