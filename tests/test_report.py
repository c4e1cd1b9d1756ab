"""HTML reports: self-contained, escaped, with provenance and the re-run spec."""

import json
import re

import pytest

from workbench import generate
from workbench.report import report
from workbench.store.recipe import RerunRecipe

EVIL = "a <script>alert('x')</script> horse"


@pytest.fixture(scope="module")
def runs(tiny_pipe):
    return [
        generate(tiny_pipe, EVIL, seed=0, steps=2, progress=False),
        generate(tiny_pipe, "a red circle", seed=1, steps=2, progress=False),
    ]


def test_report_escapes_user_text(tmp_path, runs):
    page = report(
        runs, tmp_path / "r.html", title="<b>title</b>", notes="<img src=x onerror=alert(1)>", quiet=True
    ).read_text()
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "<b>title</b>" not in page and "&lt;b&gt;title&lt;/b&gt;" in page
    assert "<img src=x" not in page
    # The only script tags are plotly.js in the head and plotly's own figure loaders.
    scripts = re.findall(r"<script[^>]*>", page)
    assert scripts[0] == '<script type="text/javascript">'
    assert page.index("</head>") > page.index(scripts[0])


def test_report_is_self_contained_with_plotly_once(tmp_path, runs):
    page = report(runs, tmp_path / "r.html", quiet=True).read_text()
    assert page.count("plotly.js v") <= 2  # the bundle's own banner, inlined once
    assert not re.search(r"<script[^>]*\ssrc=", page) and 'src="http' not in page  # nothing fetched
    assert page.count('class="plotly-graph-div"') >= 2  # a word-map figure per run
    assert page.count('<img class="run-image"') == 2  # each run's image, embedded


def test_report_holds_config_tokens_and_spec(tmp_path, runs):
    page = report(runs[1], tmp_path / "r.html", quiet=True).read_text()
    spec = RerunRecipe.from_run(runs[1]).to_dict()
    for value in (
        spec["expected"]["image_hash"],
        spec["expected"]["attention_hash"],
        runs[1].config.model["weights_sha256"],
    ):
        assert value in page
    assert "DDIMScheduler" in page and "&quot;guidance_scale&quot;" in page
    assert "<td>circle</td>" in page  # token table
    assert "workbench rerun spec.json" in page
    encoded = re.search(r'href="data:application/json;base64,([^"]+)"', page).group(1)
    import base64

    assert json.loads(base64.b64decode(encoded)) == json.loads(json.dumps(spec))


def test_report_says_where_and_how_to_open(tmp_path, runs, capsys):
    path = report(runs[1], tmp_path / "sub" / "r.html")
    out = capsys.readouterr().out
    assert str(path) in out and "untrusted" in out and "Trust HTML" in out


def test_report_rejects_non_runs(tmp_path):
    with pytest.raises(TypeError, match="Run"):
        report([], tmp_path / "r.html")
