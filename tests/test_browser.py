"""Every notebook as a person meets it: JupyterLab in headless Chromium at 1400 × 1000, Run All, look.

For each notebook, twice (the second time on a freshly loaded page, the kernel kept): no error or
stderr output, no app showing an error, no widget that failed to come up (in the page or the browser
console), every plotly figure drawn with its traces, no two text labels of a figure overlapping, no
text cut off at a figure's edge, and image panels at least 128 px on their shorter side. The apps'
Cancel and bad-input paths are clicked through in between. The main job's report gets the same figure
checks in Chromium.

Needs Debian's chromium (``apt-get install chromium``) and the playwright Python package (its own
browser download is not used). Screenshots of every notebook and of the report go to the test's tmp
folder (``screenshots/``; also to ``$WORKBENCH_SCREENSHOTS`` when set).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from browser.figures import ALL_DRAWN, figure_problems
from browser.lab import CHROMIUM, CHROMIUM_ARGS, Lab
from browser.notebook import BROKEN, open_notebook, output_problems, run_all, screenshot_all

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


def _keep(path: Path) -> Path:
    extra = os.environ.get("WORKBENCH_SCREENSHOTS")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(extra) / path.name)
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    from workbench.toy import weights_available

    if weights_available():
        return "toy"
    from tiny import build_pipeline_folder

    return str(build_pipeline_folder(tmp_path_factory.mktemp("tiny"), max_length=32))


@pytest.fixture(scope="module")
def chromium():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"Debian's chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="pip install playwright (no browser download needed)"
    )
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory, model, chromium):
    """One JupyterLab on a copy of the notebooks folder; OMP_WAIT_POLICY left unset, as for a person."""
    work = tmp_path_factory.mktemp("lab")
    root = work / "notebooks"
    root.mkdir()
    for nb in NOTEBOOKS:
        shutil.copy(nb, root / nb.name)
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "WORKBENCH_OUT")}
    env.update(
        PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        WORKBENCH_MODEL=model,
        HF_HUB_OFFLINE="1",
    )
    with Lab(root, work, env) as server:
        server.root = root
        yield server


class Watched:
    """A page with its console watched for widgets or figures that failed to come up."""

    def __init__(self, browser):
        self.page = browser.new_page(viewport={"width": 1400, "height": 1000})
        self.broken: list[str] = []
        self.page.on("console", lambda m: BROKEN.search(m.text) and self.broken.append(m.text[:300]))
        self.page.on("pageerror", lambda e: self.broken.append(f"page error: {e}"[:300]))


def _check(page, broken: list[str], what: str) -> None:
    problems = output_problems(page) + figure_problems(page) + [f"console: {m}" for m in broken]
    assert not problems, f"{what}:\n" + "\n".join(problems)


# ----------------------------------------------------------------- the apps, clicked through
#
# Every wait below waits for a state of the page (a widget's value, an app's status line, its Run button,
# its figures drawn), never for a span of time: on a loaded machine each state only comes later.
# PATIENCE is how long one state may take to come before the test fails, naming what it waited for and
# what the app showed instead.

PATIENCE_MS = 300_000

# JS conditions; each takes [css of the app, ...] and reads only the DOM.
APP_STATE = """([css, status, error, warning]) => {
  const app = document.querySelector(css);
  const run = app && app.querySelector('.wb-run-button');
  if (!run || run.disabled) return false;
  const text = (sel) => { const e = app.querySelector(sel); return e ? e.innerText.trim() : ''; };
  return new RegExp(status).test(text('.wb-status'))
    && text('.wb-error').includes(error)
    && text('.wb-warning').includes(warning);
}"""
PROGRESS_ABOVE = """([css, above]) => {
  const bar = document.querySelector(css + ' .wb-progress .progress-bar');
  return !!bar && parseFloat(bar.style.width || '0') > above;
}"""
PROGRESS_BELOW = """([css, below]) => {
  const bar = document.querySelector(css + ' .wb-progress .progress-bar');
  return !!bar && parseFloat(bar.style.width || '0') < below;
}"""
# Every child widget view under ``css`` created (a box shows a bare placeholder until its child's view is
# made) and every plotly figure there drawn; at least one figure.
FIGURES_DRAWN = """(css) => {
  const root = document.querySelector(css);
  if (!root) return false;
  const placeholders = [...root.querySelectorAll('.widget-box > div')].filter(
    (e) => e.className.trim() === 'lm-Widget');
  const outputs = [...root.querySelectorAll('.wb-figure, .wb-heatmap')];
  const plots = [...root.querySelectorAll('.js-plotly-plot')];
  return placeholders.length === 0 && plots.length > 0
    && outputs.every((o) => o.querySelector('.js-plotly-plot'))
    && plots.every((gd) => gd._fullLayout && gd.querySelector('.main-svg'));
}"""
NO_FIGURES = "(css) => document.querySelectorAll(css + ' .js-plotly-plot').length === 0"
VALUE_CHANGED = """([css, label, old]) => {
  const box = [...document.querySelectorAll(css + ' .widget-inline-hbox')].find(
    (b) => [...b.querySelectorAll('label')].some((l) => l.textContent.trim() === label));
  const input = box && box.querySelector('input, textarea');
  return !!input && input.value !== '' && input.value !== old;
}"""


def shown(page, css: str) -> str:
    """What the app shows of its work now (for a failure message)."""
    app = page.locator(css).first
    parts = {"status": ".wb-status", "error": ".wb-error", "warnings": ".wb-warning"}
    out = {k: " ".join(app.locator(sel).first.inner_text().split())[:300] for k, sel in parts.items()}
    run = app.locator(".wb-run-button").first
    out["run button"] = "disabled" if run.is_disabled() else "enabled"
    return ", ".join(f"{k}: {v!r}" for k, v in out.items())


def until(page, condition: str, arg, what: str, css: str) -> None:
    """Wait for ``condition`` (JS, given ``arg``) to hold; fail naming ``what`` and what the app shows."""
    try:
        page.wait_for_function(condition, arg=arg, timeout=PATIENCE_MS, polling=100)
    except Exception as err:  # playwright's TimeoutError, with the app's state instead of a stack
        raise AssertionError(
            f"waited {PATIENCE_MS / 1000:.0f} s for {what}; the app shows {shown(page, css)}"
        ) from err


def until_app(page, css: str, what: str, *, status: str, error: str = "", warning: str = "") -> None:
    """Until the app's work is over (Run enabled) with its status matching ``status`` (a regex) and its error
    and warning areas holding ``error`` and ``warning``."""
    until(page, APP_STATE, [css, status, error, warning], what, css)


def field(scope, label: str):
    """The input of the ipywidgets text/number box labelled ``label`` inside ``scope``."""
    box = scope.locator(
        ".widget-inline-hbox", has=scope.page.locator("label", has_text=re.compile(f"^{label}$"))
    )
    return box.locator("input, textarea").first


def type_into(scope, label: str, value: str) -> None:
    box = field(scope, label)
    box.fill(value)
    box.press("Tab")  # number boxes send their value on change


def dropdown(scope, label: str):
    """The ``<select>`` of the ipywidgets dropdown labelled ``label`` inside ``scope``."""
    box = scope.locator(
        ".widget-dropdown", has=scope.page.locator("label", has_text=re.compile(f"^{label}$"))
    )
    return box.locator("select").first


# The explorer's map drawn by ``preset`` (its name in the figure's recipe line), or its error shown.
PRESET_SHOWN = """([css, name]) => {
  const ex = document.querySelector(css);
  if (!ex) return false;
  const error = ex.querySelector('.wb-error');
  if (error && error.innerText.trim()) return true;
  const plot = ex.querySelector('.wb-heatmap .js-plotly-plot');
  const text = plot && plot._fullLayout ? plot.textContent : '';
  return text.includes(name + ':') || text.includes(name + '*:');
}"""


def every_preset(page, shoot, css: str = ".wb-explorer") -> list[str]:
    """Choose each recipe the explorer offers: each draws its map at the image size, none errs; the ones
    not offered are listed with a reason. Returns the recipes offered."""
    explorer = page.locator(css).first
    explorer.scroll_into_view_if_needed()
    recipe = dropdown(explorer, "recipe")
    offered = [t.strip() for t in recipe.locator("option").all_inner_texts()]
    assert len(offered) >= 2, offered
    for name in offered:
        recipe.select_option(label=name)
        until(page, PRESET_SHOWN, [css, name], f"the {name} map", css)
        error = explorer.locator(".wb-error").first.inner_text().strip()
        assert not error, f"recipe {name}: {error}"
    problems = figure_problems(page)
    assert not problems, "after every recipe:\n" + "\n".join(problems)
    shoot(explorer, "every-preset")
    return offered


def export(page, root: Path, css: str, kind: str) -> list[Path]:
    """Click the app's export button for ``kind``; the files its note lists (relative to ``root``, the
    kernel's folder), each checked to exist."""
    app = page.locator(css).first
    bar = app.locator(".wb-export").first
    note = bar.locator(".wb-export-note").first
    before = note.inner_text()
    bar.locator(f".wb-export-{kind}").first.click()
    try:
        page.wait_for_function(
            "([bar, before]) => { const n = document.querySelectorAll(bar)[0]; return !!n && "
            "n.innerText.trim() !== '' && n.innerText !== before && !n.innerText.includes('writing'); }",
            arg=[css + " .wb-export-note", before],
            timeout=PATIENCE_MS,
        )
    except Exception as err:
        raise AssertionError(f"{kind} export from {css}: the note says {note.inner_text()!r}") from err
    text = note.inner_text()
    assert text.startswith("wrote"), f"{kind} export from {css}: {text!r}"
    paths = [root / p.strip() for p in note.locator("code").all_inner_texts()]
    assert paths and all(p.is_file() and p.stat().st_size > 0 for p in paths), paths
    return paths


