"""Analysis of a finished sweep: tables and generated text.

Reads the runs' `metrics.json` and `history.csv`; TensorFlow is imported only by the functions
that load models, so the texts and tables are tested without it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lab5_utils import stats
from lab5_utils.config import LabConfig, lr_label
from lab5_utils.files import read_json

RESULT_COLUMNS = [
    "run", "learning rate", "status", "best epoch", "val accuracy (%)", "val low (%)",
    "val high (%)", "test accuracy (%)", "test low (%)", "test high (%)",
    "test change vs transfer (points)", "McNemar p", "vs transfer", "val images", "test images",
    "trainable params", "seconds / epoch", "error",
]  # fmt: skip


# --- the results table ------------------------------------------------------------------------
def sweep_lrs(cfg: LabConfig, lrs: Iterable[float] | None = None) -> list[float]:
    """The given LRs, or those of every finished fine-tuning run under `cfg.run_root`; highest first."""
    if lrs is None:
        runs = Path(cfg.run_root).glob("finetune_lr=*/metrics.json")
        lrs = [read_json(path)["learning_rate"] for path in runs]
    return sorted({float(lr) for lr in lrs}, reverse=True)


def results_table(cfg: LabConfig, lrs: Iterable[float] | None = None,
                  failed: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per run: the transfer baseline, then each fine-tuning LR (finished, failed or
    missing). Validation accuracy (the best epoch's: what chose the model) and test accuracy of
    the chosen model, in percent with 95 % Wilson intervals; each fine-tuned model is compared
    with the transfer model on the same test images by McNemar's exact test. `failed` maps
    "transfer" or an LR label (`1e-04`) to the error that stopped it."""
    from lab5_utils.training import default_run_dir

    failed = dict(failed or {})
    transfer_dir = default_run_dir(cfg, "transfer")
    transfer = _metrics_or_none(transfer_dir)
    rows = [_result_row("transfer", cfg.learning_rate, transfer, failed.pop("transfer", ""))]
    by_label = {lr_label(lr): lr for lr in [*map(float, failed), *sweep_lrs(cfg, lrs)]}
    for label, lr in sorted(by_label.items(), key=lambda item: -item[1]):
        run_dir = default_run_dir(cfg, "finetune", lr)
        error = failed.get(label, "")
        metrics = None if error else _metrics_or_none(run_dir)
        row = _result_row(run_dir.name, lr, metrics, error)
        if metrics is not None and transfer is not None:
            row |= _paired_columns(transfer_dir, run_dir)
        rows.append(row)
    table = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    for column in ("best epoch", "trainable params", "val images", "test images"):
        table[column] = table[column].astype("Int64")
    return table


def _result_row(run: str, lr: float, metrics: dict | None, error: str) -> dict:
    row = {"run": run, "learning rate": lr, "error": error}
    if metrics is None:
        return row | {"status": "failed" if error else "missing"}
    val, n_val = metrics["best_val_accuracy"], metrics.get("num_val")
    test, n_test = metrics.get("test_accuracy", math.nan), metrics.get("num_test")
    val_ci = stats.accuracy_interval(val, n_val or 0)
    test_ci = stats.accuracy_interval(test, n_test or 0)
    return row | {
        "status": "finished", "best epoch": metrics["best_epoch"],
        "val accuracy (%)": _percent(val), "val low (%)": _percent(val_ci[0]),
        "val high (%)": _percent(val_ci[1]), "test accuracy (%)": _percent(test),
        "test low (%)": _percent(test_ci[0]), "test high (%)": _percent(test_ci[1]),
        "val images": n_val, "test images": n_test,
        "trainable params": metrics["trainable_params"],
        "seconds / epoch": metrics.get("seconds_per_epoch"),
    }


