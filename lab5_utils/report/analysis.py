"""Analysis of a finished sweep: tables and generated text.

Reads the runs' `metrics.json` and `history.csv`; TensorFlow is imported only by the functions
that load models, so the texts and tables are tested without it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lab5_utils.config import LabConfig, lr_label
from lab5_utils.evaluate import stats
from lab5_utils.files import read_json
from lab5_utils.i18n import N_, _, num, pct
from lab5_utils.train.sweep import SweepRun, finished_lr_runs

RESULT_COLUMNS = [
    "run", "setting", "learning rate", "status", "best epoch", "val accuracy (%)", "val low (%)",
    "val high (%)", "test-time settings", "test-time val accuracy (%)", "test-time val low (%)",
    "test-time val high (%)", "test accuracy (%)", "test low (%)", "test high (%)",
    "test change vs transfer (points)", "McNemar p", "vs transfer",
    "test change vs first (points)", "McNemar p vs first", "vs first", "val images",
    "test images", "trainable params", "seconds / epoch", "wall time (s)", "device", "error",
]  # fmt: skip


VALIDATION_HEADERS = {"val": N_("validation accuracy (%)"),
                      "test-time val": N_("validation accuracy at test time (%)")}


# --- the results table ------------------------------------------------------------------------
def results_table(cfg: LabConfig, runs: Sequence[SweepRun] | None = None,
                  failed: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per run: the transfer baseline, then each run of the sweep (finished, failed or
    missing; `runs` None: every finished learning-rate run under `cfg.run_root`). Validation
    accuracy (the best epoch's: what chose the epoch), the kept model's validation accuracy at
    its test-time settings (`tta`, `test_image_size`: what chooses between runs; missing for
    runs of an older lab5) and its test accuracy, in percent with 95 % Wilson intervals; each
    fine-tuned model is compared with the transfer model on the same test images by McNemar's
    exact test, and in a sweep of a setting also with the sweep's first value. `failed` maps
    "transfer" or a run's name to its error."""
    from lab5_utils.train.training import default_run_dir

    failed = dict(failed or {})
    runs = finished_lr_runs(cfg) if runs is None else list(runs)
    transfer_dir = default_run_dir(cfg, "transfer")
    transfer = _metrics_or_none(transfer_dir)
    rows = [_result_row("transfer", "transfer learning", cfg.learning_rate, transfer,
                        failed.pop("transfer", ""))]
    first_dir = runs[0].run_dir(cfg) if runs and runs[0].key is not None else None
    for run in runs:
        run_dir, error = run.run_dir(cfg), failed.get(run.name, "")
        metrics = None if error else _metrics_or_none(run_dir)
        row = _result_row(run.name, run.label, run.lr, metrics, error)
        if metrics is not None and transfer is not None:
            row |= _paired_columns(transfer_dir, run_dir, "transfer")
        if metrics is not None and first_dir not in (None, run_dir):
            row |= _paired_columns(first_dir, run_dir, "first")  # "not paired" if it has none
        rows.append(row)
    table = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    for column in ("best epoch", "trainable params", "val images", "test images"):
        table[column] = table[column].astype("Int64")
    return table


def _result_row(run: str, setting: str, lr: float, metrics: dict | None, error: str) -> dict:
    row = {"run": run, "setting": setting, "learning rate": lr, "error": error}
    if metrics is None:
        return row | {"status": "failed" if error else "missing"}
    val, n_val = metrics["best_val_accuracy"], metrics.get("num_val")
    test, n_test = metrics.get("test_accuracy", math.nan), metrics.get("num_test")
    val_ci = stats.accuracy_interval(val, n_val or 0)
    test_ci = stats.accuracy_interval(test, n_test or 0)
    at_test_time = metrics.get("test_time_val_accuracy", math.nan)
    at_test_time_ci = stats.accuracy_interval(at_test_time, n_val or 0)
    return row | {
        "status": "finished", "best epoch": metrics["best_epoch"],
        "val accuracy (%)": _percent(val), "val low (%)": _percent(val_ci[0]),
        "val high (%)": _percent(val_ci[1]), "test-time settings": metrics.get("test_time"),
        "test-time val accuracy (%)": _percent(at_test_time),
        "test-time val low (%)": _percent(at_test_time_ci[0]),
        "test-time val high (%)": _percent(at_test_time_ci[1]),
        "test accuracy (%)": _percent(test),
        "test low (%)": _percent(test_ci[0]), "test high (%)": _percent(test_ci[1]),
        "val images": n_val, "test images": n_test,
        "trainable params": metrics["trainable_params"],
        "seconds / epoch": metrics.get("seconds_per_epoch"),
        "wall time (s)": metrics.get("wall_time_s"), "device": metrics.get("device", ""),
    }