def check_exported(paths: list[Path]) -> None:
    """Each exported file loads as what its name says."""
    import json as _json
    import xml.etree.ElementTree as ET

    import numpy as np
    from PIL import Image

    for path in paths:
        if path.suffix == ".npy":
            array = np.load(path, allow_pickle=False)
            labels = _json.loads(path.with_suffix(".json").read_text())["labels"]
            assert array.ndim == 3 and array.shape[0] == len(labels) and np.isfinite(array).all()
        elif path.suffix == ".png":
            with Image.open(path) as im:
                assert min(im.size) >= 16
        elif path.suffix == ".svg":
            assert ET.parse(path).getroot().tag.endswith("svg")
        elif path.suffix == ".csv":
            import pandas as pd

            assert len(pd.read_csv(path)) >= 1


def status(scope) -> str:
    return scope.locator(".wb-status").first.inner_text().strip()


def click_through_generate_app(page, shoot, root: Path) -> None:
    css = ".wb-generate"
    app = page.locator(css)
    app.scroll_into_view_if_needed()
    # Cancel a 400-step run: the finished steps stay, the status says how many of the 400.
    type_into(app, "steps", "400")
    app.locator(".wb-run-button").click()
    until(page, PROGRESS_ABOVE, [css, 1], "the 400-step run to pass 1%", css)
    app.get_by_role("button", name="Cancel").click()
    until_app(page, css, "the cancelled run to end", status=r"^(done|cancelled|stopped|failed)")
    assert re.match(r"cancelled after \d+ of 400 steps", status(app)), status(app)
    assert re.search(r"stopped after \d+ of 400 steps", app.inner_text())
    assert page.locator(".wb-generate .wb-warning").inner_text().count("stopped after") >= 1
    shoot(app, "cancelled")
    # Bad input: 0 steps is named, nothing old stays on show.
    type_into(app, "steps", "0")
    app.locator(".wb-run-button").click()
    until_app(page, css, "0 steps to be refused", status="^failed", error="steps must be")
    assert not app.locator("img.wb-preview").is_visible()
    # An empty prompt runs, with a note.
    type_into(app, "steps", "5")
    field(app, "prompt").fill("")
    app.locator(".wb-run-button").click()
    until_app(page, css, "the empty prompt's run", status="^done: 5 of 5 steps", warning="prompt is empty")
    assert app.locator(".wb-error").inner_text().strip() == ""
    # Back to the notebook's prompt and a new seed: the explorer below follows the app.
    field(app, "prompt").fill("a red circle left of a blue square")
    type_into(app, "steps", "20")
    old = field(app, "seed").input_value()
    app.get_by_role("button", name="new seed").click()
    until(page, VALUE_CHANGED, [css, "seed", old], "a new seed in the seed box", css)
    seed = field(app, "seed").input_value()
    app.locator(".wb-run-button").click()
    until_app(page, css, f"the run with seed {seed}", status=f"^done: 20 of 20 steps · seed {seed}$")
    page.locator(".wb-explorer", has_text=f"seed {seed}").wait_for(timeout=PATIENCE_MS)
    # The image shown, exported as PNG at its own pixel size.
    (png,) = export(page, root, css, "image")
    assert f"seed-{seed}-final" in png.name
    check_exported([png])


