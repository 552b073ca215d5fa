"""Colab as a home: the repository URL kept once, `drive_dir`, the installer that keeps
TensorFlow, and one notebook run on a stand-in Colab through a runtime reset."""

import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import types
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from lab5_utils.files import project_root
from lab5_utils.hosts import colab

ROOT = project_root()


# --- the repository's URL, kept once ------------------------------------------------------------
def test_the_readme_links_each_notebook_from_the_one_repository_url():
    readme = (ROOT / "README.md").read_text()
    assert colab.readme_links(colab.REPO_URL) in readme
    for name in colab.NOTEBOOKS:
        assert readme.count(colab.colab_link(name)) == 1
        assert (ROOT / "notebooks" / f"{name}.ipynb").is_file()
    assert colab.colab_link("04_analysis", "https://github.com/me/lab5.git") == (
        "https://colab.research.google.com/github/me/lab5/blob/main/notebooks/04_analysis.ipynb")
    with pytest.raises(ValueError, match="https://github.com/OWNER/REPO"):
        colab.github_path("git@github.com:me/lab5")


def test_publish_sets_the_url_in_the_module_the_notebooks_and_the_readme(tmp_path):
    for part in ("lab5_utils/hosts/colab.py", "notebooks", "README.md"):
        source, target = ROOT / part, tmp_path / part
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if source.is_dir() else shutil.copy)(source, target)
    url = "https://github.com/someone/lab5-fork"
    changed = colab.publish(url, tmp_path)
    assert len(changed) == 2 + len(colab.NOTEBOOKS)
    assert f'REPO_URL = "{url}"' in (tmp_path / "lab5_utils/hosts/colab.py").read_text()
    for name in colab.NOTEBOOKS:
        nb = nbformat.read(tmp_path / "notebooks" / f"{name}.ipynb", as_version=4)
        assert nb.cells[1].source == colab.setup_cell(url)
    readme = (tmp_path / "README.md").read_text()
    assert colab.readme_links(url) in readme and colab.REPO_URL not in readme
    assert colab.publish(url, tmp_path) == []  # nothing left to change


# --- what the setup cell installs ------------------------------------------------------------
def test_only_missing_requirements_are_installed_and_tensorflow_is_pinned():
    versions = {"keras": "3.8.0", "numpy": "2.0.2", "scipy": "1.10.0", "tensorflow": "2.19.0",
                "protobuf": "5.29.3"}
    requirements = ["keras>=3.3", "numpy", "scipy>=1.11", "papermill>=2.5",
                    'tensorflow-cpu>=2.16; extra == "cpu"', 'pytest>=8; extra == "dev"']
    assert colab.missing_requirements(requirements, versions.get) == ["scipy>=1.11", "papermill>=2.5"]
    assert colab.pinned_constraints(versions.get) == [
        "tensorflow==2.19.0", "keras==3.8.0", "numpy==2.0.2", "protobuf==5.29.3"]


def test_install_requirements_asks_pip_for_what_is_missing_with_the_pins(monkeypatch, capsys):
    calls = []

    def fake_pip(command, **kwargs):
        calls.append((command, Path(command[command.index("-c") + 1]).read_text().split()))
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(colab.importlib.metadata, "requires", lambda name: ["keras>=3.3", "no-such-pkg"])
    monkeypatch.setattr(colab, "installed_version",
                        {"keras": "3.8.0", "tensorflow": "2.19.0"}.get)
    assert colab.install_requirements(run=fake_pip) == ["no-such-pkg"]
    (command, pins), = calls
    assert command[:5] == [sys.executable, "-m", "pip", "install", "-q"] and "no-such-pkg" in command
    assert "keras>=3.3" not in command and "--upgrade" not in command
    assert pins == ["tensorflow==2.19.0", "keras==3.8.0"]
    assert "kept as installed: tensorflow==2.19.0, keras==3.8.0" in capsys.readouterr().out
    conflict = subprocess.CompletedProcess([], 1, "", "ResolutionImpossible: numpy>=3")
    with pytest.raises(RuntimeError, match="beside the installed tensorflow==2.19.0.*\n.*numpy>=3"):
        colab.install_requirements(run=lambda command, **kwargs: conflict)


# --- drive_dir --------------------------------------------------------------------------------
@pytest.fixture
def stand_in_colab(tmp_path, monkeypatch):
    """`google.colab` in sys.modules, its drive.mount mapping MyDrive to a temporary folder."""
    drive, mounts = tmp_path / "my_drive", []
    drive.mkdir()

    def mount(mountpoint, force_remount=False, timeout_ms=120000, readonly=False):
        mounts.append(mountpoint)
        Path(mountpoint).mkdir(parents=True, exist_ok=True)
        (Path(mountpoint) / "MyDrive").symlink_to(drive, target_is_directory=True)

    module = types.ModuleType("google.colab")
    module.drive = types.SimpleNamespace(mount=mount)
    monkeypatch.setitem(sys.modules, "google.colab", module)
    monkeypatch.setenv("LAB5_COLAB_HOME", str(tmp_path / "content"))
    return drive, mounts


