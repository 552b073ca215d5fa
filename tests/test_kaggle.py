"""Kaggle as a second home (`kaggle`, `colab.storage`, the setup cell) on a stand-in Kaggle:
its environment variable, and temporary folders for /kaggle/input and /kaggle/working."""

import subprocess
import sys
import types

import pytest

from lab5_utils.config import lab_config
from lab5_utils.data import splits
from lab5_utils.hosts import colab, kaggle
from tests.conftest import FOOD_CLASSES, write_official_food101


@pytest.fixture
def stand_in_kaggle(tmp_path, monkeypatch):
    """Kaggle's environment variable, and temporary folders for /kaggle/input and /kaggle/working."""
    root = tmp_path / "kaggle"
    (root / "working").mkdir(parents=True)
    (root / "input" / "other-dataset" / "data").mkdir(parents=True)
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
    monkeypatch.setenv("LAB5_KAGGLE_ROOT", str(root))
    return root


def test_on_kaggle_food101_is_read_from_input_and_runs_go_to_working(stand_in_kaggle, capsys):
    mounted = write_official_food101(stand_in_kaggle / "input" / "food-101-dataset" / "copy")
    run_root, figures = colab.storage("quick", None, None, "auto")
    working = stand_in_kaggle / "working" / "lab5"
    assert (run_root, figures) == (str(working / "runs" / "quick"), str(working / "figures"))
    cfg = lab_config("quick", ["image_size=64"], run_root)
    assert cfg.dataset == f"folder:{mounted}" and cfg.run_root == run_root
    assert "Kaggle: Food-101 found in" in capsys.readouterr().out
    info = splits.load_encoded(cfg).info
    assert info.official_test and info.class_names == list(FOOD_CLASSES) and info.num_test == 12
    assert lab_config("quick", ["dataset=synthetic"]).dataset == "synthetic"  # a choice is kept


def test_without_a_copy_or_off_kaggle_food101_stays_tfds(stand_in_kaggle, tmp_path, monkeypatch):
    assert kaggle.food101_input() is None and lab_config("quick").dataset == "food101"
    write_official_food101(stand_in_kaggle / "input" / "food")
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE")
    assert lab_config("quick").dataset == "food101"
    assert colab.storage("quick", None, None, "auto") == (None, None)


@pytest.mark.parametrize("host", ["kaggle", "colab", "elsewhere"])
def test_the_setup_cell_clones_into_the_hosts_working_folder(tmp_path, monkeypatch, host):
    """The setup cell run with pip and git stood in for: where it clones on each host."""
    commands = []

    def run(command, **kwargs):
        commands.append(list(command))
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(subprocess, "run", run)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)  # lab5_utils not installed
    monkeypatch.setenv("LAB5_REPO_URL", "https://github.com/me/lab5")
    monkeypatch.setenv("LAB5_KAGGLE_ROOT", str(tmp_path / "kaggle"))
    monkeypatch.setenv("LAB5_COLAB_HOME", str(tmp_path / "content"))
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    if host == "kaggle":
        monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Batch")
    elif host == "colab":
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    exec(compile(colab.setup_cell(), "setup", "exec"), {})
    if host == "elsewhere":
        assert commands == []
        return
    clone = str(tmp_path / ("kaggle/working" if host == "kaggle" else "content") / "lab5")
    assert commands[0] == ["git", "clone", "-q", "https://github.com/me/lab5", clone]
    assert commands[1][-3:] == ["--no-deps", "-e", clone]


@pytest.mark.slow
def test_a_run_on_the_stand_in_kaggle_reads_input_and_writes_to_working(stand_in_kaggle):
    """Slow: it trains (one tiny epoch) on the copy found under the stand-in /kaggle/input."""
    from lab5_utils.train.training import run_stage

    mounted = write_official_food101(stand_in_kaggle / "input" / "food101" / "archive")
    run_root, _ = colab.storage("demo", None, None, "auto")
    cfg = lab_config("demo", ["dataset=food101", "image_size=32", "batch_size=8",
                              "transfer_epochs=1", "calibration_images=16"], run_root)
    assert cfg.dataset == f"folder:{mounted}"
    run = run_stage(cfg, "transfer", verbose=0).run_dir
    assert run.is_relative_to(stand_in_kaggle / "working" / "lab5" / "runs" / "demo")
    assert (run / "metrics.json").is_file() and (run / "best.keras").is_file()