def view_persists_across_a_followed_run(page, shoot, root: Path) -> None:
    """The explorer following the Generate app keeps its word, resolution and recipe for the next run."""
    css, ex = ".wb-generate", page.locator(".wb-explorer").first
    ex.scroll_into_view_if_needed()
    resolution = dropdown(ex, "resolution")
    options = [t.strip() for t in resolution.locator("option").all_inner_texts()]
    assert len(options) >= 2, options
    resolution.select_option(label=options[1])
    page.locator(".wb-explorer .js-plotly-plot .gtitle", has_text="a#2").wait_for(timeout=PATIENCE_MS)
    recipe = dropdown(ex, "recipe").input_value()
    app = page.locator(css)
    old = field(app, "seed").input_value()
    app.get_by_role("button", name="new seed").click()
    until(page, VALUE_CHANGED, [css, "seed", old], "a new seed in the seed box", css)
    seed = field(app, "seed").input_value()
    app.locator(".wb-run-button").click()
    until_app(page, css, f"the run with seed {seed}", status=f"^done: 20 of 20 steps · seed {seed}$")
    page.locator(".wb-explorer", has_text=f"seed {seed}").wait_for(timeout=PATIENCE_MS)
    page.locator(".wb-explorer .js-plotly-plot .gtitle", has_text="a#2").wait_for(timeout=PATIENCE_MS)
    buttons = page.locator(".wb-explorer .wb-word-strip button")
    labels = [t.strip() for t in buttons.all_inner_texts()]
    second = [i for i, t in enumerate(labels) if t == "a"][1]
    assert "wb-selected" in (buttons.nth(second).get_attribute("class") or "")
    assert dropdown(ex, "resolution").input_value() == resolution.input_value()
    assert [t.strip() for t in dropdown(ex, "resolution").locator("option:checked").all_inner_texts()] == [
        options[1]
    ]
    assert dropdown(ex, "recipe").input_value() == recipe
    shoot(ex, "view-kept")


