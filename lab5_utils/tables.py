"""The report's tables, formatted for people: headers in words with units, learning rates as
`1e-04`, the same decimals down a column, and `–` where there is nothing to show.

Each `*_view` takes the table a module computes (numbers, for code and CSV files) and returns
strings to display; nothing here computes a result.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd

from lab5_utils.config import lr_label

DASH = "–"
FEW_CLASSES = 20  # up to this many classes, one sorted table; more: the 10 best and 10 worst


def cell(value: Any, spec: str | Callable[[Any], str] = "{}") -> str:
    """`value` formatted by `spec` (a format string or a function), or `–` when it is missing."""
    if value is None or (not isinstance(value, (list, tuple, dict)) and pd.isna(value)):
        return DASH
    if isinstance(value, str) and not value.strip():
        return DASH
    return spec(value) if callable(spec) else spec.format(value)


def view(table: pd.DataFrame, columns: dict[str, tuple[str, str | Callable[[Any], str]]]
         ) -> pd.DataFrame:
    """The `columns` of `table` ({name: (header, format)}), in that order, as strings."""
    return pd.DataFrame({header: [cell(v, spec) for v in table[name]]
                         for name, (header, spec) in columns.items() if name in table.columns})


def p_value(p: float) -> str:
    """A p-value as the report prints it: `0.570`, `1.000`, `< 0.001`."""
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def p_equals(p: float) -> str:
    """`p = 0.570` or `p < 0.001`, for sentences."""
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def clock(seconds: float) -> str:
    """A duration as a clock: `3:05`, or `1:02:03` past an hour."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def lr_text(value: Any) -> str:
    return lr_label(float(value))


def yes_no(value: Any) -> str:
    return "yes" if bool(value) else "no"


def results_view(table: pd.DataFrame) -> pd.DataFrame:
    """`analysis.results_table` for reading: accuracies with their 95 % intervals, signed
    changes, p-values to 3 decimals."""
    shown = table.assign(
        val=[_with_interval(r, "val") for _, r in table.iterrows()],
        val_at_test_time=[_with_interval(r, "test-time val") for _, r in table.iterrows()],
        test=[_with_interval(r, "test") for _, r in table.iterrows()])
    columns = {
        "setting": ("run", "{}"), "learning rate": ("learning rate", lr_text),
        "status": ("status", "{}"), "best epoch": ("best epoch", "{:d}"),
        "val": ("validation accuracy (%) [95 % CI]", "{}"),
    }
    if _test_time_differs(table):
        columns |= {"test-time settings": ("test time", "{}"), "val_at_test_time": (
            "validation accuracy at test time (%) [95 % CI]", "{}")}
    columns |= {
        "test": ("test accuracy (%) [95 % CI]", "{}"),
        "test change vs transfer (points)": ("test change vs transfer (points)", "{:+.2f}"),
        "McNemar p": ("McNemar p", p_value), "vs transfer": ("vs transfer", "{}"),
    }
    if table["vs first"].notna().any():
        columns |= {"test change vs first (points)": ("test change vs first value (points)", "{:+.2f}"),
                    "McNemar p vs first": ("McNemar p vs first value", p_value),
                    "vs first": ("vs first value", "{}")}
    columns |= {"trainable params": ("trainable parameters", "{:,}"),
                "seconds / epoch": ("seconds per epoch", "{:.1f}"), "error": ("error", "{}")}
    return view(shown.astype(object).where(shown.notna(), None), columns)


def _test_time_differs(table: pd.DataFrame) -> bool:
    """Whether validation at the test-time settings says more than validation itself: the
    settings differ between runs, or some run's two validation accuracies differ."""
    done = table.dropna(subset=["test-time val accuracy (%)"])
    return done["test-time settings"].nunique() > 1 or bool(
        (done["test-time val accuracy (%)"] != done["val accuracy (%)"]).any())


def _with_interval(row: pd.Series, split: str) -> str | None:
    value, low, high = (row[f"{split} {k} (%)"] for k in ("accuracy", "low", "high"))
    if pd.isna(value):
        return None
    return f"{value:.2f} [{low:.1f}, {high:.1f}]" if pd.notna(low) else f"{value:.2f}"


def resources_view(table: pd.DataFrame) -> pd.DataFrame:
    """`resources.resource_table` with headers in words and units."""
    return view(table.astype(object).where(table.notna(), None), {
        "run": ("run", "{}"), "stage": ("stage", "{}"), "learning_rate": ("learning rate", lr_text),
        "trainable_params": ("trainable parameters", lambda v: f"{int(v):,}"),
        "optimizer_state_mb": ("optimizer state (MB)", "{:.1f}"),
        "ema_state_mb": ("EMA copy (MB)", "{:.1f}"),
        "training_memory_mb": ("training memory (MB)", "{:.0f}"),
        "memory_kind": ("memory measured", "{}"),
        "seconds_per_epoch": ("seconds per epoch", "{:.1f}"),
        "train_images_per_s": ("training images/s", "{:.1f}"),
        "jit_compile": ("XLA", yes_no), "steps_per_execution": ("steps per execution", "{}"),
        "distribution": ("distribution", "{}"), "replicas": ("replicas", "{}"),
    })


def class_views(per_class: pd.DataFrame, n: int = 10) -> list[tuple[str, pd.DataFrame]]:
    """Per-class test accuracy: one table of every class, best first, when there are at most
    `FEW_CLASSES`; else the `n` best and the `n` worst. [(title, table)]."""
    valid = per_class.dropna(subset=["accuracy"])
    ranked = valid.sort_values(["accuracy", "class"], ascending=[False, True])
    columns = {"class": ("class", "{}"), "accuracy": ("test accuracy (%)", lambda v: f"{100 * v:.1f}"),
               "correct": ("right", "{:d}"), "support": ("test images", "{:d}")}
    if len(valid) <= FEW_CLASSES:
        return [(f"All {len(valid)} classes, best first", view(ranked, columns))]
    worst = valid.sort_values(["accuracy", "class"], ascending=[True, True]).head(n)
    return [(f"The {n} best classes", view(ranked.head(n), columns)),
            (f"The {n} worst classes", view(worst, columns))]


def confusions_view(pairs: pd.DataFrame) -> pd.DataFrame:
    """`Evaluation.confused_pairs` with headers in words."""
    return view(pairs, {"true": ("true class", "{}"), "predicted": ("predicted as", "{}"),
                        "count": ("test images", "{:d}"),
                        "share_of_true": ("share of the true class (%)", lambda v: f"{100 * v:.1f}")})


def runs_view(table: pd.DataFrame) -> pd.DataFrame:
    """`history.summarize_runs` (accuracies in percent), with a `source` column if present."""
    return view(table.astype(object).where(table.notna(), None), {
        "source": ("source", "{}"), "run": ("run", "{}"), "epochs": ("epochs", "{}"),
        "best_val_accuracy": ("best validation accuracy (%)", "{:.2f}"),
        "best_epoch": ("at epoch", "{}"),
        "final_val_accuracy": ("final validation accuracy (%)", "{:.2f}"),
        "test_accuracy": ("test accuracy (%)", "{:.2f}"), "test_images": ("test images", "{:,}"),
    })


def parameters_view(table: pd.DataFrame) -> pd.DataFrame:
    """`model.parameter_table` (one row per stage) with headers in words."""
    return view(table.rename_axis("stage").reset_index(), {
        "stage": ("stage", "{}"), "trainable": ("trainable parameters", "{:,}"),
        "non_trainable": ("frozen parameters", "{:,}"), "total": ("all parameters", "{:,}"),
        "trainable (%)": ("trainable (%)", "{:.2f}")})
