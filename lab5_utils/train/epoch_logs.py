"""Training histories: read CSVLogger files and TensorBoard logs, compare runs, trim resumed runs.

Every history is a DataFrame with a 1-based `epoch` column followed by whichever of `COLUMNS`
exist, in that order; accuracies are fractions. TensorFlow is imported only where event files
are read or written, so that working with `history.csv` files stays quick.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from lab5_utils.files import atomic_path, atomic_write_text

COLUMNS = ("loss", "accuracy", "val_loss", "val_accuracy", "top5", "val_top5", "lr")

# Metric names as Keras logs them -> column; when a run has two of them, the first listed wins.
_ALIASES = {
    "loss": "loss",
    "accuracy": "accuracy",
    "categorical_accuracy": "accuracy",
    "sparse_categorical_accuracy": "accuracy",
    "top5": "top5",
    "top5_accuracy": "top5",
    "top_k_categorical_accuracy": "top5",
    "sparse_top_k_categorical_accuracy": "top5",
    "lr": "lr",
    "learning_rate": "lr",
}
_EVENT_FILES = "events.out.tfevents.*"
_SUBDIRS = (("train", ""), ("validation", "val_"))


def load_history(run_dir: str | Path) -> pd.DataFrame:
    """History of a run folder: its `history.csv` (CSVLogger), else its TensorBoard logs."""
    run_dir = Path(run_dir)
    csv_path = run_dir / "history.csv"
    if csv_path.is_file():
        raw = pd.read_csv(csv_path)
        raw["epoch"] = raw["epoch"] + 1
        return _tidy(raw)
    if _tensorboard_root(run_dir) is not None:
        return read_tensorboard(run_dir)
    raise FileNotFoundError(
        f"{run_dir}: no history.csv and no TensorBoard event files "
        "(looked in train/ and validation/, and in tb/train/ and tb/validation/)"
    )


def read_tensorboard(log_dir: str | Path) -> pd.DataFrame:
    """History from the `epoch_*` scalars of a Keras 2 or Keras 3 TensorBoard log folder.

    `log_dir` holds `train/` and/or `validation/` (or a `tb/` folder that does); TensorBoard
    step n is epoch n + 1. Anything that is not an `epoch_*` scalar is ignored.
    """
    root = _tensorboard_root(Path(log_dir))
    if root is None:
        raise FileNotFoundError(
            f"{log_dir}: no TensorBoard event files in train/ or validation/ (nor under tb/)"
        )
    rows: dict[int, dict[str, float]] = {}
    for subdir, prefix in _SUBDIRS:
        for step, values in _read_folder(root / subdir).items():
            rows.setdefault(step + 1, {}).update({prefix + k: v for k, v in values.items()})
    if not rows:
        return _tidy(pd.DataFrame({"epoch": []}))
    return _tidy(pd.DataFrame([{"epoch": epoch, **rows[epoch]} for epoch in sorted(rows)]))


def summarize_runs(paths: Iterable[str | Path]) -> tuple[pd.DataFrame, list[str]]:
    """One row per readable run (val accuracy in percent), and a message per unreadable path."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    found: list[tuple[Path, pd.DataFrame]] = []
    problems: list[str] = []
    for path in map(Path, paths):
        if not path.exists():
            problems.append(f"{path}: does not exist")
            continue
        try:
            history = load_history(path)
        except FileNotFoundError as error:
            problems.append(str(error))
            continue
        except (OSError, ValueError) as error:
            problems.append(f"{path}: cannot read its history ({error})")
            continue
        if history.empty:
            problems.append(f"{path}: its logs hold no epochs")
            continue
        found.append((path, history))

    names = [path.resolve().name or str(path) for path, _ in found]
    rows = []
    for (path, history), name in zip(found, names, strict=True):
        row = {"run": str(path) if names.count(name) > 1 else name, "epochs": len(history)}
        rows.append(row | _best_and_final(history) | _test_result(path))
    columns = ["run", "epochs", "best_val_accuracy", "best_epoch", "final_val_accuracy",
               "test_accuracy", "test_images"]
    table = pd.DataFrame(rows, columns=columns)
    for column in ("best_epoch", "test_images"):
        table[column] = table[column].astype("Int64")
    return table, problems