def presets_and_exports(page, shoot, root: Path) -> None:
    """Every recipe the explorer offers draws; its map, every word's maps and its figure export."""
    every_preset(page, shoot)
    paths = []
    for kind in ("npy", "png", "svg"):
        paths += export(page, root, ".wb-explorer", kind)
    assert [p.suffix for p in paths] == [".npy", ".npy", ".png", ".svg"]
    check_exported(paths)


def compare_two_runs(page, shoot, root: Path) -> None:
    """Tick both runs, Compare: fields, images, filmstrips and maps side by side; export them all."""
    css = ".wb-browser"
    browser = page.locator(css)
    browser.scroll_into_view_if_needed()
    ticks = browser.locator(".wb-compare-tick input")
    ticks.nth(0).check()
    ticks.nth(1).check()
    browser.locator("button.wb-compare").click()
    until(
        page,
        "(css) => /^comparing 2 runs/.test((document.querySelector(css + ' .wb-status') || {}).innerText || '')",
        css,
        "the comparison",
        css,
    )
    until(page, FIGURES_DRAWN, css + " .wb-comparison", "the comparison's figures", css)
    comparison = browser.locator(".wb-comparison")
    assert comparison.locator(".js-plotly-plot").count() == 3  # images, filmstrips, shared words' maps
    assert "Differ: prompt." in comparison.inner_text()  # the two runs are the two word orders
    problems = figure_problems(page)
    assert not problems, "the comparison:\n" + "\n".join(problems)
    shoot(browser, "compared")
    paths = []
    for kind in ("npy", "png", "svg", "csv"):
        paths += export(page, root, css, kind)
    check_exported(paths)
    assert sorted({p.suffix for p in paths}) == [".csv", ".npy", ".png", ".svg"]


