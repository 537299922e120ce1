"""The package's layout: subpackages by layer, no import cycle, no module importing from a layer above its own.

The import graph is read from the source with ``ast`` (every ``import`` of a ``molft_utils`` module, including
the ones inside functions), so nothing is imported to build it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import molft_utils

PACKAGE = Path(molft_utils.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "__pycache__" not in p.parts}


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph() -> dict[str, set[str]]:
    """``module -> the molft_utils modules it imports`` (a name imported from a package counts as its module)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(node, name, path.name == "__init__.py")
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.add(sub if sub in modules else base)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return molft_utils.LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in molft_utils.LAYERS else None


def test_every_module_lies_in_a_layer() -> None:
    stray = [m for m in _modules() if m != "molft_utils" and _layer(m) is None]
    assert stray == [], f"modules outside the layer subpackages {molft_utils.LAYERS}: {stray}"
    assert sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__") == sorted(
        molft_utils.LAYERS
    )


def test_no_module_imports_from_a_layer_above_its_own() -> None:
    upward = [
        f"{m} ({molft_utils.LAYERS[_layer(m)]}) imports {t} ({molft_utils.LAYERS[_layer(t)]})"
        for m, targets in import_graph().items()
        for t in sorted(targets)
        if _layer(m) is not None and _layer(t) is not None and _layer(t) > _layer(m)
    ]
    assert upward == []


def test_the_import_graph_has_no_cycle() -> None:
    graph = import_graph()
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_checks_see_a_cycle_and_an_upward_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The graph is real: a planted cycle and a planted upward import are found."""
    pkg = tmp_path / "molft_utils"
    for layer in molft_utils.LAYERS:
        (pkg / layer).mkdir(parents=True)
        (pkg / layer / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "core" / "a.py").write_text("from molft_utils.runs import b\n")
    (pkg / "runs" / "b.py").write_text("def f():\n    from ..core import a\n")
    monkeypatch.setattr(molft_utils, "__file__", str(pkg / "__init__.py"))
    monkeypatch.setattr(__import__(__name__), "PACKAGE", pkg)
    graph = import_graph()
    assert graph["molft_utils.core.a"] == {"molft_utils.runs.b"}
    assert graph["molft_utils.runs.b"] == {"molft_utils.core.a"}
    with pytest.raises(AssertionError, match="imports molft_utils.runs.b"):
        test_no_module_imports_from_a_layer_above_its_own()
    with pytest.raises(AssertionError, match="import cycles"):
        test_the_import_graph_has_no_cycle()


def test_top_level_names_resolve_lazily() -> None:
    """``from molft_utils import ...`` reaches every listed module and name; an unknown name is an AttributeError."""
    for name, target in {**molft_utils.MODULES, **molft_utils.NAMES}.items():
        path = PACKAGE / target.replace(".", "/")
        assert path.with_suffix(".py").is_file() or (path / "__init__.py").is_file(), (name, target)
    from molft_utils import ModelCache, finetune

    assert finetune.__name__ == "molft_utils.runs.finetune" and ModelCache.__module__ == "molft_utils.core.records"
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        molft_utils.nothing_here  # noqa: B018
