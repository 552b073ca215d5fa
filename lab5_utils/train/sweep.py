"""The runs of a sweep: which fine-tuning runs `lab5 report` makes, and how they are named.

A sweep is a list of fine-tuning runs, each the lab's configuration with a change: a learning
rate (`--lrs`), or one learning rate and one value of any other setting (`--sweep KEY=V1,V2`).
All of them start from the same transfer run; notebook 03 trains one, notebook 04 compares them.
The values of a test-time setting (`tta`, `test_image_size`) share one training: the first run
trains, the others copy it and are measured at their own settings (`rundir.share_training`).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab5_utils.config import LabConfig, check_learning_rate, lr_label, parse_value

DEFAULT_LRS = (1e-4, 1e-5, 1e-7, 1e-8)

# Settings one sweep cannot vary: they are shared with the transfer run every run starts from,
# or they choose the data. The value says why, for the message.
_SHARED = "shapes the transfer run or the data, which every run of the sweep shares"
NOT_SWEPT = {
    "finetune_learning_rate": "is swept with --lrs",
    "learning_rate": "is the transfer stage's learning rate; the sweep varies fine-tuning only",
    "transfer_epochs": "belongs to the transfer stage; the sweep varies fine-tuning only",
    "weights": _SHARED, "calibration_images": _SHARED, "dataset": _SHARED,
    "image_size": _SHARED + " (try test_image_size)", "num_classes": _SHARED,
    "synthetic_train_per_class": _SHARED, "synthetic_val_per_class": _SHARED,
    "synthetic_test_per_class": _SHARED, "validation_split": _SHARED, "test_split": _SHARED,
    "seed": "also chooses the validation hold-out and the folder splits, which must stay fixed",
    "preset_name": "is chosen with --preset", "run_root": "is chosen with --out",
}


@dataclass(frozen=True)
class SweepRun:
    """One fine-tuning run of a sweep: its learning rate and the one other setting it changes."""

    lr: float
    key: str | None = None
    value: Any = None

    @property
    def label(self) -> str:
        """How tables and figures name the run: `lr=1e-04` or `label_smoothing=0.1`."""
        return f"lr={lr_label(self.lr)}" if self.key is None else f"{self.key}={value_text(self.value)}"

    @property
    def title(self) -> str:
        """`lr=1e-04`, or `label_smoothing=0.1 (lr=1e-04)`."""
        lr = f"lr={lr_label(self.lr)}"
        return lr if self.key is None else f"{self.label} ({lr})"

    @property
    def name(self) -> str:
        """The run folder and executed-notebook name: `finetune_lr=1e-04[_label_smoothing=0.1]`."""
        base = f"finetune_lr={lr_label(self.lr)}"
        if self.key is None:
            return base
        return f"{base}_{self.key}={re.sub(r'[^A-Za-z0-9.+-]', '_', value_text(self.value))}"

    @property
    def change(self) -> dict[str, Any] | None:
        """What notebook 03 receives as `sweep_setting`: {key: value}, or None."""
        return None if self.key is None else {self.key: self.value}

    def config(self, cfg: LabConfig) -> LabConfig:
        """`cfg` as this run trains it (validated)."""
        return cfg.replace(finetune_learning_rate=self.lr, **(self.change or {}))

    def run_dir(self, cfg: LabConfig) -> Path:
        return Path(cfg.run_root) / self.name


def value_text(value: Any) -> str:
    """A setting's value as the sweep spells it: 0.1, true, flip+crop, none."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "+".join(value_text(v) for v in value)
    return "none" if value is None else str(value)


def parse_lrs(values: Iterable[Any] | str | float) -> tuple[list[float], bool]:
    """`--lrs` values -> (distinct learning rates, whether `auto` was asked for). Repeated values
    count once; two different values that would share a run folder are refused."""
    values = [values] if isinstance(values, (str, int, float)) else list(values)
    numbers = [v for v in values if not (isinstance(v, str) and v.strip().lower() == "auto")]
    auto = len(numbers) < len(values)
    lrs = []
    for value in numbers:
        try:
            lrs.append(check_learning_rate(value, "--lrs"))
        except ValueError:
            raise ValueError(f"--lrs {value!r} is not valid: each value must be a finite number > 0 "
                             "(e.g. 1e-4) or 'auto'.") from None
    if not lrs and not auto:
        raise ValueError("--lrs needs at least one learning rate (or 'auto').")
    by_label: dict[str, float] = {}
    for lr in lrs:
        label = lr_label(lr)
        if by_label.setdefault(label, lr) != lr:
            raise ValueError(f"--lrs {by_label[label]:g} and {lr:g} would share the run folder "
                             f"finetune_lr={label}; use at most 4 significant digits.")
    return list(by_label.values()), auto