def write_hparams(tb_dir: str | Path, trial_id: str, hparams: dict[str, Any],
                  metrics: dict[str, float]) -> Path:
    """One session of TensorBoard's HParams dashboard in `tb_dir` (a run's `tb/`): the run's
    hyperparameters and its final `metrics` (scalars at step 0, tags `hparams/<name>`). Replaces
    the session an earlier, killed attempt wrote; Keras' own logs in train/ and validation/ stay."""
    import shutil

    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    tb_dir = Path(tb_dir)
    staging = tb_dir / ".hparams-staging"
    shutil.rmtree(staging, ignore_errors=True)
    for old in tb_dir.glob(_EVENT_FILES):  # only this session's file sits directly in tb/
        old.unlink()
    writer = tf.summary.create_file_writer(str(staging))
    with writer.as_default():
        hp.hparams(hparams, trial_id=trial_id)
        for name, value in metrics.items():
            tf.summary.scalar(f"hparams/{name}", float(value), step=0)
    writer.close()
    (written,) = staging.glob(_EVENT_FILES)
    target = tb_dir / written.name
    os.replace(written, target)  # complete, or not there at all
    staging.rmdir()
    return target


def _test_result(path: Path) -> dict[str, float]:
    """Test accuracy (percent) of the model a finished lab5 run selected, when it has one."""
    metrics = path / "metrics.json"
    try:
        saved = json.loads(metrics.read_text()) if metrics.is_file() else {}
    except (OSError, ValueError):
        saved = {}
    if "test_accuracy" not in saved:
        return {}
    return {"test_accuracy": round(100 * saved["test_accuracy"], 2), "test_images": saved["num_test"]}


def truncate_tensorboard(log_dir: str | Path, keep_epochs: int) -> int:
    """Drop `epoch_*` scalars with step >= keep_epochs from every event file under `log_dir`.

    Everything else is kept byte for byte; a file is rewritten (atomically) only if it changes.
    Returns how many scalars were dropped (Keras writes one per event).
    """
    dropped = 0
    for path in sorted(Path(log_dir).rglob(_EVENT_FILES)):
        kept: list[bytes] = []
        dropped_here = 0
        for record, event in _events(path):
            values = event.summary.value
            late = [v for v in values if event.step >= keep_epochs and _scalar(v) is not None]
            if not late:
                kept.append(record)
                continue
            dropped_here += len(late)
            if len(late) < len(values):
                for value in late:
                    values.remove(value)
                kept.append(event.SerializeToString())
        if dropped_here:
            _write_records(path, kept)
            dropped += dropped_here
    return dropped


def truncate_csv(path: str | Path, keep_epochs: int) -> int:
    """Keep the CSVLogger rows whose 0-based epoch < keep_epochs; returns the rows dropped."""
    path = Path(path)
    if not path.is_file():
        return 0
    with path.open(newline="") as f:
        lines = f.read().splitlines(keepends=True)
    if not lines:
        return 0
    epoch_at = next(csv.reader([lines[0]])).index("epoch")
    kept = [lines[0]] + [line for line in lines[1:] if _csv_epoch(line, epoch_at) < keep_epochs]
    dropped = len(lines) - len(kept)
    if dropped:
        atomic_write_text(path, "".join(kept))
    return dropped


def _tidy(raw: pd.DataFrame) -> pd.DataFrame:
    """Rename Keras metric names to `COLUMNS` and order them.

    Columns with no value are dropped (CSVLogger writes NA in val_* columns when a run has no
    validation); a repeated epoch keeps its last row.
    """
    table = pd.DataFrame({"epoch": raw["epoch"].astype(int)})
    for alias, column in _ALIASES.items():
        for prefix in ("", "val_"):
            name, target = prefix + alias, prefix + column
            if name not in raw or target not in COLUMNS:
                continue
            values = pd.to_numeric(raw[name], errors="coerce").astype(float)
            table[target] = table[target].combine_first(values) if target in table else values
    table = table[["epoch", *(c for c in COLUMNS if c in table and table[c].notna().any())]]
    table = table.drop_duplicates("epoch", keep="last").sort_values("epoch")
    return table.reset_index(drop=True)


