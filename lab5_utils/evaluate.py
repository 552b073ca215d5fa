"""Evaluation: predictions, top-k / per-class accuracy, confusions, and resource usage of runs."""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

RESOURCE_COLUMNS = [
    "run", "stage", "learning_rate", "trainable_params",
    "seconds_per_epoch", "peak_memory_mb", "memory_kind",
]  # fmt: skip


@dataclass
class Predictions:
    """Labels and softmax outputs of one pass over a dataset, plus the first few images."""

    y_true: np.ndarray  # int [N]
    probs: np.ndarray  # float32 [N, C]
    images: np.ndarray  # uint8 [k, H, W, 3]

    @property
    def y_pred(self) -> np.ndarray:
        return self.probs.argmax(axis=1)


@dataclass
class Evaluation:
    """Summary metrics of predictions against the true labels."""

    top1: float
    top5: float  # top-k accuracy with k = min(5, C)
    per_class: pd.DataFrame  # class, accuracy, support, correct
    confusion: np.ndarray  # [C, C], rows = true class, row-normalized
    confused_pairs: pd.DataFrame  # true, predicted, count, share_of_true
    num_examples: int


def collect_predictions(
    model: Any, dataset: Iterable, keep_images: int = 16, max_batches: int | None = None
) -> Predictions:
    """Run `model` over `(images, labels)` batches in order; keep the first `keep_images` images."""
    import tensorflow as tf

    labels, probs, images = [], [], []
    kept, forward = 0, None
    for i, batch in enumerate(dataset):
        if max_batches is not None and i >= max_batches:
            break
        x, y = batch[0], batch[1]
        if forward is None:  # traced once for any batch size: predict_on_batch traces again
            spec = tf.TensorSpec([None, *x.shape[1:]], tf.as_dtype(x.dtype))  # for a short last
            forward = tf.function(lambda t: model(t, training=False), input_signature=[spec])
        probs.append(np.asarray(forward(x), dtype=np.float32))  # batch (2.3 s in the demo)
        labels.append(np.asarray(y).reshape(-1).astype(np.int64))
        if kept < keep_images:
            chunk = np.asarray(x)[: keep_images - kept]
            images.append(np.clip(np.rint(chunk), 0, 255).astype(np.uint8))
            kept += len(chunk)
    if not probs:
        return Predictions(
            np.zeros(0, np.int64), np.zeros((0, 0), np.float32), np.zeros((0, 0, 0, 3), np.uint8)
        )
    imgs = np.concatenate(images) if images else np.zeros((0, *np.shape(x)[1:]), np.uint8)
    return Predictions(np.concatenate(labels), np.concatenate(probs), imgs)


def _validate(y_true: np.ndarray, probs: np.ndarray, class_names: list[str]) -> None:
    if probs.ndim != 2 or probs.shape[1] == 0:
        raise ValueError(f"probs: expected shape [N, C] with C >= 1, got {probs.shape}")
    if y_true.ndim != 1 or len(y_true) != len(probs):
        raise ValueError(f"y_true: expected shape [{len(probs)}] like probs, got {y_true.shape}")
    if len(y_true) == 0:
        raise ValueError("y_true: expected at least one example, got none")
    num_classes = probs.shape[1]
    valid = np.issubdtype(y_true.dtype, np.integer) and 0 <= y_true.min() <= y_true.max()
    if not valid or y_true.max() >= num_classes:
        raise ValueError(f"y_true: expected integer labels in 0..{num_classes - 1}")
    if len(class_names) != num_classes:
        raise ValueError(
            f"class_names: expected {num_classes} names (one per column of probs), "
            f"got {len(class_names)}"
        )


