"""The report's tables, formatted for people: headers in words with units, learning rates as
`1e-04`, the same decimals down a column, and `–` where there is nothing to show.

Each `*_view` takes the table a module computes (numbers, for code and CSV files) and returns
strings to display; nothing here computes a result.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Callable
from typing import Any

import pandas as pd

from lab5_utils.config import lr_label
from lab5_utils.i18n import N_, _, localize, num

DASH = "–"
FEW_CLASSES = 20  # up to this many classes, one sorted table; more: the 10 best and 10 worst
# Words the code keeps in its tables (statuses, verdicts, splits), translated where shown.
WORDS = (N_("finished"), N_("failed"), N_("missing"), N_("within noise"),
         N_("significant at 5 %"), N_("not paired"), N_("validation"), N_("test"),
         N_("transfer learning"), N_("unavailable"), N_("RSS peak during training"),
         N_("GPU peak during training"), N_("default"), N_("transfer"), N_("finetune"))
# How `splits` words a split rule (metrics.json keeps it in English), part by part.
_RULES = (
    (r"three generated sets \(seeds (?P<seeds>.+)\)", N_("three generated sets (seeds {seeds})")),
    (r"validation: tfds (?P<split>.+) \(seeded hold-out of tfds train\)",
     N_("validation: tfds {split} (seeded hold-out of tfds train)")),
    (r"test: tfds validation \(Food-101's official test set\)",
     N_("test: tfds validation (Food-101's official test set)")),
    (r"test: meta/test.txt \(Food-101's official test set\)",
     N_("test: meta/test.txt (Food-101's official test set)")),
    (r"(?P<name>\w+): (?P<share>\d+)% of each class of (?P<folder>.+) \(seed (?P<seed>\d+)\)",
     N_("{name}: {share} % of each class of {folder} (seed {seed})")),
    (r"(?P<name>\w+): (?P<folder>.+)", N_("{name}: {folder}")),
)


def cell(value: Any, spec: str | Callable[[Any], str] = "{}") -> str:
    """`value` formatted by `spec` (a format string or a function), or `–` when it is missing;
    numbers in the report language's form."""
    if value is None or (not isinstance(value, (list, tuple, dict)) and pd.isna(value)):
        return DASH
    if isinstance(value, str) and not value.strip():
        return DASH
    if callable(spec):
        return spec(value)
    text = spec.format(value)
    return localize(text) if isinstance(value, numbers.Number) else text


def view(table: pd.DataFrame, columns: dict[str, tuple[str, str | Callable[[Any], str]]]
         ) -> pd.DataFrame:
    """The `columns` of `table` ({name: (header, format)}), in that order, as strings."""
    return pd.DataFrame({header: [cell(v, spec) for v in table[name]]
                         for name, (header, spec) in columns.items() if name in table.columns})


def word(value: Any) -> str:
    """A word the code keeps (`finished`, `within noise`) in the report's language."""
    return _(str(value))


def split_rule_text(rule: str) -> str:
    """A split rule from `splits` (`validation: ...; test: ...`) in the report's language."""
    parts = []
    for part in str(rule).split("; "):
        for pattern, message in _RULES:
            found = re.fullmatch(pattern, part)
            if found:
                fields = found.groupdict()
                if "name" in fields:
                    fields["name"] = _(fields["name"])
                part = _(message).format(**fields)
                break
        parts.append(part)
    return "; ".join(parts)


def test_time_words(tta: str, size: int) -> str:
    """The test-time settings in the report's language: `flip TTA at 256 px`, `one pass at 224 px`."""
    return (_("flip TTA at {size} px") if tta == "flip" else _("one pass at {size} px")).format(
        size=size)


def test_time_display(text: Any) -> str:
    """metrics.json's `test_time` (stored in English, as `recipe.test_time_text` writes it) in
    the report's language; `–` when a run has none."""
    found = re.fullmatch(r"(flip TTA|one pass) at (\d+) px", str(text))
    if not found:
        return "–" if text is None or pd.isna(text) else str(text)
    return test_time_words("flip" if found[1] == "flip TTA" else "none", int(found[2]))


def p_value(p: float) -> str:
    """A p-value as the report prints it: `0.570`, `1.000`, `< 0.001`."""
    return "< " + num(0.001, ".3f") if p < 0.001 else num(p, ".3f")


def p_equals(p: float) -> str:
    """`p = 0.570` or `p < 0.001`, for sentences."""
    return "p " + ("< " if p < 0.001 else "= ") + p_value(p).removeprefix("< ")


