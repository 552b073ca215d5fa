"""The learning-rate policy (Keras schedules and callbacks) and an LR range test."""

from __future__ import annotations

import math
from dataclasses import dataclass

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from lab5_utils.config import SCHEDULES, check_learning_rate


def make_schedule(
    name: str, learning_rate: float, steps_per_epoch: int, epochs: int, warmup_fraction: float = 0.05
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """`constant` and `plateau` -> the float; `cosine` -> per-step cosine decay with linear warmup;
    `exponential` -> per-epoch decay to 10 % of the rate by the end of the stage."""
    lr = check_learning_rate(learning_rate)
    total = max(1, steps_per_epoch * epochs)
    if name in ("constant", "plateau"):
        return lr
    if name == "cosine":
        warmup = int(total * warmup_fraction)
        return keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=lr * 0.1 if warmup else lr, decay_steps=total - warmup,
            alpha=0.01, warmup_target=lr if warmup else None, warmup_steps=warmup,
        )
    if name == "exponential":
        return keras.optimizers.schedules.ExponentialDecay(
            lr, decay_steps=max(1, steps_per_epoch), decay_rate=0.1 ** (1 / max(1, epochs))
        )
    raise ValueError(f"schedule={name!r} is not valid: expected one of {', '.join(SCHEDULES)}.")


def schedule_callbacks(name: str, learning_rate: float) -> list[keras.callbacks.Callback]:
    """Callbacks a policy needs: `plateau` divides the LR by 3 when val_loss stops improving."""
    if name == "plateau":
        return [keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss", factor=1 / 3, patience=1, min_lr=learning_rate * 1e-3, verbose=1
        )]
    return []


def current_learning_rate(model: keras.Model) -> float:
    return float(np.asarray(model.optimizer.learning_rate))


class LearningRateLogger(keras.callbacks.Callback):
    """Adds the learning rate used in the epoch as `lr` to the logs (so CSVLogger records it)."""

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._lr = current_learning_rate(self.model)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs["lr"] = self._lr
            logs.pop("learning_rate", None)  # Keras 3 adds it for some schedules; keep one name


@dataclass
class LRFinderResult:
    """The range test's curve (`lr`, `loss`, `smoothed_loss`) and the suggested learning rate."""

    curve: pd.DataFrame
    suggestion: float


def find_lr(
    model: keras.Model, dataset: tf.data.Dataset, start_lr: float = 1e-7, end_lr: float = 1.0,
    steps: int = 100, smoothing: float = 0.9, loss: keras.losses.Loss | None = None,
) -> LRFinderResult:
    """LR range test on a *copy* of `model` (same weights and trainable flags; the model is not
    changed): the LR grows exponentially from `start_lr` to `end_lr` over `steps` batches and
    the loss is recorded. Suggestion: a tenth of the LR with the lowest smoothed loss. `loss`:
    the one training uses (`recipe.make_loss`: one-hot labels need categorical cross-entropy);
    None is sparse cross-entropy on integer labels. Plain Adam either way: weight decay and
    averaging barely act over a few batches."""
    check_learning_rate(start_lr, "start_lr")
    check_learning_rate(end_lr, "end_lr")
    if not start_lr < end_lr or steps < 10:
        raise ValueError("find_lr needs start_lr < end_lr and steps >= 10.")
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    for source, copy in zip(model._flatten_layers(), clone._flatten_layers()):
        copy.trainable = source.trainable
    clone.compile(optimizer=keras.optimizers.Adam(learning_rate=start_lr),
                  loss=loss or keras.losses.SparseCategoricalCrossentropy())
    clone.optimizer.build(clone.trainable_variables)
    factor = (end_lr / start_lr) ** (1 / (steps - 1))
    rows, best, avg = [], math.inf, 0.0
    lrs = [start_lr * factor**step for step in range(steps)]
    for step, (lr, loss) in enumerate(zip(lrs, _batch_losses(clone, dataset, lrs))):
        avg = smoothing * avg + (1 - smoothing) * loss
        smoothed = avg / (1 - smoothing ** (step + 1))
        rows.append((lr, loss, smoothed))
        best = min(best, smoothed)
        if not math.isfinite(loss) or smoothed > 4 * best:
            break  # the loss has exploded: the rest of the range tells nothing
    curve = pd.DataFrame(rows, columns=["lr", "loss", "smoothed_loss"])
    best_lr = float(curve.loc[curve.smoothed_loss.idxmin(), "lr"])
    return LRFinderResult(curve, max(best_lr / 10, start_lr))  # never below the tested range


def _batch_losses(model: keras.Model, dataset: tf.data.Dataset, lrs: list[float]):
    """Train `model` on one batch per learning rate of `lrs`; yield each batch's loss. Under a
    strategy with several replicas (training's scope) each batch is split over them, as in
    `fit`: `train_on_batch` would give every replica the whole batch."""
    batches = dataset.repeat().take(len(lrs))
    strategy = tf.distribute.get_strategy()
    split = strategy.num_replicas_in_sync > 1
    if split:
        model.make_train_function()
        batches = strategy.experimental_distribute_dataset(batches)
    for lr, batch in zip(lrs, batches):
        model.optimizer.learning_rate.assign(lr)
        if split:
            model.reset_metrics()  # the logged loss is then this batch's
            loss = model.train_function(iter([batch]))["loss"]
        else:
            loss = model.train_on_batch(*batch)
        yield float(np.asarray(loss))
