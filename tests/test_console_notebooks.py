"""Notebooks and the console: a failing notebook shows its error and the end of its log; an
interactive kernel's cell does not start with TensorFlow's C++ lines."""

import re

import nbformat
import pytest
from nbclient import NotebookClient

from lab5_utils.report.console import is_engine_line
from tests.test_console_runs import lab5


@pytest.mark.slow
def test_a_failing_notebook_shows_its_error_and_the_end_of_its_log(tmp_path):
    """Slow: `lab5 report` starts the kernels; the folder is missing, which only the notebooks'
    data loading finds (the report's checks pass)."""
    out = tmp_path / "report"
    report = lab5("report", "--lrs", "1e-4", "--out", str(out), "--set",
                  f"dataset=folder:{tmp_path / 'no-such-photos'}")
    assert report.returncode == 1
    printed = report.stdout
    log = out / "logs" / "01_data_exploration.log"
    failed = re.search(r"^\[report [\d:]+\] 01_data_exploration: FAILED: (\w+Error: .+) \([\d:]+\)$",
                       printed, re.M)
    assert failed and "no-such-photos" in failed.group(1), printed
    after = printed[failed.end():].splitlines()
    assert re.fullmatch(rf"    the last \d+ lines of its log {re.escape(str(log))}:", after[1])
    last = log.read_text().splitlines()[-3:]  # the traceback's end, the error's line last
    assert after[2:5] != [] and [line.removeprefix("    ") for line in after[2:]][:12][-3:] == last
    assert failed.group(1).split(":")[0] in last[-1]
    assert "03_fine_tuning_lr=1e-04: skipped (the transfer-learning notebook failed)" in printed


@pytest.mark.slow
def test_an_interactive_kernel_imports_tensorflow_without_its_cpp_lines_in_the_cell():
    """Slow: a Jupyter kernel as Jupyter starts it (ipykernel copies file descriptor 2 into the
    cells), importing lab5_utils and TensorFlow."""
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("import lab5_utils\nimport tensorflow as tf\nprint('imported')"),
    ])
    NotebookClient(nb, kernel_name="python3", timeout=600).execute()
    outputs = nb.cells[0].outputs
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "imported" in text
    assert [line for line in text.splitlines() if is_engine_line(line)] == []
    assert "absl::InitializeLog" not in text
