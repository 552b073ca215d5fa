"""Kaggle as a home: a notebook there (found by Kaggle's `KAGGLE_KERNEL_RUN_TYPE`) reads Food-101
from a dataset attached under `/kaggle/input` in the official layout instead of downloading it,
and keeps runs and figures in `/kaggle/working`, the folder Kaggle saves with the notebook.

Only the standard library (and `files`, which has no TensorFlow) is imported: `config`
asks this module where Food-101 is. `LAB5_KAGGLE_ROOT` stands for `/kaggle` in tests.
"""

from __future__ import annotations

import os
from pathlib import Path

from lab5_utils.files import official_root

RUN_TYPE_ENV = "KAGGLE_KERNEL_RUN_TYPE"  # "Interactive" or "Batch" in Kaggle's kernels
SEARCH_DEPTH = 4  # /kaggle/input/<dataset>/<folder>/food-101/: how deep a copy is looked for


def on_kaggle() -> bool:
    """Running in a Kaggle notebook (Kaggle sets `KAGGLE_KERNEL_RUN_TYPE` in its kernels)."""
    return bool(os.environ.get(RUN_TYPE_ENV))


def kaggle_root() -> Path:
    """`/kaggle`, or `LAB5_KAGGLE_ROOT` (tests)."""
    return Path(os.environ.get("LAB5_KAGGLE_ROOT", "/kaggle"))


def working_dir() -> Path:
    """`/kaggle/working`: kept as the notebook's output when it is saved."""
    return kaggle_root() / "working"


def food101_input() -> Path | None:
    """On Kaggle, the first folder in Food-101's official layout (`images/` and
    `meta/classes.txt`) under `/kaggle/input`, at most `SEARCH_DEPTH` folders down; else None.
    Prints where it was found, since it replaces the download."""
    if not on_kaggle():
        return None
    level = [kaggle_root() / "input"]
    for _ in range(SEARCH_DEPTH + 1):
        below = []
        for folder in level:
            found = official_root(folder)
            if found is not None and (found / "images").is_dir():
                print(f"[lab5] Kaggle: Food-101 found in {found}; reading it instead of "
                      "downloading (dataset=folder:...)", flush=True)
                return found
            try:
                below += sorted(p for p in folder.iterdir() if p.is_dir() and p.name != "images"
                                and not p.name.startswith("."))
            except OSError:
                continue
        level = below
    return None