def paired_test(base_dir: str | Path, run_dir: str | Path) -> stats.PairedTest | None:
    """McNemar's exact test of a run (B) against a base run (A: the transfer model, or a sweep's
    first value) on their saved test predictions; None when either has none or they were made
    on other images."""
    from lab5_utils.evaluate.scoring import load_predictions

    try:
        a, b = load_predictions(base_dir), load_predictions(run_dir)
    except FileNotFoundError:
        return None
    if not np.array_equal(a.y_true, b.y_true):
        return None
    return stats.mcnemar_exact(a.correct, b.correct)


def _paired_columns(base_dir: Path, run_dir: Path, base: str) -> dict:
    """The change against `base` ("transfer" or "first") and McNemar's test, as table columns."""
    test = paired_test(base_dir, run_dir)
    p_column = "McNemar p" if base == "transfer" else "McNemar p vs first"
    if test is None:
        return {f"vs {base}": "not paired"}
    return {f"test change vs {base} (points)": round(100 * test.difference, 2),
            p_column: test.p_value, f"vs {base}": stats.verdict(test)}


def _percent(fraction: float | None) -> float:
    return math.nan if fraction is None or not math.isfinite(fraction) else round(100 * fraction, 2)


def _metrics_or_none(run_dir: Path) -> dict | None:
    path = run_dir / "metrics.json"
    return read_json(path) if path.is_file() else None


def finished_finetunes(table: pd.DataFrame) -> pd.DataFrame:
    return table[(table["run"] != "transfer") & (table["status"] == "finished")]


def choice_split(rows: pd.DataFrame) -> str:
    """The validation number that chooses between `rows` (finished runs), as `row_ci` names it:
    "test-time val", the kept model's accuracy at its test-time settings, when every row has
    it; else "val", the kept epoch's at the training size (runs of an older lab5 lack the other)."""
    if not rows.empty and rows["test-time val accuracy (%)"].notna().all():
        return "test-time val"
    return "val"


def best_finetune(table: pd.DataFrame) -> pd.Series | None:
    """The finished fine-tuning row with the highest validation accuracy (`choice_split`; on
    ties the first: the higher LR, or the earlier value of a swept setting): chosen on
    validation, never on test."""
    done = finished_finetunes(table)
    if done.empty:
        return None
    return done.loc[done[f"{choice_split(done)} accuracy (%)"].idxmax()]


def glance_data(table: pd.DataFrame) -> pd.DataFrame:
    """What the report's first figure shows: one row per finished run (transfer learning
    first), its validation and test accuracy with their 95 % intervals (percent), and which
    run validation chose (the best fine-tuning run; transfer learning when none finished).
    Validation is the number that chose (`choice_split`)."""
    done = table[table["status"] == "finished"]
    best = best_finetune(table)
    chosen = best["run"] if best is not None else "transfer"
    split_of = {"val": choice_split(done), "test": "test"}
    return pd.DataFrame({
        "run": done["run"], "label": done["setting"],
        **{f"{split} {part}": done[f"{column} {part} (%)"]
           for split, column in split_of.items() for part in ("accuracy", "low", "high")},
        "chosen": done["run"] == chosen,
    }).reset_index(drop=True)


def run_dirs(cfg: LabConfig, table: pd.DataFrame) -> list[Path]:
    """Folders of the finished runs of the table (transfer first)."""
    return [Path(cfg.run_root) / r for r in table.loc[table["status"] == "finished", "run"]]


