"""The package's layout is its architecture: folders by role, imports flowing one way.

Every import in ``src/ferroute`` is read from the source (module level and inside functions;
``if TYPE_CHECKING:`` blocks aside), so a lazy import breaks the rules as surely as a
top-level one. The run-time check that the core imports without torch is ``tests/test_core.py``.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "src" / "ferroute"
#: the lab: the only folders that may import torch and its friends
LAB = ("train", "evaluate")
#: the core's folders and top-level modules (the CLI is the application above both)
CORE = ("vision", "decide", "engine", "serve", "output", "router", "stream", "labels", "__init__", "__main__")
HEAVY = ("torch", "torchvision", "timm", "safetensors", "onnx")
#: the only module allowed to be reached through a string (a deprecated path, gone in 0.4.0)
#: is named in ferroute/__init__.py's MOVED and _MOVED_NAMES maps, which import nothing by themselves.


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(["ferroute", *parts]) if parts != ["__init__"] else "ferroute"


def _type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def imports_of(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports, lazily or not (TYPE_CHECKING aside)."""
    name = module_name(path)
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - (child.level - 1)]
                    mod = ".".join(base + ([child.module] if child.module else []))
                else:
                    mod = child.module or ""
                found.add(mod)
                for a in child.names:  # `from . import x` names a module
                    if (PKG.parent / (mod.replace(".", "/") + f"/{a.name}.py")).exists() \
                            or (PKG.parent / mod.replace(".", "/") / a.name / "__init__.py").exists():
                        found.add(f"{mod}.{a.name}")
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return found


MODULES = {module_name(p): p for p in sorted(PKG.rglob("*.py"))}
GRAPH = {m: {i for i in imports_of(p) if i.startswith("ferroute")} for m, p in MODULES.items()}


def role(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_the_house_has_rooms_not_a_hall():
    top = [p for p in PKG.glob("*.py")]
    subpackages = [p for p in PKG.iterdir() if (p / "__init__.py").is_file()]
    assert len(top) <= 6, sorted(p.name for p in top)
    assert len(subpackages) >= 5
    for sub in subpackages:  # each says what it owns
        doc = ast.get_docstring(ast.parse((sub / "__init__.py").read_text()))
        assert doc and len(doc) > 30, f"{sub.name}/__init__.py needs a docstring saying what it owns"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if role(m) not in LAB))
def test_nothing_outside_the_lab_imports_torch_or_the_lab(module):
    heavy = {i for i in imports_of(MODULES[module]) if i.split(".")[0] in HEAVY}
    assert not heavy, f"{module} imports {sorted(heavy)}: only ferroute.{'/'.join(LAB)} may"
    if role(module) in CORE:
        lab = {i for i in GRAPH[module] if role(i) in LAB}
        assert not lab, f"{module} (core) imports the lab: {sorted(lab)}"


def _resolve(name: str) -> str:
    """An imported name -> the module it is (``ferroute.x.Y`` -> ``ferroute.x``)."""
    while name not in MODULES and "." in name:
        name = name.rpartition(".")[0]
    return name


def test_no_import_cycles():
    graph = {m: {_resolve(i) for i in deps} - {m} for m, deps in GRAPH.items()}
    # a module's own package __init__ runs first on import, so edges to it are not cycles of code
    graph = {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                cycle = stack[stack.index(d):] + [d]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if d in graph and not state.get(d):
                dfs(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if not state.get(m):
            dfs(m)


def test_the_rules_can_fail(tmp_path):
    """The reader sees lazy imports and skips TYPE_CHECKING ones, so the rules above can fail."""
    src = tmp_path / "probe.py"
    src.write_text(textwrap.dedent('''
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:
            import torch
        def f():
            import safetensors
            from .train import ensemble
    '''))
    fake = PKG / "_layout_probe.py"
    fake.write_text(src.read_text())
    try:
        found = imports_of(fake)
    finally:
        fake.unlink()
    assert "safetensors" in found and "ferroute.train" in found and "torch" not in found


def test_old_import_paths_warn_and_still_work():
    code = textwrap.dedent('''
        import warnings
        warnings.simplefilter("error", DeprecationWarning)
        try:
            from ferroute.pipeline import FERRouter
        except DeprecationWarning as w:
            print("warned:", w)
        warnings.simplefilter("ignore", DeprecationWarning)
        from ferroute.pipeline import FERRouter
        from ferroute.router import FERRouter as New
        assert FERRouter is New
        import ferroute.routing, ferroute.decide.routing
        assert ferroute.routing.UncertaintyRouter is ferroute.decide.routing.UncertaintyRouter
    ''')
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "ferroute.pipeline moved to ferroute.router" in res.stdout


def test_public_surface_unchanged():
    import ferroute

    for name in ferroute.__all__:
        assert getattr(ferroute, name) is not None
    assert callable(importlib.import_module("ferroute.router").load)
