"""The two test tiers: `make test` leaves out the tests marked `@pytest.mark.slow`, and each of
those says in its docstring why it cannot be fast."""

import ast
import itertools
from pathlib import Path

TESTS = Path(__file__).parent


def _is_slow_mark(node: ast.expr) -> bool:
    """`pytest.mark.slow`, also called (`pytest.mark.slow(...)`) or in a list."""
    if isinstance(node, ast.Call):
        node = node.func
    if isinstance(node, (ast.List, ast.Tuple)):
        return any(_is_slow_mark(item) for item in node.elts)
    return isinstance(node, ast.Attribute) and node.attr == "slow" and ast.unparse(node) in (
        "pytest.mark.slow", "mark.slow")


def slow_tests() -> dict[str, str | None]:
    """`file::test` -> docstring of every slow test (whole files marked with `pytestmark`
    included)."""
    found = {}
    for path in sorted(TESTS.glob("test_*.py")):
        tree = ast.parse(path.read_text())
        whole_file = any(isinstance(n, ast.Assign) and any(
            getattr(t, "id", "") == "pytestmark" for t in n.targets) and _is_slow_mark(n.value)
            for n in tree.body)
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_") and (
                    whole_file or any(_is_slow_mark(d) for d in node.decorator_list)):
                found[f"{path.name}::{node.name}"] = ast.get_docstring(node)
    return found


def test_every_slow_test_says_why_it_cannot_be_fast():
    tests = slow_tests()
    assert len(tests) >= 20  # the parser finds them (the tier holds about 40)
    undocumented = [name for name, doc in tests.items() if not doc or "slow" not in doc.lower()]
    assert not undocumented, f"slow tests without a docstring saying why they are slow: {undocumented}"


def test_the_fast_command_leaves_the_slow_tier_out():
    lines = (TESTS.parent / "Makefile").read_text().splitlines()
    targets = {}  # each target's recipe: the tab-indented lines right below it
    for i, line in enumerate(lines):
        if line.startswith(("test:", "test-slow:", "test-all:")):
            recipe = itertools.takewhile(lambda row: row.startswith("\t"), lines[i + 1:])
            targets[line.split(":")[0]] = "\n".join(recipe)
    assert '-m "not slow"' in targets["test"] and "-m slow" in targets["test-slow"]
    assert "lint-imports" in targets["test"]  # the layers are checked in the fast tier, so in CI
    assert "-m" not in targets["test-all"].replace("$(PYTEST)", "")
    assert "slow:" in (TESTS.parent / "pyproject.toml").read_text()  # the marker is registered