def sweep_histories(cfg: LabConfig, table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """{"lr=1e-04" or "label_smoothing=0.1": history} of every finished fine-tuning run."""
    from lab5_utils.train.epoch_logs import load_history

    return {r["setting"]: load_history(Path(cfg.run_root) / r["run"])
            for _i, r in finished_finetunes(table).iterrows()}


def run_title(row: pd.Series) -> str:
    """`lr=1e-04`, or `label_smoothing=0.1 (lr=1e-04)` for a run of a setting's sweep."""
    lr = f"lr={lr_label(row['learning rate'])}"
    return lr if row["setting"] == lr else f"{row['setting']} ({lr})"


def row_ci(row: pd.Series, split: str) -> str:
    """`41.00 % [95 % CI 34.4-47.9]`: a row's accuracy on `split` (val or test) with its interval."""
    value, low, high = (row[f"{split} {k} (%)"] for k in ("accuracy", "low", "high"))
    if pd.isna(value):
        return _("not measured")
    if pd.isna(low):
        return pct(value)
    return _("{value} [95 % CI {low}-{high}]").format(value=pct(value), low=num(low, ".1f"),
                                                       high=num(high, ".1f"))




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
    accuracy (`choice_split`; fine-tuned on ties). Read from each run's saved test
    predictions: no model is loaded; only the images shown are decoded again."""
    from lab5_utils.evaluate import scoring

    runs = {_("transfer"): table[table["run"] == "transfer"].iloc[0]}
    best = best_finetune(table)
    if best is not None:
        runs[_("fine-tuned, {run}").format(run=run_title(best))] = best
    class_names = read_json(Path(cfg.run_root) / "transfer" / "class_names.json")
    split = choice_split(pd.DataFrame(list(runs.values())))
    rows, details = [], {}
    for name, row in runs.items():
        predictions = scoring.load_predictions(Path(cfg.run_root) / row["run"])
        result = scoring.evaluate_predictions(predictions.y_true, predictions.probs, class_names)
        details[name] = (result, predictions)
        rows.append({_("model"): name, _("chosen by"): _("validation"),
                     _("epoch"): int(row["best epoch"]),
                     _(VALIDATION_HEADERS[split]): row_ci(row, split),
                     _("test top-1 (%)"): row_ci(row, "test"),
                     _("test top-5 (%)"): num(100 * result.top5),
                     _("test loss"): num(result.loss, ".3f"),
                     _("test images"): num(result.num_examples, ",")})
    summary = pd.DataFrame(rows)
    names = list(runs)
    best_name = max(reversed(names), key=lambda n: runs[n][f"{split} accuracy (%)"])  # ties: fine-tuned
    evaluation, predictions = details[best_name]
    top = scoring.top_losses(predictions.y_true, predictions.probs, worst)
    chosen = _metrics_or_none(Path(cfg.run_root) / runs[best_name]["run"]) or {}
    size = chosen.get("recipe", {}).get("test_image_size")  # the chosen run's test size
    images = test_images(cfg.replace(test_image_size=size) if size else cfg,
                         [*range(min(sample, len(predictions.y_true))), *top["index"]])
    predictions.images = images[:sample]
    return ModelEvaluations(summary, best_name, evaluation, predictions, class_names, top,
                            images[sample:], Path(cfg.run_root) / runs[best_name]["run"])


def test_images(cfg: LabConfig, indices: list[int]) -> np.ndarray:
    """uint8 images of the test split at `indices` (in that order), as the model saw them: at
    the test size (`test_image_size`)."""
    import tensorflow as tf

    from lab5_utils.data import pipeline, splits
    from lab5_utils.model import recipe

    size = recipe.test_image_size(cfg)
    if not indices:
        return np.zeros((0, size, size, 3), np.uint8)
    wanted = sorted(set(indices))
    keys = tf.constant(wanted, tf.int64)
    picked = (splits.load_encoded(cfg).test.take(wanted[-1] + 1).enumerate()
              .filter(lambda i, example: tf.reduce_any(tf.equal(i, keys)))
              .map(lambda i, example: example))
    batches = pipeline.make_pipeline(
        picked, cfg.replace(cache_validation="", batch_size=64, image_size=size), training=False)
    images = np.concatenate([np.asarray(x) for x, _ in batches])
    return images[[wanted.index(i) for i in indices]]
