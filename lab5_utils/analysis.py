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

import pandas as pd

from lab5_utils.config import LabConfig, lr_label
from lab5_utils.files import project_root, read_json

RESULT_COLUMNS = [
    "run", "learning rate", "status", "best val accuracy (%)", "best epoch",
    "final val accuracy (%)", "change vs transfer (points)", "trainable params",
    "seconds / epoch", "error",
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
    missing) with the numbers of its `metrics.json`; accuracies in percent. `failed` maps
    "transfer" or an LR label (`1e-04`) to the error that stopped it."""
    from lab5_utils.training import default_run_dir

    failed = dict(failed or {})
    transfer = _metrics_or_none(default_run_dir(cfg, "transfer"))
    base = transfer["best_val_accuracy"] if transfer else math.nan
    rows = [_result_row("transfer", cfg.learning_rate, transfer, base, failed.pop("transfer", ""))]
    by_label = {lr_label(lr): lr for lr in [*map(float, failed), *sweep_lrs(cfg, lrs)]}
    for label, lr in sorted(by_label.items(), key=lambda item: -item[1]):
        run_dir = default_run_dir(cfg, "finetune", lr)
        error = failed.get(label, "")
        rows.append(_result_row(run_dir.name, lr, None if error else _metrics_or_none(run_dir),
                                base, error))
    table = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    for column in ("best epoch", "trainable params"):
        table[column] = table[column].astype("Int64")
    return table


def _result_row(run: str, lr: float, metrics: dict | None, base: float, error: str) -> dict:
    row = {"run": run, "learning rate": lr, "error": error}
    if metrics is None:
        return row | {"status": "failed" if error else "missing"}
    return row | {
        "status": "finished",
        "best val accuracy (%)": round(100 * metrics["best_val_accuracy"], 2),
        "best epoch": metrics["best_epoch"],
        "final val accuracy (%)": round(100 * metrics["final_val_accuracy"], 2),
        "change vs transfer (points)": (None if run == "transfer"
                                        else round(100 * (metrics["best_val_accuracy"] - base), 2)),
        "trainable params": metrics["trainable_params"],
        "seconds / epoch": metrics.get("seconds_per_epoch"),
    }


def _metrics_or_none(run_dir: Path) -> dict | None:
    path = run_dir / "metrics.json"
    return read_json(path) if path.is_file() else None


def format_results(table: pd.DataFrame) -> pd.DataFrame:
    """The results table as text for reading: LRs as 1e-04, signed changes, blanks for NA."""
    shown = table.astype(object).where(table.notna(), "-")
    two = "{:.2f}".format
    formats = {"learning rate": lr_label, "best val accuracy (%)": two,
               "final val accuracy (%)": two, "change vs transfer (points)": "{:+.2f}".format,
               "trainable params": "{:,}".format, "seconds / epoch": "{:.1f}".format}
    for column, fmt in formats.items():
        shown[column] = [fmt(v) if v != "-" else v for v in shown[column]]
    return shown


def _finished_finetunes(table: pd.DataFrame) -> pd.DataFrame:
    return table[(table["run"] != "transfer") & (table["status"] == "finished")]


def best_finetune(table: pd.DataFrame) -> pd.Series | None:
    """The finished fine-tuning row with the highest best validation accuracy (first on ties)."""
    done = _finished_finetunes(table)
    return None if done.empty else done.loc[done["best val accuracy (%)"].idxmax()]


def run_dirs(cfg: LabConfig, table: pd.DataFrame) -> list[Path]:
    """Folders of the finished runs of the table (transfer first)."""
    return [Path(cfg.run_root) / r for r in table.loc[table["status"] == "finished", "run"]]


def sweep_histories(cfg: LabConfig, table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """{"lr=1e-04": history} of every finished fine-tuning run in the table."""
    from lab5_utils.history import load_history

    return {f"lr={lr_label(r['learning rate'])}": load_history(Path(cfg.run_root) / r["run"])
            for _, r in _finished_finetunes(table).iterrows()}


# --- generated text ---------------------------------------------------------------------------
def describe_run(metrics: dict, baseline: dict | None = None) -> str:
    """A sentence or two on one finished run, compared with `baseline` when given."""
    seconds = metrics.get("seconds_per_epoch")
    text = (f"Best validation accuracy **{_pct(metrics['best_val_accuracy'])}** at epoch "
            f"{metrics['best_epoch']} (epochs {metrics['first_epoch']}-{metrics['last_epoch']}); "
            f"final {_pct(metrics['final_val_accuracy'])} validation and "
            f"{_pct(metrics['final_accuracy'])} training accuracy; "
            f"{metrics['trainable_params']:,} trainable parameters; "
            f"{'-' if seconds is None else f'{seconds:.1f} s'} per epoch.")
    if baseline:
        change = 100 * (metrics["best_val_accuracy"] - baseline["best_val_accuracy"])
        text += (f" The transfer model it starts from reached {_pct(baseline['best_val_accuracy'])}:"
                 f" fine-tuning at lr={lr_label(metrics['learning_rate'])} changed the best "
                 f"validation accuracy by {change:+.2f} points.")
    return text


def conclusion(table: pd.DataFrame, suggested_lr: float | None = None) -> str:
    """The report's conclusion, generated from the results table (Markdown)."""
    transfer = table[table["run"] == "transfer"].iloc[0]
    if transfer["status"] != "finished":
        return "No finished transfer-learning run was found, so there is nothing to conclude yet."
    a = transfer["best val accuracy (%)"]
    parts = [f"Transfer learning (EfficientNet-B0 frozen, new head trained) reached **{a:.2f} %** "
             f"validation accuracy at epoch {int(transfer['best epoch'])}."]
    best = best_finetune(table)
    finetune = table[table["run"] != "transfer"]
    if best is None:
        parts.append("No fine-tuning run finished.")
    else:
        b, change = best["best val accuracy (%)"], best["change vs transfer (points)"]
        n = len(_finished_finetunes(table))
        moved = (f"{'raised' if change > 0 else 'lowered'} validation accuracy from {a:.2f} % to "
                 if change else "kept validation accuracy at ")
        parts.append(
            f"Fine-tuning at **lr={lr_label(best['learning rate'])}** {moved}**{b:.2f} %** at "
            f"epoch {int(best['best epoch'])} ({change:+.2f} points), the best of the {n} learning "
            f"rate{'s' if n > 1 else ''} that finished."
        )
        others = [f"lr={lr_label(r['learning rate'])} changed it by "
                  f"{r['change vs transfer (points)']:+.2f} points (best "
                  f"{r['best val accuracy (%)']:.2f} % at epoch {int(r['best epoch'])})"
                  for _, r in _finished_finetunes(table).iterrows() if r["run"] != best["run"]]
        if others:
            parts.append("The other learning rates: " + "; ".join(others) + ".")
    for _, r in finetune[finetune["status"] != "finished"].iterrows():
        error = str(r["error"] or "").strip()
        reason = error.splitlines()[0].rstrip(".") if error else "no finished run was found"
        parts.append(f"lr={lr_label(r['learning rate'])} {r['status']}: {reason}.")
    if suggested_lr and best is not None:
        parts.append(lr_suggestion_text(float(best["learning rate"]), float(suggested_lr)))
    return " ".join(parts)


