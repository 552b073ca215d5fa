"""One place that makes a run repeat: every seed and TensorFlow's op determinism, set first.

`seed_run(cfg)` is called before a run builds or loads a model or a dataset (`run_stage`,
`lr_range_test`, `estimate.measure`). It seeds Python, NumPy, TensorFlow and Keras' global
`SeedGenerator` (`keras.utils.set_random_seed`): a model loaded from `best.keras` gets its Dropout
seed from Python's `random`, and tf.data's shuffle and per-image crop seeds depend on whether
TensorFlow's global seed is set, so both must be the same in every process.

`deterministic=True` also turns on `tf.config.experimental.enable_op_determinism()`: ops pick
deterministic algorithms (on a GPU slower ones), tf.data keeps element order and runs a map whose
function holds state (Keras' random preprocessing layers keep theirs in a variable) serially,
and Keras trains without XLA. It is a switch of the whole process; TensorFlow exports no way
back, so for `deterministic=False` this module uses TensorFlow's own, unexported
`disable_op_determinism` (the one Keras' tests use). Ops and pipelines built before keep the
setting they were built with: a new process (notebook kernel) is the only complete reset.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from tensorflow.python.framework import config as tf_config  # is/disable: not exported by tf

from lab5_utils.config import LabConfig


def seed_run(cfg: LabConfig) -> bool:
    """Seed everything from `cfg.seed`; op determinism on exactly when `cfg.deterministic`.
    Returns whether op determinism is on now."""
    keras.utils.set_random_seed(cfg.seed)
    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()
    elif op_determinism_enabled():
        tf_config.disable_op_determinism()
    return op_determinism_enabled()


def op_determinism_enabled() -> bool:
    """Whether TensorFlow's op determinism is on in this process (Keras asks the same)."""
    return bool(tf_config.is_op_determinism_enabled())
