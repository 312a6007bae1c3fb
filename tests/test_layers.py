"""The folders are the layers (docs/design.md, "Layers"): each subpackage of massive_checks is one
layer, and a package imports only packages below it - at module level, inside functions, under
TYPE_CHECKING or at first use through LazyModule. The order is read from docs/design.md, the
folders from the disk; no table of modules is kept here."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).parent.parent
PACKAGE = ROOT / "massive_checks"
DESIGN = ROOT / "docs" / "design.md"


def drawn_layers() -> list[list[str]]:
    """The packages of each layer, highest first, from the block after `<!-- layers -->`: one line a
    layer, its packages (comma-separated) before two spaces and what it holds."""
    block = DESIGN.read_text().split("<!-- layers -->", 1)[1].split("```")[1]
    lines = [line for line in block.splitlines()[1:] if line.strip()]
    return [[name.strip() for name in re.split(r"\s{2,}", line.strip())[0].split(",")] for line in lines]


def rank() -> dict[str, int]:
    """package -> its layer, 0 lowest."""
    layers = drawn_layers()
    return {name: len(layers) - 1 - i for i, names in enumerate(layers) for name in names}


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def imported(path: Path) -> set[str]:
    """Every massive_checks module or name a file imports, anywhere in it, LazyModule included."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("massive_checks"):
            found.add(node.module or "")
            found.update(m for a in node.names if is_module(m := f"{node.module}.{a.name}"))  # submodules
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: relative import (the project writes absolute ones)")
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("massive_checks"))
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "LazyModule" and node.args:
            value = getattr(node.args[0], "value", "")
            found.update([value] if isinstance(value, str) and value.startswith("massive_checks") else [])
    return found


def package_of(module: str) -> str | None:
    """massive_checks.engine.models -> engine; massive_checks itself -> None (its __version__)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_the_drawn_layers_are_the_folders():
    folders = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    drawn = [name for names in drawn_layers() for name in names]
    assert sorted(drawn) == sorted(folders), "docs/design.md's layers name each folder once"
    loose = sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    assert not loose, f"every module belongs to a layer's folder: {loose}"


def test_a_package_imports_only_packages_below_it():
    order = rank()
    upward = [
        f"{module_name(path)} ({package_of(module_name(path))}) imports {dep}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for dep in sorted(imported(path))
        if (target := package_of(dep)) is not None
        and target != package_of(module_name(path))
        and order[target] >= order[package_of(module_name(path)) or ""]
    ]
    assert not upward, upward


def test_the_layer_test_catches_an_upward_import(tmp_path):
    """The check can fail: an engine module that names a measure is an upward import."""
    order = rank()
    source = tmp_path / "bad.py"
    source.write_text("def f():\n    from massive_checks.measures import massive\n")
    assert {package_of(d) for d in imported(source)} == {"measures"}
    assert order["measures"] > order["engine"]


def test_no_module_imports_one_that_imports_it_back():
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {
        name: {d for d in imported(path) if d in modules and d != name and not name.startswith(d + ".")}
        for name, path in modules.items()
    }

    def reaches(start: str, target: str, seen: tuple[str, ...] = ()) -> bool:
        return any(d == target or (d not in seen and reaches(d, target, (*seen, d))) for d in graph.get(start, ()))

    cycles = sorted({tuple(sorted((a, b))) for a in graph for b in graph[a] if reaches(b, a)})
    assert not cycles, f"import cycles: {cycles}"


def test_only_the_plugin_imports_pytest():
    importing = sorted(
        module_name(p) for p in PACKAGE.rglob("*.py") if re.search(r"^\s*(import|from) pytest\b", p.read_text(), re.M)
    )
    assert importing and all(m.startswith("massive_checks.plugin") for m in importing), importing