def click_second_a(page, shoot, root: Path) -> None:
    """The prompt has two “a”: clicking the second selects it, and only it."""
    strip = page.locator(".wb-explorer .wb-word-strip").first
    buttons = strip.locator("button")
    labels = [t.strip() for t in buttons.all_inner_texts()]
    first, second = [i for i, t in enumerate(labels) if t == "a"][:2]
    buttons.nth(second).click()
    page.wait_for_function(
        "([s, i]) => document.querySelectorAll(s)[i].classList.contains('wb-selected')",
        arg=[".wb-explorer .wb-word-strip button", second],
        timeout=PATIENCE_MS,
    )
    assert "wb-selected" not in (buttons.nth(first).get_attribute("class") or "")
    page.locator(".wb-explorer .js-plotly-plot .gtitle", has_text="a#2").wait_for(timeout=PATIENCE_MS)
    shoot(page.locator(".wb-explorer").first, "second-a")


def click_through_lab(
    page, shoot, css: str, steps: str, cancel_above: float, bad: tuple[str, str, str]
) -> None:
    lab = page.locator(css)
    lab.scroll_into_view_if_needed()
    # Cancel part-way: the finished runs stay and are shown.
    type_into(lab, "steps", steps)
    lab.locator(".wb-run-button").click()
    # the last results are gone as soon as a new batch starts
    until(page, NO_FIGURES, css + " .wb-results", "the last results to be cleared", css)
    # the bar is reset before it can pass the mark: the last batch's full bar is not this one's progress
    until(page, PROGRESS_BELOW, [css, cancel_above], "the progress bar to start again", css)
    until(page, PROGRESS_ABOVE, [css, cancel_above], f"the batch to pass {cancel_above}%", css)
    lab.get_by_role("button", name="Cancel").click()
    until_app(
        page,
        css,
        "the cancelled batch to end",
        status=r"^(done|cancelled|failed|no run)|: they are shown below",
    )
    assert re.match(r"cancelled after [1-9]\d* of \d+ runs", status(lab)), status(lab)
    until(page, FIGURES_DRAWN, css + " .wb-results", "the finished runs' figures to be drawn", css)
    problems = figure_problems(page)
    assert not problems, "after Cancel:\n" + "\n".join(problems)
    shoot(lab, "cancelled")
    # Bad input: named in the app, the last results cleared.
    label, value, message = bad
    field(lab, label).fill(value)
    field(lab, label).press("Tab")
    lab.locator(".wb-run-button").click()
    until_app(page, css, f"{value!r} in {label} to be refused", status="^failed", error=message)
    assert lab.locator(".wb-results .js-plotly-plot").count() == 0
    # refused before any generation: the bar never moved
    assert page.evaluate(PROGRESS_BELOW, [css, 0.5]), "the refused batch ran"


