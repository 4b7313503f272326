"""Layers import only downward: the algorithms never reach up into the stages that use them."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lpcam"

# each layer and what it must not import (anything of lpcam above it)
FORBIDDEN = {
    "prototypes": ("lpcam.cams", "lpcam.stages", "lpcam.models", "lpcam.data", "lpcam.pipeline", "lpcam.cache"),
    "cams": ("lpcam.stages", "lpcam.pipeline", "lpcam.data", "lpcam.cache"),
    "metrics": ("lpcam.cams", "lpcam.prototypes", "lpcam.stages", "lpcam.pipeline", "lpcam.models"),
    "models": ("lpcam.cams", "lpcam.prototypes", "lpcam.stages", "lpcam.pipeline", "lpcam.data"),
    "data": ("lpcam.cams", "lpcam.prototypes", "lpcam.stages", "lpcam.pipeline", "lpcam.models"),
    "stages": ("lpcam.pipeline", "lpcam.run"),
    "export": ("lpcam.cams", "lpcam.prototypes", "lpcam.stages", "lpcam.pipeline", "lpcam.models"),
    "refine": ("lpcam.cams", "lpcam.prototypes", "lpcam.stages", "lpcam.pipeline", "lpcam.data", "lpcam.cache"),
}


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_nothing_above_it(layer):
    offending = {
        f"{path.relative_to(PACKAGE)} imports {name}"
        for path in (PACKAGE / layer).rglob("*.py")
        for name in imported_modules(path)
        if name.startswith(FORBIDDEN[layer])
    }
    assert not offending, sorted(offending)


def test_the_check_sees_imports():
    assert "lpcam.prototypes.store" in imported_modules(PACKAGE / "cams" / "prototype_maps.py")


def test_no_modules_import_each_other():
    """No cycle among lpcam's modules, imports inside functions included: each module can be
    understood, and tested, from the ones below it."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = imported_modules(path)
    graph = {m: {i for i in imported if i in modules and i != m} for m, imported in modules.items()}

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            m = todo.pop()
            if m == goal:
                return True
            if m not in seen:
                seen.add(m)
                todo.extend(graph[m])
        return False

    cycles = sorted(f"{a} <-> {b}" for a in graph for b in graph[a] if reaches(b, a))
    assert not cycles, cycles