def paired_test(transfer_dir: str | Path, run_dir: str | Path) -> stats.PairedTest | None:
    """McNemar's exact test of a fine-tuned run (B) against the transfer model (A) on their
    saved test predictions; None when either has none or they were made on other images."""
    from lab5_utils.evaluate import load_predictions

    try:
        a, b = load_predictions(transfer_dir), load_predictions(run_dir)
    except FileNotFoundError:
        return None
    if not np.array_equal(a.y_true, b.y_true):
        return None
    return stats.mcnemar_exact(a.correct, b.correct)


def _paired_columns(transfer_dir: Path, run_dir: Path) -> dict:
    test = paired_test(transfer_dir, run_dir)
    if test is None:
        return {"vs transfer": "not paired"}
    return {"test change vs transfer (points)": round(100 * test.difference, 2),
            "McNemar p": test.p_value, "vs transfer": stats.verdict(test)}


def _percent(fraction: float | None) -> float:
    return math.nan if fraction is None or not math.isfinite(fraction) else round(100 * fraction, 2)


def _metrics_or_none(run_dir: Path) -> dict | None:
    path = run_dir / "metrics.json"
    return read_json(path) if path.is_file() else None


def format_results(table: pd.DataFrame) -> pd.DataFrame:
    """The results table for reading: accuracies with their 95 % intervals, LRs as 1e-04,
    signed changes, p-values to 2 significant digits, blanks for NA."""
    def with_interval(split: str) -> list[str]:
        return [f"{a:.2f} [{lo:.1f}, {hi:.1f}]" if pd.notna(a) and pd.notna(lo) else
                (f"{a:.2f}" if pd.notna(a) else "-")
                for a, lo, hi in zip(table[f"{split} accuracy (%)"], table[f"{split} low (%)"],
                                     table[f"{split} high (%)"])]

    shown = pd.DataFrame({
        "run": table["run"], "learning rate": table["learning rate"].map(lr_label),
        "status": table["status"], "best epoch": table["best epoch"],
        "validation accuracy (%) [95 % CI]": with_interval("val"),
        "test accuracy (%) [95 % CI]": with_interval("test"),
        "test change vs transfer (points)": table["test change vs transfer (points)"].map(
            lambda v: f"{v:+.2f}" if pd.notna(v) else "-"),
        "McNemar p": table["McNemar p"].map(lambda v: f"{v:.2g}" if pd.notna(v) else "-"),
        "vs transfer": table["vs transfer"],
        "trainable params": table["trainable params"].map(
            lambda v: f"{v:,}" if pd.notna(v) else "-"),
        "seconds / epoch": table["seconds / epoch"].map(
            lambda v: f"{v:.1f}" if pd.notna(v) else "-"),
        "error": table["error"],
    })
    return shown.astype(object).where(shown.notna(), "-")


def finished_finetunes(table: pd.DataFrame) -> pd.DataFrame:
    return table[(table["run"] != "transfer") & (table["status"] == "finished")]


def best_finetune(table: pd.DataFrame) -> pd.Series | None:
    """The finished fine-tuning row with the highest validation accuracy (the higher LR on ties):
    chosen on validation, never on test."""
    done = finished_finetunes(table)
    return None if done.empty else done.loc[done["val accuracy (%)"].idxmax()]


def run_dirs(cfg: LabConfig, table: pd.DataFrame) -> list[Path]:
    """Folders of the finished runs of the table (transfer first)."""
    return [Path(cfg.run_root) / r for r in table.loc[table["status"] == "finished", "run"]]


