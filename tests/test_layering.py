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
    "sweeps": {"core", "store", "analysis"},
    "widgets": {"core", "analysis", "viz", "store", "sweeps"},
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
