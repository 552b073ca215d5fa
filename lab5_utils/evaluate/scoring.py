"""Evaluation: predictions, top-k / per-class accuracy, confusions, the most confidently wrong
images, and the per-image test predictions saved in each run folder."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

PREDICTIONS_FILE = "test_predictions.npz"  # per-image test predictions in each run folder


@dataclass
class Predictions:
    """Labels and softmax outputs of one pass over a dataset, plus the first few images."""

    y_true: np.ndarray  # int [N]
    probs: np.ndarray  # float32 [N, C]
    images: np.ndarray  # uint8 [k, H, W, 3]

    @property
    def y_pred(self) -> np.ndarray:
        return self.probs.argmax(axis=1)

    @property
    def correct(self) -> np.ndarray:
        return self.y_pred == self.y_true


@dataclass
class Evaluation:
    """Summary metrics of predictions against the true labels."""

    top1: float
    top5: float  # top-k accuracy with k = min(5, C)
    per_class: pd.DataFrame  # class, accuracy, support, correct
    confusion: np.ndarray  # [C, C], rows = true class, row-normalized
    confused_pairs: pd.DataFrame  # true, predicted, count, share_of_true
    num_examples: int
    loss: float = float("nan")  # mean sparse cross-entropy


def collect_predictions(
    model: Any, dataset: Iterable, keep_images: int = 16, max_batches: int | None = None
) -> Predictions:
    """Run `model` over `(images, labels)` batches in order; keep the first `keep_images` images.
    Under a `tf.distribute` strategy (training's scope) each batch is split over its replicas."""
    from lab5_utils.model.distribute import predict_batches

    labels, probs, images = [], [], []
    kept, x = 0, None
    for x, y, p in itertools.islice(predict_batches(model, dataset), max_batches):
        probs.append(p)
        labels.append(y.reshape(-1).astype(np.int64))
        if kept < keep_images:
            chunk = x[: keep_images - kept]
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
        loss=float(-np.log(np.clip(true_prob.astype(np.float64), 1e-7, 1.0)).mean()),
    )


def evaluate_model(
    model: Any, dataset: Iterable, class_names: list[str], max_batches: int | None = None
) -> tuple[Evaluation, Predictions]:
    """`collect_predictions` then `evaluate_predictions`."""
    preds = collect_predictions(model, dataset, max_batches=max_batches)
    return evaluate_predictions(preds.y_true, preds.probs, class_names), preds


def top_losses(y_true: np.ndarray, probs: np.ndarray, n: int = 9) -> pd.DataFrame:
    """The `n` most confidently wrong images: misclassified ones by the probability of their
    (wrong) predicted class, highest first (ties: lower index first). Columns: index, true,
    predicted, probability (of the prediction), true_probability."""
    y_true, probs = np.asarray(y_true), np.asarray(probs, np.float64)
    y_pred = probs.argmax(axis=1)
    confidence = probs[np.arange(len(probs)), y_pred]
    wrong = np.flatnonzero(y_pred != y_true)
    order = wrong[np.lexsort((wrong, -confidence[wrong]))][:n]
    return pd.DataFrame({"index": order, "true": y_true[order], "predicted": y_pred[order],
                         "probability": confidence[order],
                         "true_probability": probs[order, y_true[order]]})


def save_predictions(path: str | Path, predictions: Predictions) -> Path:
    """Per-image labels and probabilities (about 10 MB for Food-101's 25,250 x 101), atomically."""
    from lab5_utils.files import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, y_true=predictions.y_true.astype(np.int32),
                                probs=predictions.probs.astype(np.float32))
    return Path(path)


def load_predictions(run_dir: str | Path) -> Predictions:
    """The test predictions a finished run saved (no images)."""
    path = Path(run_dir) / PREDICTIONS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: the run has no saved test predictions "
                                "(it was trained by an older lab5, or is not finished).")
    with np.load(path) as saved:
        probs = saved["probs"].astype(np.float32)
        return Predictions(saved["y_true"].astype(np.int64), probs, np.zeros((0, 0, 0, 3), np.uint8))


def best_and_worst(per_class: pd.DataFrame, n: int = 10) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The `n` best and `n` worst classes by accuracy (NaN ignored, ties by class name)."""
    valid = per_class.dropna(subset=["accuracy"])
    best = valid.sort_values(["accuracy", "class"], ascending=[False, True]).head(n)
    worst = valid.sort_values(["accuracy", "class"], ascending=[True, True]).head(n)
    return best.reset_index(drop=True), worst.reset_index(drop=True)


