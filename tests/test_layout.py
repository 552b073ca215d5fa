"""The package stays easy to change: imports point down the layers pyproject.toml declares (checked
by import-linter, which also rules out cycles between rooms), at most 8 modules sit at the top,
and no module is too long."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lab5_utils"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
MAX_LINES = 400
ROOMS = {"hosts", "data", "model", "train", "cost", "evaluate", "report"}


def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    """`lint-imports` with `root`'s pyproject.toml, importing `lab5_utils` from `root`."""
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=root, capture_output=True,
                          text=True, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})


@pytest.fixture(scope="module")
def copy_of_the_package(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("layers")
    shutil.copytree(PACKAGE, root / "lab5_utils", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", root)
    return root


def test_the_layers_hold_in_a_copy_of_the_package(copy_of_the_package):
    result = _lint_imports(copy_of_the_package)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def test_an_import_from_the_lowest_layer_to_the_highest_breaks_the_contract(copy_of_the_package):
    """`files` (the bottom layer) planting an import of `cli` (the top): lint-imports fails and
    names the two. Inside a function, as a hidden import would be: it counts all the same."""
    files = copy_of_the_package / "lab5_utils" / "files.py"
    clean = files.read_text()
    files.write_text(clean + "\n\ndef _planted():\n    from lab5_utils import cli  # noqa\n")
    try:
        result = _lint_imports(copy_of_the_package)
    finally:
        files.write_text(clean)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout and "lab5_utils.files -> lab5_utils.cli" in result.stdout


def test_every_sub_package_is_a_layer_and_at_most_8_modules_sit_at_the_top():
    top = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    rooms = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert len(top) <= 8, sorted(top)
    assert rooms == ROOMS
    layers = (ROOT / "pyproject.toml").read_text().split("layers = [", 1)[1].split("]", 1)[0]
    named = {name.strip(' "') for line in layers.splitlines() for name in line.strip(' ",').split("|")}
    assert top | rooms == named - {""}


def test_every_room_says_what_it_holds_and_which_rooms_it_may_import():
    for room in sorted(ROOMS):
        doc = (PACKAGE / room / "__init__.py").read_text().split('"""')[1]
        assert "May import" in doc, room
        for module in (PACKAGE / room).glob("*.py"):
            assert module.stem == "__init__" or f"`{module.stem}`" in doc, (room, module.stem)


def test_no_module_is_longer_than_about_400_lines():
    lengths = {str(p.relative_to(PACKAGE)): len(p.read_text().splitlines())
               for p in PACKAGE.rglob("*.py")}
    assert any("/" in name for name in lengths)  # the sub-packages are counted too
    assert not {k: v for k, v in lengths.items() if v > MAX_LINES}, lengths


def test_the_readme_names_every_room_and_every_top_module_in_its_layout_table():
    section = (ROOT / "README.md").read_text().split("## How the code is laid out", 1)[1]
    rows = [line.split("|")[1] for line in section.split("\n## ", 1)[0].splitlines()
            if line.startswith("| `")]
    named = {name.strip(" `") for row in rows for name in row.split(",")}
    top = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    assert named == top | {f"{room}/" for room in ROOMS}


def test_each_room_hands_on_the_names_it_lists_and_only_those():
    import importlib

    for room in sorted(ROOMS):
        package = importlib.import_module(f"lab5_utils.{room}")
        assert package.__all__, room
        for name in package.__all__:
            value = getattr(package, name)  # a constant (NOTEBOOKS) has no __module__
            assert getattr(value, "__module__", f"lab5_utils.{room}.").startswith(
                f"lab5_utils.{room}."), name
        with pytest.raises(AttributeError, match="has no attribute 'not_a_name'"):
            package.not_a_name  # noqa: B018


def test_no_module_of_lab5_utils_is_imported_under_another_name():
    """`import lab5_utils.x as y` / `from lab5_utils.room import module as y` anywhere (package,
    tests, notebooks): a module name that wants renaming is one a variable wants."""
    import json
    import re

    modules = {p.stem for p in PACKAGE.rglob("*.py")} | ROOMS
    aliased = re.compile(r"^\s*(import lab5_utils\S* as |from lab5_utils\S* import .*\b("
                         + "|".join(sorted(modules)) + r") as )", re.M)
    sources = {str(p): p.read_text() for p in [*PACKAGE.rglob("*.py"), *(ROOT / "tests").glob("*.py")]}
    for path in (ROOT / "notebooks").glob("*.ipynb"):
        cells = json.loads(path.read_text())["cells"]
        sources[str(path)] = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    assert aliased.search("    from lab5_utils.model import network as net\n")  # it can find one
    assert not {path for path, text in sources.items() if aliased.search(text)}
