"""Imports go one way: core -> analysis -> viz -> widgets; store beside core; sweeps on core, store and
analysis; report, toy, study, cli on top."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "workbench"

# What each layer may import from workbench besides itself (imports inside functions count too).
ALLOWED = {
    "core": set(),
    "analysis": {"core"},
    "viz": {"core", "analysis"},
    "store": {"core"},
    "edits": {"core"},
    "sweeps": {"core", "store", "analysis", "edits"},
    "widgets": {"core", "analysis", "viz", "store", "sweeps", "edits", "lab", "report"},
    "lab": {"core", "analysis", "edits", "toy"},
}


def imports_of(source: str, package: tuple[str, ...]) -> set[str]:
    """The workbench subpackages some source imports, at any indentation, relative imports resolved.

    ``package`` is the importing module's package, e.g. ``("workbench", "viz")``.
    """
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names = [module] if node.module else [f"{module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "workbench" and len(parts) > 1:
                found.add(parts[1])
    return found


LEAVES = {"_version", "names"}  # standard-library-only modules anything may import


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_no_layer_imports_a_layer_above_it(layer):
    wrong = {}
    for path in sorted((ROOT / layer).rglob("*.py")):
        package = path.relative_to(ROOT.parent).parent.parts
        above = imports_of(path.read_text(), package) - ALLOWED[layer] - {layer} - LEAVES
        if above:
            wrong[str(path.relative_to(ROOT.parent))] = sorted(above)
    assert not wrong, f"{layer} may import only {sorted(ALLOWED[layer])}; found {wrong}"


def test_the_import_finder_sees_nested_and_relative_imports():
    source = (
        "import workbench.store.report\n"
        "from ..analysis import heatmaps\n"
        "from . import maps\n"
        "def f():\n"
        "    from workbench.widgets import explorer\n"
    )
    assert imports_of(source, ("workbench", "viz")) == {"store", "analysis", "viz", "widgets"}


def modules_of(source: str, package: tuple[str, ...]) -> set[str]:
    """The workbench modules some source imports, by full dotted name (``from a import b`` names both
    ``a`` and ``a.b``, since ``b`` may be a module)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found |= {module} | {f"{module}.{a.name}" for a in node.names}
    return {name for name in found if name.split(".")[0] == "workbench"}


def test_rerun_sits_on_core_and_store_only():
    """Re-running generates (core) from a recipe (store); nothing above it."""
    above = imports_of((ROOT / "rerun.py").read_text(), ("workbench",)) - {"core", "store", "edits"} - LEAVES
    assert not above, f"workbench/rerun.py may import only core, store and edits; found {sorted(above)}"


GENERATING = {"workbench.core.generate", "workbench.core.loading", "workbench.core.recorder"}


def test_store_neither_loads_models_nor_generates():
    """Storage reads and writes runs; making them (again) happens above it, in ``workbench.rerun``."""
    wrong = {}
    for path in sorted((ROOT / "store").rglob("*.py")):
        package = path.relative_to(ROOT.parent).parent.parts
        found = modules_of(path.read_text(), package) & GENERATING
        if found:
            wrong[str(path.relative_to(ROOT.parent))] = sorted(found)
    assert not wrong, f"store must not load models or generate; found {wrong}"


def test_the_module_finder_sees_names_imported_from_a_package():
    source = "from workbench.core import loading\nfrom ..core.generate import generate\n"
    assert {"workbench.core.loading", "workbench.core.generate"} <= modules_of(source, ("workbench", "store"))


def test_report_stays_below_the_widgets_that_write_reports():
    allowed = {"core", "analysis", "viz", "store", "sweeps"}
    above = imports_of((ROOT / "report.py").read_text(), ("workbench",)) - allowed - LEAVES
    assert not above, f"workbench/report.py may import only {sorted(allowed)}; found {sorted(above)}"