def test_drive_dir_off_keeps_the_repository_defaults(tmp_path, monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    assert colab.storage("demo", None, None, None) == (None, None)
    assert colab.storage("demo", None, None, "auto") == (None, None)  # not on Colab: off
    assert colab.storage("demo", "r", None, "off") == ("r", None)


def test_drive_dir_a_folder_holds_runs_and_figures(tmp_path):
    run_root, figures = colab.storage("quick", None, None, str(tmp_path / "kept"))
    assert (run_root, figures) == (str(tmp_path / "kept/runs/quick"), str(tmp_path / "kept/figures"))
    assert colab.storage("quick", "mine", None, tmp_path / "kept")[0] == "mine"  # given: kept
    from lab5_utils.config import lab_config

    assert lab_config("quick", [], run_root).run_root == run_root
    with pytest.raises(ValueError, match="drive_dir=3 is not valid"):
        colab.drive_root(3)


def test_drive_dir_auto_on_colab_mounts_drive_once(stand_in_colab):
    drive, mounts = stand_in_colab
    run_root, figures = colab.storage("demo", None, None, "auto")
    assert mounts == [str(colab.colab_home() / "drive")]  # /content/drive on Colab
    assert Path(run_root).resolve() == drive / "lab5" / "runs" / "demo"
    assert Path(figures).resolve() == drive / "lab5" / "figures"
    assert colab.drive_root("auto") == colab.colab_home() / "drive" / "MyDrive" / "lab5"
    assert len(mounts) == 1  # mounted already: not again
    assert colab.storage("demo", "a", "b", "auto") == ("a", "b")


def test_a_drive_folder_below_the_mount_point_mounts_first(stand_in_colab):
    drive, mounts = stand_in_colab
    root = colab.drive_root(str(colab.colab_home() / "drive" / "MyDrive" / "elsewhere"))
    assert len(mounts) == 1 and root.resolve() == drive / "elsewhere" and root.is_dir()


# --- a notebook opened alone on a stand-in Colab, killed, reset, run again ---------------------
SETTINGS = ["image_size=32", "batch_size=16", "transfer_epochs=6", "num_classes=3",
            "synthetic_train_per_class=32", "synthetic_val_per_class=8", "synthetic_test_per_class=4",
            "calibration_images=16"]
EPOCHS = 6

STAND_IN_DRIVE = '''\
"""Stand-in for google.colab.drive: mount() maps <mountpoint>/MyDrive to $LAB5_TEST_DRIVE."""
import os
from pathlib import Path


def mount(mountpoint, force_remount=False, timeout_ms=120000, readonly=False):
    Path(mountpoint).mkdir(parents=True, exist_ok=True)
    if not (Path(mountpoint) / "MyDrive").exists():
        (Path(mountpoint) / "MyDrive").symlink_to(os.environ["LAB5_TEST_DRIVE"])
    print("Mounted at", mountpoint)
'''


def _colab_environment(tmp: Path) -> dict:
    """A Python with TensorFlow and the dependencies but without lab5_utils (a venv whose .pth
    adds a copy of this venv's site-packages made of symlinks, lab5_utils' entries left out), a
    stand-in google.colab imported at kernel start, and a kernelspec for it."""
    env_dir, overlay = tmp / "env", tmp / "site-packages"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    python = env_dir / "bin" / "python"
    overlay.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.startswith(("lab5_utils", "__editable__", "lab5-utils")):
            (overlay / entry.name).symlink_to(entry)
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    purelib = subprocess.run([str(python), "-c", code], capture_output=True, text=True,
                             check=True).stdout.strip()
    Path(purelib, "lab5-test-dependencies.pth").write_text(f"{overlay}\n")
    fake = tmp / "stand_in" / "google" / "colab"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("from . import drive  # noqa\n")
    (fake / "drive.py").write_text(STAND_IN_DRIVE)
    spec = tmp / "jupyter" / "kernels" / "colab-stand-in"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}",
                 "--IPKernelApp.exec_lines=['import google.colab']"],
        "display_name": "stand-in Colab", "language": "python",
        "env": {"PYTHONPATH": str(tmp / "stand_in"), "LAB5_COLAB_HOME": str(tmp / "content"),
                "LAB5_REPO_URL": str(ROOT), "LAB5_TEST_DRIVE": str(tmp / "drive"),
                "PIP_NO_INDEX": "1", "PIP_NO_BUILD_ISOLATION": "0",  # offline: no downloads
                "PIP_DISABLE_PIP_VERSION_CHECK": "1", "TF_CPP_MIN_LOG_LEVEL": "2",
                "MPLBACKEND": "Agg"}}))
    (tmp / "drive").mkdir()
    return {"python": python, "purelib": Path(purelib), "jupyter": tmp / "jupyter"}


def _can_import(python: Path, module: str) -> bool:
    code = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
    return subprocess.run([str(python), "-c", code], env={"PATH": os.environ["PATH"]},
                          cwd=python.parents[2]).returncode == 0  # not from the checkout