def open_a_run(page, shoot, root: Path) -> None:
    browser = page.locator(".wb-browser")
    browser.scroll_into_view_if_needed()
    assert browser.locator(".wb-run-row img").count() == 2  # one row per run, with its thumbnail
    assert not re.search(r"\d\d:\d\d:\d\d\.\d", browser.inner_text())  # no microseconds
    browser.locator(".wb-run-row .wb-open").first.click()
    try:
        page.wait_for_function(
            FIGURES_DRAWN, arg=".wb-browser .wb-explorer", timeout=PATIENCE_MS, polling=100
        )
    except Exception as err:
        raise AssertionError(
            f"the opened run's explorer was not drawn: {browser.inner_text()[:500]!r}"
        ) from err
    shoot(browser, "opened")


INTERACTIONS = {
    "01_quickstart": [click_through_generate_app, click_second_a, view_persists_across_a_followed_run],
    "02_attention": [click_second_a, presets_and_exports],
    "03_word_order": [
        lambda page, shoot, root: click_through_lab(
            page,
            shoot,
            ".wb-word-order-lab",
            "40",
            55,
            (
                "orders",
                "a green triangle above a yellow circle\na purple star above a yellow circle",
                "that is no word order of line 1",
            ),
        )
    ],
    "04_seeds": [
        lambda page, shoot, root: click_through_lab(
            page, shoot, ".wb-seed-lab", "30", 30, ("seeds", "1, two", "got 'two'")
        )
    ],
    "06_report": [compare_two_runs, open_a_run],
}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_in_jupyterlab(path, lab, chromium, shots):
    name = path.stem
    watched = Watched(chromium)
    page = watched.page
    # A workspace of its own: only this notebook is open (JupyterLab would reopen the others).
    url = lab.url(f"lab/workspaces/{name}/tree/{path.name}")
    try:
        open_notebook(page, url)
        took = run_all(page)
        _check(page, watched.broken, f"{name}, first Run All ({took:.0f} s)")
        _keep(screenshot_all(page, shots / f"{name}-1.png"))

        def shoot(locator, what: str) -> None:
            locator.screenshot(path=str(shots / f"{name}-{what}.png"))
            _keep(shots / f"{name}-{what}.png")

        for act in INTERACTIONS.get(name, []):
            act(page, shoot, lab.root)
            assert not watched.broken, watched.broken
        problems = figure_problems(page)
        assert not problems, f"{name} after the clicks:\n" + "\n".join(problems)
        _keep(screenshot_all(page, shots / f"{name}-clicked.png"))
        # A fresh page, the same kernel, Run All again: every figure comes up again.
        page.reload()
        open_notebook(page, url)
        took = run_all(page)
        _check(page, watched.broken, f"{name}, second Run All on a fresh page ({took:.0f} s)")
        _keep(screenshot_all(page, shots / f"{name}-2.png"))
        if name == "06_report":  # written beside the notebook, where the file browser shows it
            assert (lab.root / "experiment" / "report.html").is_file()
            assert (lab.root / "experiment" / "runs" / "index.parquet").is_file()
    finally:
        shut_down_kernel(page)
        page.close()


def shut_down_kernel(page) -> None:
    """Stop the notebook's kernel: the next notebook gets the CPU to itself."""
    try:
        page.evaluate(
            """() => { const p = window.jupyterapp.shell.currentWidget;
                       return p && p.sessionContext && p.sessionContext.shutdown(); }"""
        )
    except Exception:  # the page may be gone after a failure; the server's shutdown stops it then
        pass