def clock(seconds: float) -> str:
    """A duration as a clock: `3:05`, or `1:02:03` past an hour."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def lr_text(value: Any) -> str:
    return lr_label(float(value))


def yes_no(value: Any) -> str:
    return _("yes") if bool(value) else _("no")


def results_view(table: pd.DataFrame) -> pd.DataFrame:
    """`analysis.results_table` for reading: accuracies with their 95 % intervals, signed
    changes, p-values to 3 decimals."""
    shown = table.assign(
        val=[_with_interval(r, "val") for _r, r in table.iterrows()],
        val_at_test_time=[_with_interval(r, "test-time val") for _r, r in table.iterrows()],
        test=[_with_interval(r, "test") for _r, r in table.iterrows()],
        setting=[_(s) if r == "transfer" else s for r, s in zip(table["run"], table["setting"])])
    columns = {
        "setting": (_("run"), "{}"), "learning rate": (_("learning rate"), lr_text),
        "status": (_("status"), word), "best epoch": (_("best epoch"), "{:d}"),
        "val": (_("validation accuracy (%) [95 % CI]"), "{}"),
    }
    if _test_time_differs(table):
        columns |= {"test-time settings": (_("test time"), test_time_display), "val_at_test_time": (
            _("validation accuracy at test time (%) [95 % CI]"), "{}")}
    columns |= {
        "test": (_("test accuracy (%) [95 % CI]"), "{}"),
        "test change vs transfer (points)": (_("test change vs transfer (points)"), "{:+.2f}"),
        "McNemar p": (_("McNemar p"), p_value), "vs transfer": (_("vs transfer"), word),
    }
    if table["vs first"].notna().any():
        columns |= {
            "test change vs first (points)": (_("test change vs first value (points)"), "{:+.2f}"),
            "McNemar p vs first": (_("McNemar p vs first value"), p_value),
            "vs first": (_("vs first value"), word)}
    columns |= {"trainable params": (_("trainable parameters"), "{:,}"),
                "seconds / epoch": (_("seconds per epoch"), "{:.1f}"), "error": (_("error"), "{}")}
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
    if pd.isna(low):
        return num(value)
    return _("{value} [{low}, {high}]").format(value=num(value), low=num(low, ".1f"),
                                                high=num(high, ".1f"))


def resources_view(table: pd.DataFrame) -> pd.DataFrame:
    """`resources.resource_table` with headers in words and units."""
    return view(table.astype(object).where(table.notna(), None), {
        "run": (_("run"), "{}"), "stage": (_("stage"), word),
        "learning_rate": (_("learning rate"), lr_text),
        "trainable_params": (_("trainable parameters"), lambda v: num(int(v), ",")),
        "optimizer_state_mb": (_("optimizer state (MB)"), "{:.1f}"),
        "ema_state_mb": (_("EMA copy (MB)"), "{:.1f}"),
        "training_memory_mb": (_("training memory (MB)"), "{:.0f}"),
        "memory_kind": (_("memory measured"), word),
        "seconds_per_epoch": (_("seconds per epoch"), "{:.1f}"),
        "train_images_per_s": (_("training images/s"), "{:.1f}"),
        "jit_compile": (_("XLA"), yes_no), "steps_per_execution": (_("steps per execution"), "{}"),
        "distribution": (_("distribution"), word), "replicas": (_("replicas"), "{}"),
    })


def class_views(per_class: pd.DataFrame, n: int = 10) -> list[tuple[str, pd.DataFrame]]:
    """Per-class test accuracy: one table of every class, best first, when there are at most
    `FEW_CLASSES`; else the `n` best and the `n` worst. [(title, table)]."""
    valid = per_class.dropna(subset=["accuracy"])
    ranked = valid.sort_values(["accuracy", "class"], ascending=[False, True])
    columns = {"class": (_("class"), "{}"),
               "accuracy": (_("test accuracy (%)"), lambda v: num(100 * v, ".1f")),
               "correct": (_("right"), "{:d}"), "support": (_("test images"), "{:d}")}
    if len(valid) <= FEW_CLASSES:
        return [(_("All {n} classes, best first").format(n=len(valid)), view(ranked, columns))]
    worst = valid.sort_values(["accuracy", "class"], ascending=[True, True]).head(n)
    return [(_("The {n} best classes").format(n=n), view(ranked.head(n), columns)),
            (_("The {n} worst classes").format(n=n), view(worst, columns))]


def confusions_view(pairs: pd.DataFrame) -> pd.DataFrame:
    """`Evaluation.confused_pairs` with headers in words."""
    return view(pairs, {"true": (_("true class"), "{}"), "predicted": (_("predicted as"), "{}"),
                        "count": (_("test images"), "{:d}"),
                        "share_of_true": (_("share of the true class (%)"),
                                          lambda v: num(100 * v, ".1f"))})


def runs_view(table: pd.DataFrame) -> pd.DataFrame:
    """`epoch_logs.summarize_runs` (accuracies in percent), with a `source` column if present."""
    return view(table.astype(object).where(table.notna(), None), {
        "source": (_("source"), "{}"), "run": (_("run"), "{}"), "epochs": (_("epochs"), "{}"),
        "best_val_accuracy": (_("best validation accuracy (%)"), "{:.2f}"),
        "best_epoch": (_("at epoch"), "{}"),
        "final_val_accuracy": (_("final validation accuracy (%)"), "{:.2f}"),
        "test_accuracy": (_("test accuracy (%)"), "{:.2f}"),
        "test_images": (_("test images"), "{:,}"),
    })


def parameters_view(table: pd.DataFrame) -> pd.DataFrame:
    """`network.parameter_table` (one row per stage) with headers in words."""
    return view(table.rename_axis("stage").reset_index(), {
        "stage": (_("stage"), "{}"), "trainable": (_("trainable parameters"), "{:,}"),
        "non_trainable": (_("frozen parameters"), "{:,}"), "total": (_("all parameters"), "{:,}"),
        "trainable (%)": (_("trainable (%)"), "{:.2f}")})
