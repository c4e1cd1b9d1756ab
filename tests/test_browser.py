"""The quickstart as a person uses it: JupyterLab in headless Chromium, run all cells, look at the widgets.

Needs Debian's chromium (``apt-get install chromium``) and the playwright Python package (its own
browser download is not used). Saves screenshots under the test's tmp folder (and in
``$WORKBENCH_SCREENSHOTS`` when set).
"""

import os
import shutil
from pathlib import Path

import pytest
from browser.lab import CHROMIUM, CHROMIUM_ARGS, Lab

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "01_quickstart.ipynb"

pytestmark = pytest.mark.browser

KERNEL_READY = """() => {
  const panel = window.jupyterapp && window.jupyterapp.shell && window.jupyterapp.shell.currentWidget;
  const kernel = panel && panel.sessionContext && panel.sessionContext.session && panel.sessionContext.session.kernel;
  return !!kernel && kernel.connectionStatus === 'connected' && kernel.status === 'idle';
}"""


@pytest.fixture
def model(tmp_path) -> str:
    from workbench.toy import weights_available

    if weights_available():
        return "toy"
    from tiny import build_pipeline_folder

    return str(build_pipeline_folder(tmp_path / "tiny", max_length=32))


def _screenshot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path))
    extra = os.environ.get("WORKBENCH_SCREENSHOTS")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(extra) / name)
    return path


def test_quickstart_in_jupyterlab(tmp_path, model):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"Debian's chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="pip install playwright (no browser download needed)"
    )
    root = tmp_path / "lab"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "WORKBENCH_MODEL": model,
        "HF_HUB_OFFLINE": "1",
        "OMP_WAIT_POLICY": "PASSIVE",
    }
    with Lab(root, tmp_path, env) as lab, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(lab.url(f"lab/tree/{NOTEBOOK.name}"))
            page.wait_for_function("window.jupyterapp && window.jupyterapp.shell", timeout=120_000)
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
            page.wait_for_function(KERNEL_READY, timeout=180_000)
            # Start "run all" without waiting for its promise (it settles only when every cell is done).
            page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")

            # The app: Run button, progress bar run to the end, the image.
            page.wait_for_selector(".wb-generate .wb-run-button", timeout=300_000)
            page.wait_for_selector(".wb-progress .progress-bar-success", timeout=300_000)
            bar_width = page.eval_on_selector(".wb-progress .progress-bar-success", "e => e.style.width")
            assert bar_width == "100%"
            run_button = page.locator(".wb-generate .wb-run-button")
            assert run_button.is_enabled()
            image = page.locator(".wb-generate img.wb-preview")
            image.wait_for(timeout=60_000)
            assert (
                page.eval_on_selector(".wb-generate img.wb-preview", "e => e.complete && e.naturalWidth") > 0
            )
            image.scroll_into_view_if_needed()
            _screenshot(page, tmp_path, "quickstart-app.png")

            # The attention explorer: the word strip and a rendered plotly heat map.
            page.wait_for_selector(".wb-explorer .wb-word-strip button", timeout=300_000)
            page.wait_for_selector(".wb-explorer .wb-heatmap g.hm image", timeout=300_000)
            words = page.locator(".wb-explorer .wb-word-strip button").all_inner_texts()
            assert [w.strip() for w in words] == "a red circle left of a blue square".split()
            page.locator(".wb-explorer .wb-heatmap").scroll_into_view_if_needed()
            _screenshot(page, tmp_path, "quickstart-explorer.png")

            # Every cell ran (the last one has an execution count) and none raised.
            page.wait_for_function(
                "[...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')].every(e => /\\[\\d+\\]/.test(e.textContent))",
                timeout=300_000,
            )
            assert (
                page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error']").count()
                == 0
            )
            # The static figures rendered too (filmstrip and change curves).
            assert page.locator(".jp-OutputArea-output.jp-RenderedPlotly").count() >= 2

            # A person's click: a new seed, then Run. The run goes on in a thread of the kernel and
            # the app shows its result (the seed is in the caption under the image).
            app = page.locator(".wb-generate")
            app.scroll_into_view_if_needed()
            app.get_by_role("button", name="new seed").click()
            seed_input = app.locator(".widget-text input").first
            page.wait_for_function("e => e.value !== '3'", arg=seed_input.element_handle(), timeout=30_000)
            seed = seed_input.input_value()
            app.locator(".wb-run-button").click()
            page.wait_for_function(
                "s => [...document.querySelectorAll('.wb-generate .widget-html')].some(e => e.textContent.includes('seed ' + s))",
                arg=seed,
                timeout=300_000,
            )
            page.wait_for_selector(".wb-generate .wb-run-button:not([disabled])", timeout=60_000)
            _screenshot(page, tmp_path, "quickstart-clicked.png")
        finally:
            browser.close()


def test_report_renders_in_chromium_and_shows_markup_as_text(tmp_path, tiny_pipe):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"Debian's chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="pip install playwright (no browser download needed)"
    )
    from workbench import generate
    from workbench.report import report

    prompt = "a <script>alert(1)</script> <b>circle</b>"
    runs = [
        generate(tiny_pipe, prompt, seed=0, steps=2, progress=False),
        generate(tiny_pipe, "a red circle", seed=1, steps=2, progress=False),
    ]
    path = report(runs, tmp_path / "report.html", quiet=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 1800})
            errors, dialogs = [], []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(path.as_uri())
            page.wait_for_function(
                "[...document.querySelectorAll('.plotly-graph-div')].every(d => d.querySelector('.main-svg'))",
                timeout=60_000,
            )
            assert not errors and not dialogs
            assert page.locator(".plotly-graph-div").count() == 2  # one word-map figure per run
            assert prompt in page.locator("h2").first.inner_text()  # the markup shows as text
            assert page.locator("h2 b").count() == 0
            _screenshot(page, tmp_path, "report.png")
        finally:
            browser.close()