def test_study_report_in_chromium(tmp_path, chromium, shots, model):
    """The main job's report: every figure drawn, no overlapping or cut-off text, panels of 128 px or
    more, the filmstrip still at its first frame after load, user markup shown as text."""
    from workbench.study import run_study

    result = run_study(tmp_path / "study", model=model, seeds=(0, 1), steps=8, log=lambda *_: None)
    page = chromium.new_page(viewport={"width": 1400, "height": 1000})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("dialog", lambda d: (errors.append(d.message), d.dismiss()))
    try:
        page.goto(result.report.as_uri())
        page.wait_for_function(ALL_DRAWN, timeout=60_000)
        page.wait_for_timeout(1500)  # an animation would have moved by now
        assert not errors
        assert page.locator(".plotly-graph-div").count() >= 8
        problems = figure_problems(page)
        assert not problems, "\n".join(problems)
        shown = page.evaluate("() => document.querySelector('.slider-group > text.slider-label').textContent")
        assert shown.strip() == "step: noise"  # the filmstrip waits for its slider
        page.screenshot(path=str(shots / "report.png"), full_page=True)
        _keep(shots / "report.png")
    finally:
        page.close()


def test_report_shows_markup_as_text(tmp_path, chromium, tiny_pipe):
    from workbench import generate
    from workbench.report import report

    prompt = "a <script>alert(1)</script> <b>circle</b>"
    with pytest.warns(UserWarning, match="cut off"):  # the tiny model's 16-token limit
        runs = [generate(tiny_pipe, prompt, seed=0, steps=2, progress=False)]
    runs.append(generate(tiny_pipe, "a red circle", seed=1, steps=2, progress=False))
    path = report(runs, tmp_path / "report.html", quiet=True)
    page = chromium.new_page(viewport={"width": 1300, "height": 1800})
    errors, dialogs = [], []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    try:
        page.goto(path.as_uri())
        page.wait_for_function(ALL_DRAWN, timeout=60_000)
        assert not errors and not dialogs
        figures = path.read_text().count('class="plotly-graph-div"')
        assert figures >= 2 and page.locator(".plotly-graph-div").count() == figures  # every figure drawn
        assert prompt in page.locator("h2#run-0").inner_text()  # the markup shows as text
        assert page.locator("h2 b").count() == 0
        assert page.get_by_text("<b>circle</b>").count() >= 2  # the heading and the comparison table
    finally:
        page.close()


def test_the_measure_finds_overlaps_cut_text_small_panels_and_blank_figures(tmp_path, chromium):
    """The figure checks on figures made to fail them (a check that cannot fail checks nothing)."""
    import numpy as np
    import plotly.graph_objects as go
    from plotly.offline import get_plotlyjs

    crowded = go.Figure(go.Scatter(y=[1, 2]))
    crowded.update_layout(width=400, height=300, title="a title long enough to run past the right edge " * 3)
    crowded.add_annotation(text="one label", x=0, y=1.5, showarrow=False)
    crowded.add_annotation(text="another label", x=0.05, y=1.5, showarrow=False)
    crowded.update_yaxes(title_text="a y-axis title far longer than the plot is tall, " * 3)
    small = go.Figure(go.Image(z=np.zeros((32, 32, 3), dtype=np.uint8)))
    small.update_layout(width=200, height=200, margin={"l": 50, "r": 50, "t": 50, "b": 50})
    blank = go.Figure()
    blank.update_layout(width=300, height=200)
    page_html = "".join(
        f.to_html(full_html=False, include_plotlyjs=False, div_id=name)
        for name, f in (("crowded", crowded), ("small", small), ("blank", blank))
    )
    path = tmp_path / "bad.html"
    path.write_text(f"<html><head><script>{get_plotlyjs()}</script></head><body>{page_html}</body></html>")
    page = chromium.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(path.as_uri())
        page.wait_for_function(ALL_DRAWN, timeout=60_000)
        problems = "\n".join(figure_problems(page))
    finally:
        page.close()
    assert "overlap" in problems and "one label" in problems and "another label" in problems
    assert "cut off" in problems and "a title long enough" in problems
    assert re.search(r"small: “small”.*100×100 px", problems)
    assert "blank: “blank”" in problems


