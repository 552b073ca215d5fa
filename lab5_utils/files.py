"""Paths (the checkout; a folder in Food-101's official layout) and atomic writes: a kill never
leaves a half-written file that describes a run."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def project_root() -> Path:
    """The checkout holding `lab5_utils/` and `notebooks/` (editable install), else the cwd."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / "notebooks").is_dir() else Path.cwd()


def official_root(path: str | Path) -> Path | None:
    """`path`, `path/food-101` or, for its `images/` folder, `path/..` when it is in the
    official layout (a `meta/` folder with `classes.txt`, or `meta/` beside `images/`), else
    None. Read as plain class folders, `images/` would mix the official test images into
    training."""
    path = Path(path).expanduser()
    for candidate in (path, path / "food-101", *([path.parent] if path.name == "images" else [])):
        meta = candidate / "meta"
        if (meta / "classes.txt").is_file() or (meta.is_dir() and (candidate / "images").is_dir()):
            return candidate
    return None


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block succeeds, flush it to disk and
    rename it over `path` (with the usual permissions); when it fails, remove it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """An exclusive lock between processes (POSIX `flock` on `path`) for the block."""
    import fcntl

    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def remove_partial_files(folder: str | Path) -> list[Path]:
    """Delete the temporary files a killed `atomic_path` left in `folder` and below it
    (`.<name>.*.tmp`; TensorBoard would read a left-over `.events.out.tfevents...tmp`)."""
    partial = sorted(p for p in Path(folder).rglob(".*.tmp") if p.is_file())
    for path in partial:
        path.unlink(missing_ok=True)
    return partial


def atomic_write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def atomic_write_json(path: str | Path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
