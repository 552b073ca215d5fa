"""The runs of a sweep: which fine-tuning runs `lab5 report` makes, and how they are named."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from lab5_utils.config import check_learning_rate, lr_label

DEFAULT_LRS = (1e-4, 1e-5, 1e-7, 1e-8)


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
