"""The layers hold: `core` (settings, options, trial vocabulary) at the bottom, then
`objectives` (model space, data, training), then `storage` (URLs, database, artifacts),
then `search` (library API, CLI, workers). A module imports only from its own layer or a
lower one, lazily or not, and no two modules import each other at load time."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAYERS = ["core", "objectives", "storage", "search"]


def _module(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, top_level_only: bool) -> set[str]:
    """The project modules `path` imports (absolute names); with top_level_only, those that
    run when the module loads (not inside a function)."""
    module = _module(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                found.update({f"{target}.{a.name}" for a in node.names} if not node.module else {target})
            elif node.module and node.module.split(".")[0] in LAYERS:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] in LAYERS)
    return found


def _sources() -> list[Path]:
    return [p for layer in LAYERS for p in sorted((REPO / layer).rglob("*.py")) if "__pycache__" not in p.parts]


def test_no_module_imports_from_a_higher_layer():
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    upward = [f"{_module(p)} -> {target}" for p in _sources() for target in _imports(p, top_level_only=False)
              if rank[target.split(".")[0]] > rank[_module(p).split(".")[0]]]
    assert not upward, f"imports that run up a layer: {upward}"


def test_no_import_cycle_at_load_time():
    modules = {_module(p): p for p in _sources()}
    graph = {m: {t for t in _imports(p, top_level_only=True) if t in modules and t != m} for m, p in modules.items()}
    # Depth-first search for a back edge; report the cycle it closes.
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in graph[m]:
            if state.get(t) == 1:
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m)
    assert not cycles, f"import cycles: {cycles}"


def test_the_checks_see_project_imports():
    """The two checks above pass vacuously if the parser finds nothing: it must see that the
    CLI reaches the settings and the storage reaches the trial vocabulary."""
    assert "core.settings" in _imports(REPO / "search" / "cli.py", top_level_only=True)
    assert "core.trials" in _imports(REPO / "storage" / "requeue.py", top_level_only=True)