def _best_and_final(history: pd.DataFrame) -> dict[str, Any]:
    """Best (and its epoch) and last validation accuracy, in percent with 2 decimals."""
    val = history["val_accuracy"].dropna() if "val_accuracy" in history else pd.Series()
    if val.empty:
        return {
            "best_val_accuracy": float("nan"),
            "best_epoch": pd.NA,
            "final_val_accuracy": float("nan"),
        }
    best_at = val.idxmax()
    return {
        "best_val_accuracy": round(100 * float(val[best_at]), 2),
        "best_epoch": int(history.at[best_at, "epoch"]),
        "final_val_accuracy": round(100 * float(val.iloc[-1]), 2),
    }


def _tensorboard_root(path: Path) -> Path | None:
    """`path` or `path/tb`, whichever holds event files in train/ or validation/."""
    for root in (path, path / "tb"):
        if any(next((root / sub).glob(_EVENT_FILES), None) for sub, _ in _SUBDIRS):
            return root
    return None


def _read_folder(folder: Path) -> dict[int, dict[str, float]]:
    """Epoch scalars of all event files in `folder`, by step, files taken in order of wall time.

    A file whose steps restart at 0 is appended after the earlier steps; a file that starts
    later and overlaps them (a resumed run redoing an epoch) overrides their values.
    """
    files = []
    for path in folder.glob(_EVENT_FILES):
        wall_time, scalars = _read_event_file(path)
        if scalars:
            files.append((wall_time, path.name, scalars))
    merged: dict[int, dict[str, float]] = {}
    for _, _, scalars in sorted(files, key=lambda file: file[:2]):
        offset = max(merged) + 1 if merged and scalars[0][0] == 0 else 0
        for step, name, value in scalars:
            merged.setdefault(step + offset, {})[name] = value
    return merged


def _read_event_file(path: Path) -> tuple[float, list[tuple[int, str, float]]]:
    """Wall time of the first event, and (step, name without `epoch_`, value) per epoch scalar."""
    wall_time = float("inf")
    scalars = []
    for _, event in _events(path):
        if wall_time == float("inf"):
            wall_time = event.wall_time
        for value in event.summary.value:
            number = _scalar(value)
            if number is not None:
                scalars.append((event.step, value.tag.removeprefix("epoch_"), number))
    return wall_time, scalars


def _events(path: Path) -> Iterator[tuple[bytes, Any]]:
    """(raw record, parsed `Event`) pairs; a torn last record (a killed writer) ends the file."""
    import tensorflow as tf
    from tensorflow.core.util import event_pb2

    try:
        for record in tf.data.TFRecordDataset(str(path)):
            raw = record.numpy()
            yield raw, event_pb2.Event.FromString(raw)
    except tf.errors.DataLossError:
        return


def _scalar(value: Any) -> float | None:
    """The number of an `epoch_*` scalar summary value (Keras 2 or 3 form), else None."""
    if not value.tag.startswith("epoch_"):
        return None
    kind = value.WhichOneof("value")
    if kind == "simple_value":
        return float(value.simple_value)
    if kind != "tensor" or value.metadata.plugin_data.plugin_name not in ("", "scalars"):
        return None
    import tensorflow as tf

    array = tf.make_ndarray(value.tensor)
    if array.ndim != 0 or array.dtype.kind not in "fiu":
        return None
    return float(array)


def _write_records(path: Path, records: list[bytes]) -> None:
    """Replace the TFRecord file `path` with `records`, through a temporary file beside it."""
    import tensorflow as tf

    mode = path.stat().st_mode
    with atomic_path(path) as tmp:
        with tf.io.TFRecordWriter(str(tmp)) as writer:
            for record in records:
                writer.write(record)
        os.chmod(tmp, mode)


def _csv_epoch(line: str, epoch_at: int) -> float:
    """The epoch of a CSVLogger row; infinity for a row that cannot be read (a torn last line)."""
    row = next(csv.reader([line]), [])
    try:
        return int(row[epoch_at])
    except (IndexError, ValueError):
        return float("inf")
