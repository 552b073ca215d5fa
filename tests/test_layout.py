"""The package stays easy to change: no import cycle between its modules, none of them too long."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lab5_utils"
MAX_LINES = 400


def _imports(path: Path) -> set[str]:
    """The lab5_utils modules `path` imports anywhere: at the top, inside functions, in
    `if TYPE_CHECKING` blocks."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "lab5_utils" and len(parts) > 1 and (PACKAGE / f"{parts[1]}.py").is_file():
                found.add(parts[1])
    return found - {path.stem}


def _graph() -> dict[str, set[str]]:
    return {p.stem: _imports(p) for p in PACKAGE.glob("*.py") if p.stem != "__init__"}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path [a, b, ..., a], or None."""
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt]
            if nxt not in state:
                found = visit(nxt, path + [nxt])
                if found:
                    return found
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start, [start])
            if found:
                return found
    return None


def test_the_cycle_finder_finds_a_planted_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_module_of_lab5_utils_imports_itself_back():
    graph = _graph()
    assert {"training", "speed", "bench", "report", "export", "sweep"} <= set(graph)
    assert "training" in graph["analysis"]  # the finder sees imports inside functions
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_module_is_longer_than_about_400_lines():
    lengths = {p.name: len(p.read_text().splitlines()) for p in PACKAGE.glob("*.py")}
    assert not {k: v for k, v in lengths.items() if v > MAX_LINES}, lengths
