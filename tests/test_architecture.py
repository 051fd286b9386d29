"""Rules of docs/architecture.md that code can break without any other test noticing."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "billetjax"


def imported_modules(path: Path) -> set[str]:
    """Every module a source file imports, at module level or inside a function."""
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


@pytest.mark.parametrize("folder", ["synth", "pix2pix"])
def test_synthesis_does_not_use_the_simulators_stamp_drawing(folder):
    """The simulator stands in for real images; synthesis drawing stamps with its code would make
    the domain gap the study measures vanish. They may share the glyph shapes only."""
    files = sorted((PACKAGE / folder).glob("*.py"))
    assert files
    users = {f.name: sorted(m for m in imported_modules(f) if m.startswith("billetjax.data.simulate"))
             for f in files}
    assert not {name: mods for name, mods in users.items() if mods}


def test_the_simulator_does_not_use_synthesis():
    modules = imported_modules(PACKAGE / "data/simulate.py")
    assert not [m for m in modules if m.startswith(("billetjax.synth", "billetjax.pix2pix"))]
