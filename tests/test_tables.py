"""Tables for people: words and units in headers, learning rates as 1e-04, the same decimals
down a column, `–` for nothing. `table_problems` is also run on the real report (test_report)."""

import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from lab5_utils import tables
from lab5_utils.evaluate.scoring import evaluate_predictions


class _Cells(HTMLParser):
    """Header and body cells of every <table> in an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.headers: list[str] = []
        self.cells: list[str] = []
        self._in: str | None = None
        self._text = ""
        self._table = 0

    def handle_starttag(self, tag, attrs):
        self._table += tag == "table"
        if self._table and tag in ("th", "td"):
            self._in, self._text = tag, ""

    def handle_endtag(self, tag):
        if tag == "table":
            self._table -= 1
        if tag == self._in:
            (self.headers if tag == "th" else self.cells).append(self._text.strip())
            self._in = None

    def handle_data(self, data):
        if self._in:
            self._text += data


RAW_FLOAT = re.compile(r"\d\.\d{4,}|\d\.\d+e[+-]?\d")  # 0.123456, 1.000000e-02 (1e-04 is fine)
NUMERIC = re.compile(r"^[-+\d.,e%\[\] ]+$")  # a number cell (error messages are prose, not checked)
SNAKE = re.compile(r"^[a-z0-9]+(_[a-z0-9]+)+$")


def table_problems(html: str) -> list[str]:
    """What a reader should not find in the tables of `html`."""
    parser = _Cells()
    parser.feed(html)
    problems = [f"snake_case header {h!r}" for h in parser.headers if SNAKE.match(h)]
    problems += [f"empty-value cell {c!r}" for c in parser.cells + parser.headers
                 if c in ("None", "nan", "NaN", "<NA>", "NaT", "none")]
    problems += [f"raw float {c!r}" for c in parser.cells if NUMERIC.match(c) and RAW_FLOAT.search(c)]
    return problems


def test_the_checker_finds_what_it_looks_for():
    bad = pd.DataFrame({"learning_rate": [1e-2], "x": [None], "y": [0.123456789]}).to_html()
    found = table_problems(bad)
    assert any("snake_case header 'learning_rate'" in p for p in found)
    assert any("None" in p for p in found) and any("raw float" in p for p in found)
    assert table_problems(pd.DataFrame({"learning rate": ["1e-04"], "x": ["–"]}).to_html()) == []


def _results():
    from lab5_utils.report.analysis import RESULT_COLUMNS

    rows = [{"run": "transfer", "setting": "transfer learning", "learning rate": 1e-2,
             "status": "finished", "best epoch": 4, "val accuracy (%)": 36.0, "val low (%)": 27.27,
             "val high (%)": 45.8, "test accuracy (%)": 40.5, "test low (%)": 33.9,
             "test high (%)": 47.4, "trainable params": 12810, "seconds / epoch": 1.234567},
            {"run": "finetune_lr=1e-04", "setting": "lr=1e-04", "learning rate": 1e-4,
             "status": "finished", "best epoch": 6, "val accuracy (%)": 40.0, "val low (%)": 30.9,
             "val high (%)": 49.8, "test accuracy (%)": 42.5, "test low (%)": 35.9,
             "test high (%)": 49.4, "test change vs transfer (points)": 2.0,
             "McNemar p": 0.5734, "vs transfer": "within noise", "trainable params": 1234567,
             "seconds / epoch": 2.0},
            {"run": "finetune_lr=1e-08", "setting": "lr=1e-08", "learning rate": 1e-8,
             "status": "failed", "error": "RunError: diverged"}]
    table = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    for column in ("best epoch", "trainable params", "val images", "test images"):
        table[column] = table[column].astype("Int64")
    return table


def test_the_results_table_reads_as_words_and_rounded_numbers():
    shown = tables.results_view(_results())
    assert list(shown["learning rate"]) == ["1e-02", "1e-04", "1e-08"]
    assert list(shown["run"]) == ["transfer learning", "lr=1e-04", "lr=1e-08"]
    assert shown["test accuracy (%) [95 % CI]"].iloc[1] == "42.50 [35.9, 49.4]"
    assert list(shown["McNemar p"]) == ["–", "0.573", "–"]
    assert [tables.p_value(p) for p in (1.0, 0.0004, 0.05)] == ["1.000", "< 0.001", "0.050"]
    assert list(shown["test change vs transfer (points)"]) == ["–", "+2.00", "–"]
    assert list(shown["seconds per epoch"]) == ["1.2", "2.0", "–"]
    assert list(shown["trainable parameters"]) == ["12,810", "1,234,567", "–"]
    assert "vs first value" not in shown.columns  # only a sweep of a setting has one
    assert table_problems(shown.to_html(index=False)) == []


@pytest.mark.parametrize("classes", [10, 101])
def test_per_class_tables_list_few_classes_once_and_many_as_best_and_worst(classes):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(classes), 5)
    probs = rng.random((len(y), classes)).astype(np.float32)
    probs[np.arange(len(y)), y] += rng.random(len(y)) * 1.5  # some classes right more often
    evaluation = evaluate_predictions(y, probs, [f"class_{i}" for i in range(classes)])
    views = tables.class_views(evaluation.per_class)
    if classes <= tables.FEW_CLASSES:
        (title, table), = views
        assert title == f"All {classes} classes, best first" and len(table) == classes
        accuracies = table["test accuracy (%)"].astype(float)
        assert list(accuracies) == sorted(accuracies, reverse=True)
    else:
        (best_title, best), (worst_title, worst) = views
        assert (best_title, worst_title) == ("The 10 best classes", "The 10 worst classes")
        assert len(best) == len(worst) == 10
        assert min(best["test accuracy (%)"].astype(float)) >= max(
            worst["test accuracy (%)"].astype(float))
    for _, table in views:
        assert list(table.columns) == ["class", "test accuracy (%)", "right", "test images"]
        assert table_problems(table.to_html(index=False)) == []
    pairs = tables.confusions_view(evaluation.confused_pairs)
    assert list(pairs.columns) == ["true class", "predicted as", "test images",
                                   "share of the true class (%)"]
    assert table_problems(pairs.to_html(index=False)) == []


def test_resources_and_runs_tables_have_words_and_units():
    from lab5_utils.cost.resources import RESOURCE_COLUMNS

    usage = pd.DataFrame([["transfer", "transfer", 1e-2, 12810, 0.146612, 0.0, 217.3333, "cpu_rss",
                           1.23456, 80.0, False, 1, "default", 1]], columns=RESOURCE_COLUMNS)
    shown = tables.resources_view(usage)
    assert "optimizer state (MB)" in shown.columns and shown["learning rate"].iloc[0] == "1e-02"
    assert shown["XLA"].iloc[0] == "no" and shown["optimizer state (MB)"].iloc[0] == "0.1"
    assert table_problems(shown.to_html(index=False)) == []
    runs = pd.DataFrame({"run": ["a"], "epochs": [3], "best_val_accuracy": [55.312345],
                         "best_epoch": [2], "final_val_accuracy": [None], "test_accuracy": [np.nan],
                         "test_images": [pd.NA]})
    shown = tables.runs_view(runs)
    assert list(shown.iloc[0]) == ["a", "3", "55.31", "2", "–", "–", "–"]
    assert table_problems(shown.to_html(index=False)) == []


@pytest.mark.parametrize("preset", ["demo", "quick"])
def test_the_recipe_table_reads_as_words(preset):
    from lab5_utils.config import LabConfig
    from lab5_utils.model.recipe import recipe_table

    table = recipe_table(LabConfig.preset(preset), "finetune")
    assert table_problems(table.to_html(index=False)) == []
    assert "0.0001" not in table.to_string() and "-" not in set(table.stack())
