"""Reports in one folder can share one plotly.js; animated figures wait for their slider."""

import re

import numpy as np
import pytest

from workbench import generate
from workbench.analysis import Filmstrip
from workbench.report import report
from workbench.viz import filmstrip_figure


@pytest.fixture(scope="module")
def run(tiny_pipe):
    return generate(tiny_pipe, "a red circle", seed=1, steps=2, progress=False)


def test_reports_in_a_folder_share_one_plotlyjs(tmp_path, run):
    inline = report(run, tmp_path / "alone.html", quiet=True)
    a = report(run, tmp_path / "shared" / "a.html", quiet=True, plotlyjs="beside")
    b = report(run, tmp_path / "shared" / "b.html", quiet=True, plotlyjs="beside")
    (js,) = (tmp_path / "shared").glob("plotly-*.min.js")
    for page in (a, b):
        text = page.read_text()
        assert re.findall(r'<script[^>]*\ssrc="([^"]+)"', text) == [js.name]  # beside it, by a relative name
        assert "plotly.js v" not in text
        assert page.stat().st_size < inline.stat().st_size / 5
    assert js.stat().st_size > 1_000_000
    with pytest.raises(ValueError, match="plotlyjs must be one of"):
        report(run, tmp_path / "c.html", quiet=True, plotlyjs="cdn")


def test_animated_figures_do_not_play_on_load(tmp_path, run):
    frames = np.zeros((3, 8, 8, 3), dtype=np.uint8)
    strip = Filmstrip(x0=frames, latent=frames.copy(), steps=[-1, 0, 1], timesteps=[float("nan"), 2.0, 1.0])
    page = report(
        run, tmp_path / "r.html", figures=[("strip", filmstrip_figure(strip))], quiet=True
    ).read_text()
    assert "addFrames" in page and "Plotly.animate" not in page