def _run_notebook(tmp: Path, env: dict, kill_when=None, timeout: float = 420,
                  notebook: Path = ROOT / "notebooks" / "02_transfer_learning.ipynb"):
    """Papermill in a child process on `notebook` copied alone into the Colab folder (made when
    missing); SIGKILL it and its kernel once `kill_when()` is true. Returns (exit code, output)."""
    import psutil

    home = tmp / "content"
    home.mkdir(exist_ok=True)
    shutil.copy(notebook, home)
    parameters = json.dumps({"settings": SETTINGS})  # drive_dir stays "auto", run_root None
    command = [sys.executable, "-m", "papermill", str(home / notebook.name),
               str(tmp / "executed.ipynb"), "-k", "colab-stand-in", "--cwd", str(home),
               "-y", parameters, "--no-progress-bar"]
    process = subprocess.Popen(command, env={**os.environ, "JUPYTER_PATH": str(env["jupyter"])},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    deadline, killed = time.time() + timeout, False
    try:
        while process.poll() is None and time.time() < deadline:
            if kill_when is not None and kill_when():
                for child in [*psutil.Process(process.pid).children(recursive=True), process]:
                    child.send_signal(signal.SIGKILL)  # the kernel, then papermill
                killed = True
                break
            time.sleep(0.05)
    finally:
        if process.poll() is None:  # a timeout, or the kill: end what this test started
            for child in psutil.Process(process.pid).children(recursive=True):
                child.kill()
            os.killpg(process.pid, signal.SIGKILL)
        output = process.communicate()[0]
    assert killed or process.returncode is not None and time.time() < deadline, output[-3000:]
    return process.returncode, output


@pytest.mark.slow
def test_a_notebook_opened_alone_on_colab_installs_itself_and_survives_a_runtime_reset(tmp_path):
    """Slow: a stand-in Colab (a second Python, a Jupyter kernel, the repository cloned and
    installed) runs notebook 02 three times, killed once mid-training."""
    if not (ROOT / ".git").exists():
        pytest.skip("needs the project as a git checkout (the notebook clones it)")
    env = _colab_environment(tmp_path)
    assert not _can_import(env["python"], "lab5_utils") and _can_import(env["python"], "tensorflow")
    run = tmp_path / "drive" / "lab5" / "runs" / "demo" / "transfer"

    def one_epoch_logged() -> bool:  # in history.csv and in BackupAndRestore's backup
        history = run / "history.csv"
        return (history.is_file() and len(history.read_text().strip().splitlines()) >= 2
                and (run / "backup" / "training_metadata.json").is_file())

    code, output = _run_notebook(tmp_path, env, kill_when=one_epoch_logged)
    assert code == -signal.SIGKILL, output[-3000:]
    assert (tmp_path / "content" / "lab5" / ".git").is_dir()  # the clone, in the Colab folder
    assert sorted(p.name for p in env["purelib"].iterdir() if "tensorflow" in p.name or
                  p.name.startswith(("keras", "numpy"))) == []  # TensorFlow & co. left alone
    assert not (run / "metrics.json").exists() and len(pd.read_csv(run / "history.csv")) < EPOCHS

    # The next notebook in the same runtime, with the setup cell run twice, reuses the clone.
    clone = tmp_path / "content" / "lab5"
    before = clone.stat().st_mtime_ns
    setup = nbformat.read(ROOT / "notebooks" / "01_data_exploration.ipynb", as_version=4).cells[1].source
    check = nbformat.v4.new_code_cell("import lab5_utils\nprint('package:', lab5_utils.__file__)")
    parameters = nbformat.v4.new_code_cell("settings = []", metadata={"tags": ["parameters"]})
    twice = [nbformat.v4.new_code_cell(setup) for _ in range(2)]
    nb = nbformat.v4.new_notebook(cells=[*twice, parameters, check], metadata={
        "kernelspec": {"name": "colab-stand-in", "display_name": "stand-in", "language": "python"}})
    nbformat.write(nb, tmp_path / "next.ipynb")
    code, output = _run_notebook(tmp_path, env, notebook=tmp_path / "next.ipynb", timeout=120)
    assert code == 0, output[-3000:]
    executed = (tmp_path / "executed.ipynb").read_text()
    assert f"package: {clone / 'lab5_utils' / '__init__.py'}" in executed
    assert clone.stat().st_mtime_ns == before

    # The runtime is recycled: the package and the working folder are gone, Drive is not.
    subprocess.run([str(env["python"]), "-m", "pip", "uninstall", "-y", "-q", "lab5-utils"],
                   check=True, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
                   cwd=tmp_path)
    assert not _can_import(env["python"], "lab5_utils")
    shutil.rmtree(tmp_path / "content")

    code, output = _run_notebook(tmp_path, env)
    assert code == 0, output[-3000:]
    executed = (tmp_path / "executed.ipynb").read_text()
    assert "[lab5] resuming after epoch" in executed and "Mounted at" in executed
    assert list(pd.read_csv(run / "history.csv")["epoch"]) == list(range(EPOCHS))  # each once
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == EPOCHS and not (run / "backup").exists()
    assert (tmp_path / "drive" / "lab5" / "figures" / "history_transfer.png").is_file()