JOINT_NOTEBOOK = {
    "cells": [
        {
            "cell_type": "code",
            "metadata": {},
            "execution_count": None,
            "outputs": [],
            "source": (
                "import workbench\n"
                "from workbench.notebook import quiet_loading\n"
                "from workbench.widgets import AttentionExplorer\n\n"
                "with quiet_loading():\n"
                '    pipe = workbench.load_pipeline("toy-dit", device="cpu")\n'
                'run = workbench.generate(pipe, "a red circle left of a blue square", seed=0, steps=8, progress=False)\n'
                "AttentionExplorer(run)"
            ),
        }
    ],
    "metadata": {
        "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    },
    "nbformat": 4,
    "nbformat_minor": 5,
}


def test_explorer_presets_on_a_joint_attention_run(lab, chromium, shots):
    """On an MM-DiT (toy-dit) run, every recipe the explorer offers draws its map; the UNet recipes are
    listed as not applying, with why."""
    import json

    from workbench.toy.dit import weights_available

    if not weights_available():
        pytest.skip("toy-dit's weights are not in this checkout")
    (lab.root / "joint.ipynb").write_text(json.dumps(JOINT_NOTEBOOK))
    watched = Watched(chromium)
    page = watched.page
    try:
        open_notebook(page, lab.url("lab/workspaces/joint/tree/joint.ipynb"))
        run_all(page)
        _check(page, watched.broken, "the joint-attention explorer")

        def shoot(locator, what: str) -> None:
            locator.screenshot(path=str(shots / f"joint-{what}.png"))
            _keep(shots / f"joint-{what}.png")

        offered = every_preset(page, shoot)
        assert "dit-word-share" in offered and "daam" not in offered
        listed = page.locator(".wb-explorer").first.inner_text()
        assert re.search(r"daam \(.*UNet", listed), listed[:600]
        assert not watched.broken, watched.broken
    finally:
        shut_down_kernel(page)
        page.close()


def test_sweep_report_in_chromium(tmp_path, chromium, tiny_folder, tiny_pipe):
    """A sweep's report as read: the counts in its header, one labelled contact sheet per settings group,
    every figure drawn; a table's CSV link and a figure's SVG link download what they say."""
    import workbench
    from workbench.report import report

    spec = {
        "model": str(tiny_folder),
        "prompts": ["a red circle left of a blue square", "a blue square left of a red circle"],
        "seeds": [0, 1],
        "steps": 2,
        "guidance_scales": [3.0, 5.0],
    }
    result = workbench.sweep(spec, out=tmp_path / "sweep", pipe=tiny_pipe, progress=False, log=None)
    path = report([], tmp_path / "sweep" / "report.html", sweep=result, quiet=True)
    page = chromium.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(path.as_uri())
        page.wait_for_function(ALL_DRAWN, timeout=60_000)
        assert not errors
        head = page.locator("p.note").first.inner_text()
        assert f"sweep {result.sweep_id}: 8 done · 0 failed · 8 planned" in head, head
        labels = page.locator("h4.sheet-label").all_inner_texts()
        assert len(labels) == 2 and all("guidance" in t for t in labels), labels
        for sheet in page.locator("table.contact-sheet").all():
            assert sheet.locator("img").count() == 4
        problems = figure_problems(page)
        assert not problems, "\n".join(problems)
        with page.expect_download() as csv:
            page.locator("a.wb-save-csv").first.click()
        text = Path(csv.value.path()).read_text()
        assert csv.value.suggested_filename.endswith(".csv") and text.count("\n") >= 2
        with page.expect_download() as svg:
            page.locator("a.wb-save-svg").first.click()
        assert svg.value.suggested_filename.endswith(".svg")
        assert "<svg" in Path(svg.value.path()).read_text()[:500]
    finally:
        page.close()
