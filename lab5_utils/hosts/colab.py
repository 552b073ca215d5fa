"""Colab: the repository's URL (kept here, once), the notebooks' setup cell made from it, the
requirements the setup cell installs without replacing Colab's TensorFlow, and Google Drive as
the home of runs and figures (`drive_dir`).

Only the standard library is imported at module level: the setup cell imports this module right
after `pip install --no-deps`, before any requirement is known to be there.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from lab5_utils.files import project_root
from lab5_utils.hosts import kaggle

# The one place the project's address is kept. Whoever publishes the repository changes it with
# `python -m lab5_utils.hosts.colab --publish https://github.com/OWNER/REPO`, which also rewrites the
# notebooks' setup cells and the README's "Open in Colab" links (a test checks they agree).
REPO_URL = "https://github.com/YOUR-ACCOUNT/lab5"
BRANCH = "main"
NOTEBOOKS = ("01_data_exploration", "02_transfer_learning", "03_fine_tuning", "04_analysis")
CLONE_NAME = "lab5"  # the clone's folder in the Colab working folder: /content/lab5
DRIVE_FOLDER = "lab5"  # drive_dir="auto": MyDrive/lab5/
# What the setup cell leaves exactly as Colab installed it: TensorFlow and what it is built with.
PINNED = ("tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tf-nightly", "tf-keras", "keras",
          "numpy", "protobuf", "ml-dtypes", "h5py", "tensorboard", "jax", "jaxlib")

_SETUP_CELL = '''\
# Setup. On Colab or Kaggle, a notebook opened alone clones the repository ($LAB5_REPO_URL, else the URL
# below) into /content/lab5 or /kaggle/working/lab5 and installs it, keeping TensorFlow. Else: nothing.
import importlib.util, os, subprocess, sys

def _run(*command):  # Colab does not show a child process's output: a failure raises with it
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\\n{done.stdout}{done.stderr}")

kaggle = os.environ.get("KAGGLE_KERNEL_RUN_TYPE") and os.environ.get("LAB5_KAGGLE_ROOT", "/kaggle")
home = f"{kaggle}/working" if kaggle else os.environ.get("LAB5_COLAB_HOME", "/content")
if ("google.colab" in sys.modules or kaggle) and importlib.util.find_spec("lab5_utils") is None:
    clone = os.path.join(home, "lab5")
    if not os.path.isdir(os.path.join(clone, "lab5_utils")):
        _run("git", "clone", "-q", os.environ.get("LAB5_REPO_URL", "{url}"), clone)
    _run(sys.executable, "-m", "pip", "install", "-q", "--no-deps", "-e", clone)
    sys.path.insert(0, clone)
    importlib.invalidate_caches()
    from lab5_utils.hosts.colab import install_requirements
    install_requirements()  # only what is missing; TensorFlow, Keras and NumPy stay as they are'''


# --- the repository's address ---------------------------------------------------------------
def setup_cell(url: str = REPO_URL) -> str:
    """The first code cell of every notebook (identical in all four)."""
    return _SETUP_CELL.replace("{url}", url)


def repo_url() -> str:
    """`LAB5_REPO_URL` when set (a fork, a local clone), else the project's `REPO_URL`."""
    return os.environ.get("LAB5_REPO_URL") or REPO_URL


def github_path(url: str = REPO_URL) -> str:
    """`OWNER/REPO` of a GitHub URL."""
    match = re.fullmatch(r"https://github\.com/([^/\s]+)/([^/\s]+?)(?:\.git)?/?", url)
    if not match:
        raise ValueError(f"repository URL {url!r} is not valid: expected "
                         "https://github.com/OWNER/REPO.")
    return f"{match.group(1)}/{match.group(2)}"


def colab_link(notebook: str, url: str = REPO_URL) -> str:
    """The "Open in Colab" address of `notebooks/<notebook>.ipynb` on the `BRANCH` branch."""
    return (f"https://colab.research.google.com/github/{github_path(url)}/blob/{BRANCH}/"
            f"notebooks/{notebook}.ipynb")


