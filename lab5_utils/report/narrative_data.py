"""The report's sentences about the data the runs used: its source, the images per split and
whether the test split is Food-101's official one, so that results are compared like with like
(the original lab's included)."""

from __future__ import annotations

import pandas as pd

from lab5_utils.config import LabConfig
from lab5_utils.files import read_json
from lab5_utils.i18n import _, num
from lab5_utils.report.analysis import run_dirs
from lab5_utils.tables import split_rule_text


def source_name(source: str) -> str:
    """How the report names a `DataInfo.source` / metrics.json `data_source`."""
    kind, _sep, path = source.partition(":")
    names = {
        "food101": lambda: _("Food-101 through tensorflow-datasets (`food101`)"),
        "tfds": lambda: _("Food-101 prepared by tensorflow-datasets from the archive "
                          "`{path}`").format(path=path),
        "food101-files": lambda: _("Food-101's official folder `{path}` (meta/classes.txt, "
                                   "train.txt and test.txt)").format(path=path),
        "folder": lambda: _("the image folder `{path}`").format(path=path),
        "synthetic": lambda: _("the generated synthetic set"),
    }
    return names[kind]() if kind in names else f"`{source}`"


def data_text(source: str, num_train: int, num_val: int, num_test: int, num_classes: int | None,
              official_test: bool, rule: str = "") -> str:
    """Which data the runs used and how many images each split held (Markdown)."""
    counts = _("{train} training, {val} validation and {test} test images").format(
        train=num(num_train, ","), val=num(num_val, ","), test=num(num_test, ","))
    if num_classes:
        counts = _("{classes} classes; {counts}").format(classes=num(num_classes, ","),
                                                         counts=counts)
    if rule:
        counts = _("{counts}; splits: {rule}").format(counts=counts, rule=split_rule_text(rule))
    text = _("**Data:** {source}: {counts}.").format(source=source_name(source), counts=counts)
    if official_test:
        return text + " " + _("The test split is Food-101's official test set, so test "
                              "accuracies can be set beside published Food-101 results.")
    return text + " " + _("The test split is not Food-101's official test set: its accuracies "
                          "compare only with runs on the same data.")


def run_data(cfg: LabConfig, table: pd.DataFrame) -> dict | None:
    """What the transfer run's metrics.json says about its data (runs made before
    `data_source` existed: read from the config), or None without a finished transfer run."""
    transfer = [d for d in run_dirs(cfg, table[table["run"] == "transfer"])
                if (d / "metrics.json").is_file()]
    if not transfer:
        return None
    metrics = read_json(transfer[0] / "metrics.json")
    source = metrics.get("data_source", cfg.dataset)
    official = metrics.get("official_test", source == "food101" or source.startswith("tfds:"))
    names = transfer[0] / "class_names.json"
    return {"source": source, "num_train": metrics.get("num_train", 0),
            "num_val": metrics.get("num_val", 0), "num_test": metrics.get("num_test", 0),
            "num_classes": len(read_json(names)) if names.is_file() else None,
            "official_test": official, "rule": metrics.get("split_rule") or ""}


def data_used(cfg: LabConfig, table: pd.DataFrame) -> str:
    """`data_text` of the report's runs (Markdown)."""
    used = run_data(cfg, table)
    if used is None:
        return _("**Data:** no finished transfer run says which data was used.")
    return data_text(used["source"], used["num_train"], used["num_val"], used["num_test"],
                     used["num_classes"], used["official_test"], used["rule"])


def original_like_with_like(weights: str | None, source: str | None, official_test: bool) -> str:
    """Whether this project's numbers can stand beside the original lab's (ImageNet weights on
    Food-101, validation held out of its training images); "" when the data is unknown."""
    if source is None:
        return ""
    if not official_test:
        return " " + _("This run used weights={weights} on {source}, not Food-101: its numbers "
                       "cannot be compared with the original's.").format(
            weights=repr(weights), source=source_name(source))
    if weights != "imagenet":
        return " " + _("This run used weights={weights}, not ImageNet weights: its numbers "
                       "cannot be compared with the original's.").format(weights=repr(weights))
    return " " + _("Both use Food-101 ({source}) with ImageNet weights, the validation images "
                   "held out of its training images; this project's test accuracies are on "
                   "Food-101's official test set.").format(source=source_name(source))