def parse_sweep(spec: str, cfg: LabConfig) -> tuple[str, list[Any]]:
    """`KEY=V1,V2,...` -> (key, values), each value parsed by the field's type and checked by
    LabConfig (a list field's items are joined by `+`: `augmentations=flip+crop,flip`). One
    clear ValueError for an unknown or unsweepable key, no values, a refused value or a repeat."""
    key, sep, raw = str(spec).partition("=")
    key = key.strip()
    if not sep or not key:
        raise ValueError(f"--sweep {spec!r}: expected KEY=V1,V2,..., e.g. --sweep label_smoothing=0,0.1")
    is_list = "list" in str(_check_key(key).type)
    texts = [t.strip() for t in raw.split(",") if t.strip()]
    if not texts:
        raise ValueError(f"--sweep {key}=: no values; give at least one, e.g. --sweep {key}=A,B")
    values = []
    for text in texts:
        try:
            value = _checked(cfg, key, parse_value(key, text.replace("+", ",") if is_list else text))
        except ValueError as err:
            raise ValueError(f"--sweep {key}={text}: {err}") from None
        if value in values:
            raise ValueError(f"--sweep {key}: the value {text!r} is given twice.")
        values.append(value)
    names = [SweepRun(1.0, key, v).name for v in values]
    if len(set(names)) < len(names):
        raise ValueError(f"--sweep {key}: two values would share a run folder ({', '.join(names)}).")
    return key, values


def _check_key(key: str) -> dataclasses.Field:
    """The LabConfig field `key`, if a sweep may vary it."""
    fields = {f.name: f for f in dataclasses.fields(LabConfig)}
    if key not in fields:
        close = difflib.get_close_matches(key, list(fields), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"--sweep {key}: there is no setting {key!r}.{hint} Settings are the "
                         "fields of LabConfig (README, Presets).")
    if key in NOT_SWEPT:
        raise ValueError(f"--sweep {key}: cannot be swept, it {NOT_SWEPT[key]}.")
    return fields[key]


def _checked(cfg: LabConfig, key: str, value: Any) -> Any:
    """`value` as LabConfig keeps it (validated, normalised), or a ValueError naming it."""
    return getattr(cfg.replace(**{key: value}), key)


def sweep_runs(lrs: Sequence[float], key: str | None = None,
               values: Sequence[Any] = ()) -> list[SweepRun]:
    """The runs of a sweep: one per learning rate (highest first), or, with `key`, one per value
    (in the order given) at the single learning rate in `lrs`."""
    if key is None:
        return [SweepRun(float(lr)) for lr in sorted(set(map(float, lrs)), reverse=True)]
    if len(lrs) != 1:
        raise ValueError(f"--sweep {key} runs every value at one learning rate: give --lrs one "
                         f"value (got {', '.join(map(lr_label, lrs))}).")
    return [SweepRun(float(lrs[0]), key, value) for value in values]


def finished_lr_runs(cfg: LabConfig) -> list[SweepRun]:
    """The learning-rate runs finished under `cfg.run_root` (runs of a `--sweep` left out)."""
    from lab5_utils.files import read_json

    found = []
    for metrics in Path(cfg.run_root).glob("finetune_lr=*/metrics.json"):
        run = SweepRun(float(read_json(metrics)["learning_rate"]))
        if metrics.parent.name == run.name:
            found.append(run.lr)
    return sweep_runs(found)


def finetune_run(cfg: LabConfig, learning_rate: float | None = None,
                 setting: dict[str, Any] | None = None) -> SweepRun:
    """Notebook 03's run: `learning_rate` (None: the preset's) and `sweep_setting` checked, one
    clear error for a bad value before anything is loaded."""
    lr = check_learning_rate(cfg.finetune_learning_rate if learning_rate is None else learning_rate,
                             "learning_rate")
    if not setting:
        return SweepRun(lr)
    if not isinstance(setting, dict) or len(setting) != 1:
        raise ValueError(f"sweep_setting={setting!r} is not valid: expected None or one "
                         "{'key': value}, e.g. {'label_smoothing': 0.1}.")
    (key, value), = setting.items()
    _check_key(key)
    return SweepRun(lr, key, _checked(cfg, key, value))


def report_runs(cfg: LabConfig, lrs: Sequence[float] | None = None,
                swept: dict[str, Any] | None = None) -> list[SweepRun] | None:
    """Notebook 04's runs: the learning rates `lab5 report` passed, or its swept setting
    ({"key": ..., "values": [...]}, at the one learning rate of `lrs`, else the preset's);
    None when neither is given (every finished learning-rate run, `finished_lr_runs`)."""
    if swept:
        return sweep_runs(lrs or [cfg.finetune_learning_rate], swept["key"], swept["values"])
    return None if lrs is None else sweep_runs(lrs)