def evaluate_predictions(
    y_true: np.ndarray, probs: np.ndarray, class_names: list[str], top_pairs: int = 10
) -> Evaluation:
    """Top-1/top-k accuracy, per-class accuracy, normalized confusion and most confused pairs.

    Top-k counts ties generously (like `tf.math.in_top_k`): the true class is in the top k
    when fewer than k classes have a strictly higher probability.
    """
    y_true, probs, names = np.asarray(y_true), np.asarray(probs), [str(c) for c in class_names]
    _validate(y_true, probs, names)
    n, c = probs.shape
    y_pred = probs.argmax(axis=1)
    k = min(5, c)
    true_prob = probs[np.arange(n), y_true]
    in_top_k = (probs > true_prob[:, None]).sum(axis=1) < k

    counts = np.bincount(y_true * c + y_pred, minlength=c * c).reshape(c, c)
    support = counts.sum(axis=1)
    correct = np.diag(counts).copy()
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.where(support > 0, correct / support, np.nan)
        confusion = np.where(support[:, None] > 0, counts / support[:, None], 0.0)
    per_class = pd.DataFrame(
        {"class": names, "accuracy": accuracy, "support": support, "correct": correct}
    )

    off = counts.copy()
    np.fill_diagonal(off, 0)
    rows, cols = np.nonzero(off)
    pairs = pd.DataFrame(
        {
            "true": [names[i] for i in rows],
            "predicted": [names[j] for j in cols],
            "count": off[rows, cols].astype(np.int64),
            "share_of_true": off[rows, cols] / support[rows],
        }
    )
    pairs = pairs.sort_values(["count", "true", "predicted"], ascending=[False, True, True])
    return Evaluation(
        top1=float((y_pred == y_true).mean()),
        top5=float(in_top_k.mean()),
        per_class=per_class,
        confusion=confusion,
        confused_pairs=pairs.head(top_pairs).reset_index(drop=True),
        num_examples=int(n),
    )


def evaluate_model(
    model: Any, dataset: Iterable, class_names: list[str], max_batches: int | None = None
) -> tuple[Evaluation, Predictions]:
    """`collect_predictions` then `evaluate_predictions`."""
    preds = collect_predictions(model, dataset, max_batches=max_batches)
    return evaluate_predictions(preds.y_true, preds.probs, class_names), preds


def best_and_worst(per_class: pd.DataFrame, n: int = 10) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The `n` best and `n` worst classes by accuracy (NaN ignored, ties by class name)."""
    valid = per_class.dropna(subset=["accuracy"])
    best = valid.sort_values(["accuracy", "class"], ascending=[False, True]).head(n)
    worst = valid.sort_values(["accuracy", "class"], ascending=[True, True]).head(n)
    return best.reset_index(drop=True), worst.reset_index(drop=True)


def resource_table(run_dirs: str | Path | Iterable[str | Path]) -> pd.DataFrame:
    """One row per run folder with a `metrics.json`; missing keys become NaN.

    A single path is taken as one run if it has a `metrics.json`, else as a folder of runs.
    """
    if isinstance(run_dirs, (str, Path)):
        root = Path(run_dirs)
        run_dirs = [root] if (root / "metrics.json").is_file() else sorted(root.glob("*"))
    rows = []
    for run in map(Path, run_dirs):
        path = run / "metrics.json"
        if not path.is_file():
            continue
        try:
            metrics = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            warnings.warn(f"skipping {path}: {err}", stacklevel=2)
            continue
        rows.append({"run": run.name, **{k: metrics.get(k, np.nan) for k in RESOURCE_COLUMNS[1:]}})
    return pd.DataFrame(rows, columns=RESOURCE_COLUMNS)


def memory_increase(table: pd.DataFrame) -> float | None:
    """Percent increase of mean finetune peak memory over mean transfer peak memory.

    None when either stage has no measurement, the transfer peak is not positive, or the
    two stages were measured differently (e.g. "rss" vs "gpu").
    """
    if table.empty or not {"stage", "peak_memory_mb", "memory_kind"} <= set(table.columns):
        return None
    mem = pd.to_numeric(table["peak_memory_mb"], errors="coerce")
    valid = table[mem.notna()].assign(peak_memory_mb=mem[mem.notna()])
    transfer = valid[valid["stage"] == "transfer"]
    finetune = valid[valid["stage"] == "finetune"]
    if transfer.empty or finetune.empty:
        return None
    if pd.concat([transfer, finetune])["memory_kind"].dropna().nunique() > 1:
        return None
    base = transfer["peak_memory_mb"].mean()
    if base <= 0:
        return None
    return float((finetune["peak_memory_mb"].mean() - base) / base * 100.0)


def peak_memory_mb() -> tuple[float | None, str]:
    """Peak memory of this process: GPU:0 peak if there is a GPU, else peak RSS."""
    try:
        import tensorflow as tf

        if tf.config.list_physical_devices("GPU"):
            return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20, "gpu"
    except Exception:  # no TensorFlow, or memory info not supported on this device
        pass
    try:
        import resource

        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        # Linux reports kilobytes, macOS bytes.
        return maxrss / (2**20 if sys.platform == "darwin" else 2**10), "rss"
    except Exception:
        return None, "unavailable"

