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
    ["alignkit", "alignkit.errors", "alignkit.atomic", "alignkit.peer_names"],
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
    "flash_attn",
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
        if _is_import_module_call(node):  # importlib.import_module("alignkit.x"): an import all the same
            targets = [node.args[0].value]
        elif isinstance(node, ast.Import):
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


def _is_import_module_call(node: ast.AST) -> bool:
    """``importlib.import_module("literal")`` or ``import_module("literal")``."""
    if not isinstance(node, ast.Call) or not node.args or not isinstance(node.args[0], ast.Constant):
        return False
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    return name == "import_module" and isinstance(node.args[0].value, str)


def import_graph(modules) -> dict[str, set[str]]:
    return {m: {t for t, _, _ in imports_of(m) if t in modules and t != m} for m in modules}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (as a path that ends where it starts), or None."""
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt] if nxt in path else [node, nxt]
            if nxt not in state:
                found = visit(nxt, path + [nxt])
                if found:
                    return found
        state[node] = 2
        return None

    for module in sorted(graph):
        if module not in state:
            found = visit(module, [module])
            if found:
                return found
    return None


def upward_imports(modules, layer=None) -> list[str]:
    """Each import of a module from a higher layer than its own, described."""
    layer = layer or layer_of
    return [
        f"{m} (layer {layer(m)}) imports {t} (layer {layer(t)}) at line {line}"
        for m in modules
        for t, line, _ in imports_of(m)
        if t in modules and layer(t) > layer(m)
    ]


def test_every_module_imports():
    for module in sorted(MODULES):
        if module != "alignkit.__main__":
            importlib.import_module(module)


def test_no_import_cycles():
    cycle = find_cycle(import_graph(MODULES))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_each_layer_imports_only_from_below():
    wrong = upward_imports(MODULES)
    assert not wrong, "\n".join(wrong)


def test_imports_inside_functions_only_for_optional_extras():
    lazy = [
        f"{MODULES[m].relative_to(SRC)}:{line} imports {t}"
        for m in MODULES
        for t, line, inside in imports_of(m)
        if inside and not any(t == extra or t.startswith(extra + ".") for extra in LAZY_ALLOWED)
    ]
    assert not lazy, "\n".join(lazy)


FAKE = {
    # a three-module cycle, one edge inside a function, one through importlib with a literal name
    "alignkit.a": "from alignkit.b import x\n",
    "alignkit.b": "def f():\n    from alignkit.c import y\n",
    "alignkit.c": "import importlib\nmodule = importlib.import_module('alignkit.a')\n",
    # d sits low but imports a from above; e is clean
    "alignkit.d": "import alignkit.a\n",
    "alignkit.e": "from alignkit.d import z\n",
}


@pytest.fixture
def fake_package(monkeypatch):
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: FAKE[self.name])
    for name in FAKE:
        monkeypatch.setitem(MODULES, name, Path(name))
    return set(FAKE)


def test_the_checker_finds_a_cycle_through_functions_and_import_module(fake_package):
    graph = import_graph(fake_package)
    assert graph["alignkit.c"] == {"alignkit.a"}  # import_module with a literal is an import
    assert find_cycle(graph) == ["alignkit.a", "alignkit.b", "alignkit.c", "alignkit.a"]
    del FAKE["alignkit.c"]
    try:
        assert find_cycle(import_graph(fake_package - {"alignkit.c"})) is None
    finally:
        FAKE["alignkit.c"] = "import importlib\nmodule = importlib.import_module('alignkit.a')\n"


def test_the_checker_finds_an_upward_import(fake_package):
    layers = {"alignkit.a": 2, "alignkit.b": 2, "alignkit.c": 2, "alignkit.d": 0, "alignkit.e": 1}
    wrong = upward_imports(fake_package, layers.get)
    assert wrong == ["alignkit.d (layer 0) imports alignkit.a (layer 2) at line 1"]
