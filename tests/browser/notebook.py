"""Driving a notebook in JupyterLab from Playwright: open it, Run All, wait, and read what it shows."""

from __future__ import annotations

import re
import time
from pathlib import Path

from .figures import ALL_DRAWN

KERNEL_READY = """() => {
  const panel = window.jupyterapp && window.jupyterapp.shell && window.jupyterapp.shell.currentWidget;
  const kernel = panel && panel.sessionContext && panel.sessionContext.session && panel.sessionContext.session.kernel;
  return !!kernel && kernel.connectionStatus === 'connected' && kernel.status === 'idle';
}"""

ALL_RAN = """() => {
  const prompts = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')];
  return prompts.length > 0 && prompts.every((e) => /\\[\\d+\\]/.test(e.textContent));
}"""

STARTED = r"""() => [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')]
  .some((e) => /\[(\*|\d+)\]/.test(e.textContent))"""

# Console messages that mean a widget or figure did not come up.
BROKEN = re.compile(
    r"anywidget|Failed to (initialize|create|load)|Error displaying widget|Could not create", re.I
)


def open_notebook(page, url: str) -> None:
    """Load JupyterLab at ``url`` (a notebook) and wait for its kernel to be idle."""
    page.goto(url)
    page.wait_for_function("window.jupyterapp && window.jupyterapp.shell", timeout=120_000)
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
    page.wait_for_function(KERNEL_READY, timeout=180_000)


def run_all(page, timeout_s: float = 420) -> float:
    """Clear the outputs, Run All, wait for every cell and every figure; returns the seconds it took."""
    start = time.monotonic()
    page.evaluate(
        """() => { const c = window.jupyterapp.commands;
                   return c.execute('notebook:clear-all-cell-outputs'); }"""
    )
    # Not awaited: the command's promise settles only when every cell is done.
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
    try:
        page.wait_for_function(STARTED, timeout=30_000)
    except Exception:  # the notebook was not ready for the command yet: once more
        page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
    page.wait_for_function(ALL_RAN, timeout=timeout_s * 1000)
    page.wait_for_function(KERNEL_READY, timeout=120_000)
    page.wait_for_function(ALL_DRAWN, timeout=60_000)
    settle(page)
    return time.monotonic() - start


def settle(page, quiet_ms: int = 700, timeout_s: float = 30) -> None:
    """Wait until the number of drawn figures stops changing (figures from threads arrive late)."""
    deadline = time.monotonic() + timeout_s
    last = -1
    while time.monotonic() < deadline:
        page.wait_for_function(ALL_DRAWN, timeout=60_000)
        count = page.locator(".js-plotly-plot .main-svg").count()
        if count == last:
            return
        last = count
        page.wait_for_timeout(quiet_ms)


def output_problems(page) -> list[str]:
    """Error and stderr outputs, widgets that did not render, and error messages shown by the apps."""
    out = []
    for kind, mime in (
        ("error", "application/vnd.jupyter.error"),
        ("stderr", "application/vnd.jupyter.stderr"),
    ):
        for text in page.locator(f".jp-OutputArea-output[data-mime-type='{mime}']").all_inner_texts():
            out.append(f"{kind} output: {text.strip()[:300]}")
    for text in page.locator(".jp-OutputArea-output").all_inner_texts():
        if "Error displaying widget" in text or "model not found" in text:
            out.append(f"widget not displayed: {text.strip()[:200]}")
    for text in page.locator(".wb-error").all_inner_texts():
        if text.strip():
            out.append(f"an app shows an error: {text.strip()[:300]}")
    return out


def screenshot_all(page, path: Path) -> Path:
    """The whole notebook in one picture: the viewport made as tall as the notebook for the shot."""
    size = page.viewport_size
    height = page.evaluate(
        """() => { const n = document.querySelector('.jp-NotebookPanel .jp-WindowedPanel-outer')
                     || document.querySelector('.jp-Notebook');
                   return n ? n.scrollHeight : document.body.scrollHeight; }"""
    )
    page.set_viewport_size({"width": size["width"], "height": min(16000, max(size["height"], height + 200))})
    try:
        page.evaluate(
            """() => { for (const e of document.querySelectorAll('.jp-WindowedPanel-outer')) e.scrollTop = 0; }"""
        )
        page.wait_for_timeout(500)
        page.screenshot(path=str(path))
    finally:
        page.set_viewport_size(size)
        page.wait_for_timeout(300)
    return path