def sweep_histories(cfg: LabConfig, table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """{"lr=1e-04": history} of every finished fine-tuning run in the table."""
    from lab5_utils.history import load_history

    return {f"lr={lr_label(r['learning rate'])}": load_history(Path(cfg.run_root) / r["run"])
            for _, r in finished_finetunes(table).iterrows()}


def row_ci(row: pd.Series, split: str) -> str:
    """`41.00 % [95 % CI 34.4-47.9]`: a row's accuracy on `split` (val or test) with its interval."""
    value, low, high = (row[f"{split} {k} (%)"] for k in ("accuracy", "low", "high"))
    if pd.isna(value):
        return "not measured"
    return f"{value:.2f} %" + (f" [95 % CI {low:.1f}-{high:.1f}]" if pd.notna(low) else "")




# --- evaluation of the chosen model ----------------------------------------------------------
@dataclass
class ModelEvaluations:
    """Test metrics of the transfer and the chosen fine-tuned model, and the details of the one
    validation prefers, from the test predictions their runs saved."""

    summary: pd.DataFrame
    best_name: str
    evaluation: Any  # evaluate.Evaluation of the chosen model on the test split
    predictions: Any  # evaluate.Predictions of the chosen model (images: the first few)
    class_names: list[str]
    top_losses: pd.DataFrame  # evaluate.top_losses of the chosen model
    top_loss_images: Any  # uint8 [k, H, W, 3], in the order of `top_losses`
    run_dir: Path  # the chosen model's run folder (its best.keras)


def evaluate_models(cfg: LabConfig, table: pd.DataFrame, sample: int = 12, worst: int = 9
                    ) -> ModelEvaluations:
    """Top-1/top-5/loss on the test split of the transfer model and the best fine-tuned model
    (both with 95 % intervals), and the details of the one with the higher *validation*
    accuracy (fine-tuned on ties). Read from each run's saved test predictions: no model is
    loaded; only the images shown are decoded again."""
    from lab5_utils import evaluate

    runs = {"transfer": table[table["run"] == "transfer"].iloc[0]}
    best = best_finetune(table)
    if best is not None:
        runs[f"fine-tuned, lr={lr_label(best['learning rate'])}"] = best
    class_names = read_json(Path(cfg.run_root) / "transfer" / "class_names.json")
    rows, details = [], {}
    for name, row in runs.items():
        predictions = evaluate.load_predictions(Path(cfg.run_root) / row["run"])
        result = evaluate.evaluate_predictions(predictions.y_true, predictions.probs, class_names)
        details[name] = (result, predictions)
        rows.append({"model": name, "chosen by": "validation", "epoch": int(row["best epoch"]),
                     "validation accuracy (%)": row_ci(row, "val"),
                     "test top-1 (%)": row_ci(row, "test"),
                     "test top-5 (%)": round(100 * result.top5, 2),
                     "test loss": round(result.loss, 3), "test images": result.num_examples})
    summary = pd.DataFrame(rows)
    names = list(runs)
    best_name = max(reversed(names), key=lambda n: runs[n]["val accuracy (%)"])  # ties: fine-tuned
    evaluation, predictions = details[best_name]
    top = evaluate.top_losses(predictions.y_true, predictions.probs, worst)
    images = test_images(cfg, [*range(min(sample, len(predictions.y_true))), *top["index"]])
    predictions.images = images[:sample]
    return ModelEvaluations(summary, best_name, evaluation, predictions, class_names, top,
                            images[sample:], Path(cfg.run_root) / runs[best_name]["run"])


def test_images(cfg: LabConfig, indices: list[int]) -> np.ndarray:
    """uint8 images of the test split at `indices` (in that order), as the model saw them."""
    import tensorflow as tf

    from lab5_utils import data, pipeline

    if not indices:
        return np.zeros((0, cfg.image_size, cfg.image_size, 3), np.uint8)
    wanted = sorted(set(indices))
    keys = tf.constant(wanted, tf.int64)
    picked = (data.load_encoded(cfg).test.take(wanted[-1] + 1).enumerate()
              .filter(lambda i, example: tf.reduce_any(tf.equal(i, keys)))
              .map(lambda i, example: example))
    batches = pipeline.make_pipeline(picked, cfg.replace(cache_validation="", batch_size=64),
                                     training=False)
    images = np.concatenate([np.asarray(x) for x, _ in batches])
    return images[[wanted.index(i) for i in indices]]
