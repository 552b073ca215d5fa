"""What `lab5 report` and `lab5 train` print, as a person sees it in a terminal: lab5's lines,
each once; the engines' log lines (TensorFlow/absl C++, Jupyter) only in the log files."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lab5_utils.report.console import is_engine_line

TINY = ["image_size=32", "batch_size=32", "transfer_epochs=1", "finetune_epochs=1", "num_classes=3",
        "synthetic_train_per_class=8", "synthetic_val_per_class=4", "synthetic_test_per_class=4",
        "calibration_images=16"]
SETTINGS = [arg for setting in TINY for arg in ("--set", setting)]
PREFIX = re.compile(r"^  \S+ \| ")  # a notebook's line in `lab5 report`: "  02_transfer_learning | "


def lab5(*args: str) -> subprocess.CompletedProcess:
    """`lab5 ARGS` in a child process, stdout and stderr as one stream (as a terminal shows)."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # lab5's default
    return subprocess.run([sys.executable, "-m", "lab5_utils.cli", *args], env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=1200)


def engine_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if is_engine_line(PREFIX.sub("", line))]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A small report (demo, two learning rates, 01 beside 02) and a one-epoch `lab5 train`."""
    root = tmp_path_factory.mktemp("console")
    report = lab5("report", "--lrs", "1e-4", "1e-5", "--jobs", "2", "--out", str(root / "report"),
                  *SETTINGS)
    train = lab5("train", "--epochs", "1", "--run-dir", str(root / "run"), *SETTINGS)
    return root, report, train


def _quiet_and_complete(printed: str, logs: list[Path]) -> None:
    """No engine's line, no absl preamble, no Jupyter transport warning, no line twice (with
    and without a notebook's prefix); the logs hold what was left out."""
    assert engine_lines(printed) == []
    assert "absl::InitializeLog" not in printed and "Kernel is running over TCP" not in printed
    bare = [PREFIX.sub("", line) for line in printed.splitlines() if PREFIX.match(line)]
    assert not set(bare) & {line for line in printed.splitlines() if not PREFIX.match(line)}
    logged = "".join(path.read_text() for path in logs)
    assert engine_lines(logged)  # TensorFlow 2.21 logs oneDNN lines at import, whatever the level
    for line in printed.splitlines()[:-1]:  # all but the closing line that names the log
        assert PREFIX.sub("", line) in logged, line


@pytest.mark.slow
def test_the_report_prints_lab5s_lines_once_and_logs_the_engines(runs):
    """Slow: a whole `lab5 report` (five notebooks in Jupyter kernels) in a child process."""
    root, report, _ = runs
    assert report.returncode == 0, report.stdout
    logs = root / "report" / "logs"
    notebook_logs = sorted(logs.glob("0*.log"))
    assert [p.stem for p in notebook_logs] == [
        "01_data_exploration", "02_transfer_learning", "03_fine_tuning_lr=1e-04",
        "03_fine_tuning_lr=1e-05", "04_analysis"]
    _quiet_and_complete(report.stdout, [logs / "lab5.log", *notebook_logs])
    assert "Kernel is running over TCP" in (logs / "02_transfer_learning.log").read_text()
    assert re.search(r"^  02_transfer_learning \| \[lab5\] transfer done: best val accuracy",
                     report.stdout, re.M)
    closing = report.stdout.splitlines()[-2:]
    assert closing[0].endswith(f"; logs: {logs}") and closing[1].startswith(f"[lab5] log: {logs}")


@pytest.mark.slow
def test_train_prints_lab5s_lines_once_and_logs_the_engines_in_its_run_folder(runs):
    """Slow: a one-epoch `lab5 train` in a child process."""
    root, _, train = runs
    assert train.returncode == 0, train.stdout
    log = root / "run" / "lab5.log"
    _quiet_and_complete(train.stdout, [log])
    assert "[lab5] transfer done: best val accuracy" in train.stdout
    assert train.stdout.splitlines()[-1].startswith(f"[lab5] log: {log} (")


@pytest.mark.slow
def test_verbose_shows_the_engines_lines_again(tmp_path):
    """Slow: `lab5 train -v` in a child process imports TensorFlow and loads the data before it
    refuses a run folder made with another seed."""
    from lab5_utils.config import lab_config

    run = tmp_path / "run"
    run.mkdir()
    other = lab_config("demo", TINY).replace(seed=1)
    (run / "config.json").write_text(other.to_json())
    verbose = lab5("train", "-v", "--epochs", "1", "--run-dir", str(run), *SETTINGS)
    assert verbose.returncode == 2 and "different configuration" in verbose.stdout
    assert engine_lines(verbose.stdout) and "absl::InitializeLog" in verbose.stdout
    assert verbose.stdout.splitlines()[-1].startswith("lab5 train: error: ")  # the one message
    logged = (run / "lab5.log").read_text()
    assert logged.startswith("--- lab5 train, ") and engine_lines(logged)