def readme_links(url: str = REPO_URL) -> str:
    """The README's table of "Open in Colab" links, one row per notebook."""
    rows = ["| notebook | open |", "| --- | --- |"]
    for name in NOTEBOOKS:
        rows.append(f"| `{name}` | [![Open In Colab](https://colab.research.google.com/assets/"
                    f"colab-badge.svg)]({colab_link(name, url)}) |")
    return "\n".join(rows)


_LINKS = re.compile(r"(<!-- colab-links -->\n).*?(\n<!-- /colab-links -->)", re.S)


def publish(url: str, root: str | Path | None = None) -> list[Path]:
    """Set the repository's URL everywhere it is used: `REPO_URL` in this module, the setup
    cell of the four notebooks and the README's links. Returns the files changed."""
    import nbformat

    github_path(url)  # validates
    root = Path(root) if root else project_root()
    module = root / "lab5_utils" / "hosts" / "colab.py"
    text = module.read_text()
    old = re.search(r'^REPO_URL = "([^"]*)"$', text, re.M).group(1)
    changed = []
    if old != url:
        module.write_text(text.replace(f'REPO_URL = "{old}"', f'REPO_URL = "{url}"', 1))
        changed.append(module)
    for name in NOTEBOOKS:
        path = root / "notebooks" / f"{name}.ipynb"
        nb = nbformat.read(path, as_version=4)
        if nb.cells[1].source != setup_cell(url):
            nb.cells[1].source = setup_cell(url)
            nbformat.write(nb, path)
            changed.append(path)
    readme = root / "README.md"
    text = readme.read_text()
    new = _LINKS.sub(lambda m: m.group(1) + readme_links(url) + m.group(2), text)
    if new != text:
        readme.write_text(new)
        changed.append(readme)
    return changed


# --- what the setup cell installs -----------------------------------------------------------
def missing_requirements(requirements: Iterable[str],
                         installed: Callable[[str], str | None]) -> list[str]:
    """The requirements (PEP 508 strings, extras left out) that `installed(name) -> version or
    None` does not satisfy."""
    from packaging.requirements import Requirement  # packaging comes with pip and setuptools

    missing = []
    for text in requirements:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue  # an extra ([cpu], [gpu], [dev]) or another platform's requirement
        version = installed(req.name)
        if version is None or not req.specifier.contains(version, prereleases=True):
            missing.append(str(req))
    return missing


def pinned_constraints(installed: Callable[[str], str | None]) -> list[str]:
    """`name==version` of every `PINNED` distribution that is installed: pip may add what is
    missing but must not replace these (it stops with a conflict instead)."""
    return [f"{name}=={version}" for name in PINNED if (version := installed(name)) is not None]


def installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def install_requirements(distribution: str = "lab5-utils",
                         run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> list[str]:
    """Install the requirements of `distribution` that are missing, with the installed
    TensorFlow, Keras, NumPy, ... pinned by a constraints file. pyproject.toml lists TensorFlow
    only as an extra, so it is never asked for; the pins keep a requirement of a requirement
    from upgrading what TensorFlow was built against. Returns what was installed."""
    missing = missing_requirements(importlib.metadata.requires(distribution) or [],
                                   installed_version)
    if not missing:
        print("[lab5] every requirement of lab5_utils is already installed", flush=True)
        return []
    pins = pinned_constraints(installed_version)
    print(f"[lab5] installing {', '.join(missing)}; kept as installed: {', '.join(pins) or '-'}",
          flush=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", prefix="lab5-constraints-") as file:
        file.write("\n".join(pins) + "\n")
        file.flush()
        done = run([sys.executable, "-m", "pip", "install", "-q", *missing, "-c", file.name],
                   capture_output=True, text=True)
    if done.returncode:  # e.g. a requirement that would need another TensorFlow or NumPy
        raise RuntimeError(f"pip could not install {', '.join(missing)} beside the installed "
                           f"{', '.join(pins)}:\n{done.stdout}{done.stderr}")
    importlib.invalidate_caches()
    return missing


# --- Colab and Google Drive -------------------------------------------------------------------
def on_colab() -> bool:
    """Running in a Colab kernel (Colab imports `google.colab` when the kernel starts)."""
    return "google.colab" in sys.modules


def colab_home() -> Path:
    """Colab's working folder: `/content`, or `LAB5_COLAB_HOME` (tests)."""
    return Path(os.environ.get("LAB5_COLAB_HOME", "/content"))


def mount_drive() -> Path:
    """Mount Google Drive at `<colab home>/drive` (Colab asks for authorization the first time
    in a runtime) unless it is mounted already; return its `MyDrive` folder."""
    mountpoint = colab_home() / "drive"
    my_drive = mountpoint / "MyDrive"
    if not my_drive.is_dir():
        from google.colab import drive

        drive.mount(str(mountpoint))
    if not my_drive.is_dir():
        raise RuntimeError(f"Google Drive was mounted at {mountpoint} but {my_drive} is not "
                           "there. Re-run the cell; if it persists, set drive_dir = None (no "
                           "Drive) or to another folder.")
    return my_drive


def drive_root(drive_dir: str | Path | None = "auto") -> Path | None:
    """The folder that keeps runs and figures: None (off); "auto" (on Colab, Google Drive's
    `MyDrive/lab5/`, mounting Drive; on Kaggle, `/kaggle/working/lab5/`; elsewhere off) or a
    folder (made absolute from the repository root; a folder below Colab's Drive mount point
    mounts Drive first)."""
    if drive_dir is None or str(drive_dir).strip().lower() in ("", "none", "off"):
        return None
    if not isinstance(drive_dir, (str, Path)):
        raise ValueError(f"drive_dir={drive_dir!r} is not valid: expected None (off), \"auto\" "
                         "or a folder path.")
    if str(drive_dir).strip().lower() == "auto":
        if kaggle.on_kaggle():
            root = kaggle.working_dir() / DRIVE_FOLDER
        elif not on_colab():
            return None
        else:
            root = mount_drive() / DRIVE_FOLDER
    else:
        root = Path(drive_dir).expanduser()
        root = root if root.is_absolute() else project_root() / root
        if on_colab() and root.is_relative_to(colab_home() / "drive"):
            mount_drive()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"drive_dir={str(drive_dir)!r}: {root} cannot be created "
                         f"({err.strerror or err}).") from None
    return root


def storage(preset: str, run_root: str | None = None, figures_dir: str | None = None,
            drive_dir: str | Path | None = "auto", data_dir: str | None = None
            ) -> tuple[str | None, str | None]:
    """A notebook's `(run_root, figures_dir)`: those given are kept; with `drive_dir` on, the
    others become `<drive>/runs/<preset>` and `<drive>/figures`; otherwise they stay None (the
    repository's `runs/<preset>/` and `figures/`). `data_dir` sets where tensorflow-datasets
    keeps Food-101 (`TFDS_DATA_DIR`)."""
    if data_dir:
        _set_tfds_dir(Path(data_dir).expanduser())
    if run_root is not None and figures_dir is not None:
        return run_root, figures_dir  # nothing to choose: Drive is not mounted for nothing
    root = drive_root(drive_dir)
    if root is None:
        return run_root, figures_dir
    run_root = run_root or str(root / "runs" / preset)
    figures_dir = figures_dir or str(root / "figures")
    print(f"[lab5] kept on {root}: runs in {run_root}, figures in {figures_dir}", flush=True)
    return run_root, figures_dir


def _set_tfds_dir(folder: Path) -> None:
    loaded = sys.modules.get("tensorflow_datasets")
    if loaded is not None and Path(loaded.core.constants.DATA_DIR) != folder:
        raise RuntimeError(f"data_dir={str(folder)!r} comes too late: tensorflow_datasets is "
                           f"already loaded with {loaded.core.constants.DATA_DIR}. Restart the "
                           "kernel (Runtime > Restart session) and run all cells again.")
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["TFDS_DATA_DIR"] = str(folder)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m lab5_utils.hosts.colab", description=__doc__)
    parser.add_argument("--publish", metavar="URL",
                        help="set the repository URL (https://github.com/OWNER/REPO) in this "
                             "module, the notebooks' setup cells and the README's Colab links")
    args = parser.parse_args(argv)
    if args.publish:
        changed = publish(args.publish)
        print(json.dumps([str(p) for p in changed], indent=1))
    else:
        print(f"repository: {REPO_URL}\n{readme_links()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
