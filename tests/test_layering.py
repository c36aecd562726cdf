"""The package's layering, checked on the source: every module imports, no import cycles (counting
imports inside functions too), each layer imports only from the layers below it, and imports inside
functions are kept for optional extras (and torch.distributed, which not every torch build has)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
# bottom to top; a module may import from its own layer and the layers below it
LAYERS = [
    ["alignkit", "alignkit.errors", "alignkit.atomic", "alignkit.trl_names"],
    ["alignkit.data"],
    ["alignkit.configs"],
    ["alignkit.models"],
    ["alignkit.engine", "alignkit.losses"],
    ["alignkit.judges"],
    ["alignkit.diagnose"],
    ["alignkit.train"],
    ["alignkit.evaluate", "alignkit.report"],
    ["alignkit.commands", "alignkit.cli", "alignkit.__main__"],
]
# datasets is a core dependency, but only save_to_disk folders and hub ids need it, and importing it costs every
# training process 80 MB of memory
LAZY_ALLOWED = (
    "datasets",
    "deepspeed",
    "fastapi",
    "openai",
    "lm_eval",
    "bitsandbytes",
    "wandb",
    "uvicorn",
    "torch.distributed",
)


def module_names() -> dict[str, Path]:
    names = {}
    for path in (SRC / "alignkit").rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


MODULES = module_names()


def layer_of(module: str) -> int:
    best, rank = "", None
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best):
                best, rank = prefix, i
    assert rank is not None, f"{module} is in no layer of tests/test_layering.py"
    return rank


def imports_of(module: str) -> list[tuple[str, int, bool]]:
    """(imported module, line, inside a function) for each import statement of ``module``."""
    path = MODULES[module]
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    in_function = {
        id(node)
        for f in ast.walk(tree)
        if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
        for node in ast.walk(f)
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            targets = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            while target not in MODULES and "." in target and target.startswith("alignkit"):
                target = target.rpartition(".")[0]
            found.append((target, node.lineno, id(node) in in_function))
    return found


def test_every_module_imports():
    for module in sorted(MODULES):
        if module != "alignkit.__main__":
            importlib.import_module(module)


def test_no_import_cycles():
    graph = {m: {t for t, _, _ in imports_of(m) if t in MODULES and t != m} for m in MODULES}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt) :] + [nxt] if nxt in path else [node, nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_each_layer_imports_only_from_below():
    wrong = [
        f"{m} (layer {layer_of(m)}) imports {t} (layer {layer_of(t)}) at line {line}"
        for m in MODULES
        for t, line, _ in imports_of(m)
        if t in MODULES and layer_of(t) > layer_of(m)
    ]
    assert not wrong, "\n".join(wrong)


def test_imports_inside_functions_only_for_optional_extras():
    lazy = [
        f"{MODULES[m].relative_to(SRC)}:{line} imports {t}"
        for m in MODULES
        for t, line, inside in imports_of(m)
        if inside and not any(t == extra or t.startswith(extra + ".") for extra in LAZY_ALLOWED)
    ]
    assert not lazy, "\n".join(lazy)


def test_a_cycle_is_found(monkeypatch):
    """The checker itself: a two-module cycle fails the test."""
    fake = {"alignkit.a": "from alignkit.b import x\n", "alignkit.b": "def f():\n    from alignkit.a import y\n"}
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: fake[self.name])
    monkeypatch.setitem(MODULES, "alignkit.a", Path("alignkit.a"))
    monkeypatch.setitem(MODULES, "alignkit.b", Path("alignkit.b"))
    names = {"alignkit.a", "alignkit.b"}
    graph = {m: {t for t, _, _ in imports_of(m) if t in names} for m in names}
    assert graph == {"alignkit.a": {"alignkit.b"}, "alignkit.b": {"alignkit.a"}}
