"""What a training run costs: time per epoch, the exact optimizer state its trainable
parameters need, and the memory the training itself used (measured the same way per stage)."""

from __future__ import annotations

import json
import threading
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

# float32 variables: a weight is 4 bytes; training a weight adds its gradient and Adam's two
# moment estimates (m and v), 4 bytes each, whatever the compute dtype (mixed precision keeps
# float32 variables).
BYTES_PER_WEIGHT = 4
BYTES_PER_TRAINED_WEIGHT = 3 * 4
MB = 2**20

RESOURCE_COLUMNS = [
    "run", "stage", "learning_rate", "trainable_params", "optimizer_state_mb", "ema_state_mb",
    "training_memory_mb", "memory_kind", "seconds_per_epoch", "train_images_per_s",
    "jit_compile", "steps_per_execution", "distribution", "replicas",
]  # fmt: skip


def optimizer_state_mb(trainable_params: int) -> float:
    """Gradients plus Adam's m and v for `trainable_params` float32 weights, in MiB (exact)."""
    return trainable_params * BYTES_PER_TRAINED_WEIGHT / MB


class TrainingMemory:
    """Context manager: the memory the block adds at its peak, in MiB. On GPUs the devices'
    peaks minus what was in use at the start (summed over every GPU: a mirrored run holds a
    copy of the model on each); on a CPU the peak of the process's resident memory
    (sampled every `interval` s) minus its value at the start: the training itself, not the
    process's lifetime peak (TensorFlow's import, datasets loaded before)."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.mb: float | None = None
        self.kind = "unavailable"

    def __enter__(self) -> TrainingMemory:
        import tensorflow as tf

        self._gpus = [f"GPU:{i}" for i in range(len(tf.config.list_physical_devices("GPU")))]
        if self._gpus:
            for gpu in self._gpus:
                tf.config.experimental.reset_memory_stats(gpu)
            self._start = sum(tf.config.experimental.get_memory_info(g)["current"]
                              for g in self._gpus)
            self.kind = "GPU peak during training" + (
                f" ({len(self._gpus)} GPUs, summed)" if len(self._gpus) > 1 else "")
            return self
        import psutil

        self._process = psutil.Process()
        self._start = self._peak = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        self.kind = "RSS peak during training"
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, self._process.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        if self._gpus:
            import tensorflow as tf

            peak = sum(tf.config.experimental.get_memory_info(g)["peak"] for g in self._gpus)
        else:
            self._stop.set()
            self._thread.join()
            peak = max(self._peak, self._process.memory_info().rss)
        self.mb = max(0, peak - self._start) / MB


def resource_table(run_dirs: str | Path | Iterable[str | Path]) -> pd.DataFrame:
    """One row per run folder with a `metrics.json`; missing keys become NaN.

    A single path is taken as one run if it has a `metrics.json`, else as a folder of runs.
    """
    if isinstance(run_dirs, (str, Path)):
        root = Path(run_dirs)
        run_dirs = [root] if (root / "metrics.json").is_file() else sorted(root.glob("*"))
    rows = []
    for run in map(Path, run_dirs):
        path = run / "metrics.json"
        if not path.is_file():
            continue
        try:
            metrics = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            warnings.warn(f"skipping {path}: {err}", stacklevel=2)
            continue
        rows.append({"run": run.name, **{k: metrics.get(k, np.nan) for k in RESOURCE_COLUMNS[1:]}})
    return pd.DataFrame(rows, columns=RESOURCE_COLUMNS)


def stage_means(table: pd.DataFrame) -> dict[str, dict[str, float]] | None:
    """Mean trainable parameters, optimizer state, EMA copy and measured training memory of the
    transfer and the finetune runs; None when a stage is missing or the two were measured
    differently."""
    needed = {"stage", "trainable_params", "optimizer_state_mb", "training_memory_mb", "memory_kind"}
    if table.empty or not needed <= set(table.columns):
        return None
    columns = [c for c in ("trainable_params", "optimizer_state_mb", "ema_state_mb",
                           "training_memory_mb") if c in table.columns]
    numbers = table.assign(**{c: pd.to_numeric(table[c], errors="coerce") for c in columns})
    stages = {}
    for stage in ("transfer", "finetune"):
        rows = numbers[(numbers["stage"] == stage) & numbers["training_memory_mb"].notna()]
        if rows.empty:
            return None
        stages[stage] = {c: float(rows[c].fillna(0).mean()) for c in columns}
    kinds = numbers.loc[numbers["stage"].isin(list(stages)), "memory_kind"].dropna().unique()
    return stages if len(kinds) == 1 else None