def lr_suggestion_text(best_lr: float, suggested_lr: float) -> str:
    """Whether the best swept LR is near (within a factor of 3 of) the range test's suggestion."""
    ratio = best_lr / suggested_lr
    near = abs(math.log10(ratio)) <= math.log10(3)
    side = "above" if ratio > 1 else "below"
    return (f"The LR range test suggested lr={lr_label(suggested_lr)}; the best swept learning "
            f"rate, {lr_label(best_lr)}, is {'near' if near else 'not near'} it "
            + ("(the same value)." if ratio == 1 else f"({max(ratio, 1 / ratio):.3g} times {side})."))


def memory_text(increase: float | None) -> str:
    """A sentence on the peak memory of fine-tuning relative to transfer learning."""
    if increase is None:
        return "Peak memory of the two stages could not be compared (one of them was not measured)."
    more = "more" if increase >= 0 else "less"
    return (f"Fine-tuning needed {abs(increase):.1f} % {more} peak memory than transfer learning: "
            "gradients and Adam's two moment estimates now exist for every unfrozen weight.")


def original_comparison(cfg: LabConfig, table: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The original lab's TensorBoard runs next to this sweep's, and a generated sentence."""
    from lab5_utils.history import summarize_runs

    folder = project_root() / "references" / "original_lab5"
    original, problems = summarize_runs(sorted(folder.glob("*")))
    original.insert(0, "source", "original lab 5")
    mine, _ = summarize_runs(run_dirs(cfg, table))
    mine.insert(0, "source", "this project")
    both = pd.concat([original, mine], ignore_index=True)
    if original.empty:
        return both, f"The original lab's logs could not be read ({'; '.join(problems)})."
    is_transfer = original["run"].str.contains("augmentation")
    start = original.loc[is_transfer, "final_val_accuracy"].iloc[0]
    peak = original.loc[~is_transfer, "best_val_accuracy"].max()
    text = (f"The original lab went from {start:.2f} % (end of transfer learning) to at best "
            f"{peak:.2f} % after fine-tuning ({peak - start:+.2f} points).")
    best = best_finetune(table)
    transfer = table[table["run"] == "transfer"].iloc[0]
    if best is not None:
        text += (f" This run went from {transfer['best val accuracy (%)']:.2f} % to "
                 f"{best['best val accuracy (%)']:.2f} % ({best['change vs transfer (points)']:+.2f}"
                 f" points, lr={lr_label(best['learning rate'])}).")
    if cfg.weights != "imagenet":
        text += (f" This run used weights={cfg.weights!r} on the {cfg.dataset!r} dataset, not "
                 "ImageNet weights on Food-101: its numbers cannot be compared with the original's.")
    return both, text


def _pct(fraction: float) -> str:
    return f"{100 * fraction:.2f} %"


# --- evaluation of the best models ------------------------------------------------------------
@dataclass
class ModelEvaluations:
    """Top-1/top-5 of each evaluated model, and the details of the best one."""

    summary: pd.DataFrame
    best_name: str
    evaluation: Any  # evaluate.Evaluation of the best model
    predictions: Any  # evaluate.Predictions of the best model
    class_names: list[str]


def evaluate_models(cfg: LabConfig, table: pd.DataFrame, max_batches: int | None = None
                    ) -> ModelEvaluations:
    """Top-1/top-5 of the transfer model and the best fine-tuned model, read from their training
    logs (validation metrics of the best epoch, the epoch `best.keras` holds), and a full
    evaluation of the better of the two on the validation split: one model to load, not two."""
    from lab5_utils import data, evaluate, pipeline
    from lab5_utils import model as mdl
    from lab5_utils.history import load_history

    runs = {"transfer": "transfer"}
    best = best_finetune(table)
    if best is not None:
        runs[f"fine-tuned, lr={lr_label(best['learning rate'])}"] = best["run"]
    rows = []
    for name, run in runs.items():
        history = load_history(Path(cfg.run_root) / run)
        at_best = history.loc[history["val_accuracy"].idxmax()]
        rows.append({"model": name, "top-1 accuracy (%)": round(100 * at_best["val_accuracy"], 2),
                     "top-5 accuracy (%)": round(100 * at_best.get("val_top5", math.nan), 2),
                     "epoch": int(at_best["epoch"])})
    summary = pd.DataFrame(rows)
    best_name = summary.loc[summary["top-1 accuracy (%)"][::-1].idxmax(), "model"]  # ties: fine-tuned
    _, val, info = data.load_encoded(cfg)
    model = mdl.load_model(Path(cfg.run_root) / runs[best_name] / "best.keras")
    evaluation, predictions = evaluate.evaluate_model(
        model, pipeline.make_pipeline(val, cfg, training=False), info.class_names, max_batches)
    summary["examples"] = info.num_val
    return ModelEvaluations(summary, best_name, evaluation, predictions, info.class_names)
