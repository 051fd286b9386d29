"""Rules of docs/architecture.md that code can break without any other test noticing."""

import ast
import sys
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


# ----------------------------------------------------------------------------- the package's layers


def package_layers() -> list[list[str]]:
    """The layers of docs/architecture.md's "Import layers" block, top first."""
    text = (PACKAGE.parent / "docs/architecture.md").read_text()
    block = text.split("## Import layers", 1)[1].split("```", 2)[1]
    return [[name.strip() for name in line.split("(")[0].split(",")]
            for line in block.strip().splitlines() if line.strip()]


def room_of(path: Path) -> str:
    """A file's room: its subpackage, or its own name for a top-level module."""
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def test_no_import_runs_back_up():
    """Every room of the package is in one documented layer, and every import of another room,
    at module level or inside a function, goes to a lower layer."""
    layers = package_layers()
    layer_of = {name: i for i, names in enumerate(layers) for name in names}
    files = [p for p in PACKAGE.rglob("*.py") if p != PACKAGE / "__init__.py"]
    rooms = {room_of(p) for p in files}
    assert sorted(layer_of) == sorted(rooms)
    wrong = {}
    for path in files:
        here = room_of(path)
        tree = ast.parse(path.read_text())
        used = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                used |= {alias.name.split(".")[1] for alias in node.names if alias.name.startswith("billetjax.")}
            elif isinstance(node, ast.ImportFrom) and node.module:
                if node.module == "billetjax":
                    used |= {alias.name for alias in node.names}
                elif node.module.startswith("billetjax."):
                    used.add(node.module.split(".")[1])
        up = sorted(room for room in used - {here} if layer_of[room] <= layer_of[here])
        if up:
            wrong[str(path.relative_to(PACKAGE))] = up
    assert not wrong, f"imports of rooms on the same or a higher layer: {wrong}"


# ----------------------------------------------------------------------------- the detector

DETECTOR = PACKAGE / "detector"


def detector_layers() -> list[list[str]]:
    """The layers of docs/detector.md's "Import direction" block, top first: the module names
    before the parenthesis of each line."""
    text = (PACKAGE.parent / "docs/detector.md").read_text()
    block = text.split("## Import direction", 1)[1].split("```", 2)[1]
    return [[name.strip() for name in line.split("(")[0].split(",")]
            for line in block.strip().splitlines() if line.strip()]


def test_detector_imports_point_one_way_as_documented():
    """Every detector module is in the documented layers, imports detector modules only from the
    layers above its own, and imports nothing inside a function."""
    layers = detector_layers()
    layer_of = {name: i for i, names in enumerate(layers) for name in names}
    modules = sorted(p.stem for p in DETECTOR.glob("*.py") if p.stem != "__init__")
    assert sorted(layer_of) == modules
    wrong = {}
    for name in modules:
        tree = ast.parse((DETECTOR / f"{name}.py").read_text())
        inner = [n for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                 for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))]
        assert not inner, f"{name}.py imports inside a function"
        used = {m.split(".")[2] for m in imported_modules(DETECTOR / f"{name}.py")
                if m.startswith("billetjax.detector.") and m.split(".")[2] in layer_of}
        above = [m for m in used if layer_of[m] >= layer_of[name]]
        if above:
            wrong[name] = sorted(above)
    assert not wrong


def test_the_detector_owns_its_geometry():
    """The config check imports the detector's geometry, nothing else of the detector; the detector
    does not import the config check; the geometry needs only the standard library (Snakemake
    imports it on every parse)."""
    from_config = {m for m in imported_modules(PACKAGE / "config.py") if m.startswith("billetjax.detector")}
    assert from_config and all(m.startswith("billetjax.detector.geometry") for m in from_config)
    users = sorted(p.name for p in DETECTOR.glob("*.py")
                   if any(m.startswith("billetjax.config") for m in imported_modules(p)))
    assert not users
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    assert {m.split(".")[0] for m in imported_modules(DETECTOR / "geometry.py")} <= stdlib


def test_each_stage_of_the_detector_is_one_module():
    """The RPN's loss, targets and proposals are defined in rpn.py and the box head's in
    roi_heads.py; no other detector module defines a loss or draws a sample."""
    definitions = {p.stem: {n.name for n in ast.walk(ast.parse(p.read_text()))
                            if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
                   for p in DETECTOR.glob("*.py")}
    assert {"RPNHead", "anchor_targets", "losses", "proposals"} <= definitions["rpn"]
    assert {"BoxHead", "sample_rois", "pool_rois", "losses", "detect"} <= definitions["roi_heads"]
    owners = sorted(name for name, defs in definitions.items() if "losses" in defs)
    assert owners == ["roi_heads", "rpn"]
