"""The fine-tuning recipe: the loss (label smoothing), the optimizer (AdamW and what it leaves
undecayed), weight averaging (EMA), the test-time evaluation (flip TTA, test size) and the
table that shows them. `network.compile_model`, `training` and `splits` call it; the augmentations
themselves are in `pipeline`.

Every part is a `LabConfig` field whose default is the lab before the recipe existed: integer
labels with sparse cross-entropy, Adam without decay or averaging, one plain test pass.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import pandas as pd

from lab5_utils.config import MIXING, LabConfig, lr_label
from lab5_utils.i18n import N_, _, ngettext, num, use
from lab5_utils.tables import test_time_words

BACKUP_WEIGHTS = "latest.weights.h5"  # what BackupAndRestore restores from its folder


def one_hot(cfg: LabConfig) -> bool:
    """Training and validation labels are one-hot vectors when label smoothing or mixup/cutmix
    needs them (Keras 3's sparse cross-entropy has no `label_smoothing`); the test split keeps
    integer labels either way."""
    return cfg.label_smoothing > 0 or any(a in MIXING for a in cfg.augmentations)


def test_image_size(cfg: LabConfig) -> int:
    """The input size after training, for validation and test (`test_image_size`, by default
    `image_size`)."""
    return cfg.test_image_size or cfg.image_size


def trains_as_it_tests(cfg: LabConfig) -> bool:
    """The test-time settings are the training ones (one pass at `image_size`): the kept
    model's validation accuracy at test time is then validation's own number."""
    return cfg.tta == "none" and test_image_size(cfg) == cfg.image_size


def test_time_text(tta: str, size: int) -> str:
    """The test-time settings as metrics.json stores them, in English whatever the report's
    language (`tables.test_time_display` shows them in it): `flip TTA at 256 px`."""
    with use("en"):
        return test_time_words(tta, size)


def make_loss(cfg: LabConfig | None = None) -> keras.losses.Loss:
    """Cross-entropy: categorical with `label_smoothing` on one-hot labels, else sparse."""
    cfg = cfg or LabConfig()
    if one_hot(cfg):
        return keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing)
    return keras.losses.SparseCategoricalCrossentropy()


def make_metrics(cfg: LabConfig | None, num_classes: int) -> list[keras.metrics.Metric]:
    """Accuracy and top-5 (top-k, k = min(5, classes)) for the labels the pipeline yields,
    named `accuracy` and `top5` either way, so history.csv keeps its columns."""
    k = min(5, int(num_classes))
    if one_hot(cfg or LabConfig()):
        return [keras.metrics.CategoricalAccuracy(name="accuracy"),
                keras.metrics.TopKCategoricalAccuracy(k=k, name="top5")]
    return [keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
            keras.metrics.SparseTopKCategoricalAccuracy(k=k, name="top5")]


def make_optimizer(cfg: LabConfig | None, learning_rate: Any,
                   model: keras.Model) -> keras.optimizers.Optimizer:
    """Adam, or AdamW with `weight_decay` on every trained weight except BatchNorm's, the
    biases and (`decay_head=False`) the head's; with `ema`, Keras keeps the moving average of
    the weights (`ema_momentum`). Call before the optimizer is built."""
    cfg = cfg or LabConfig()
    averaging = {"use_ema": True, "ema_momentum": cfg.ema_momentum} if cfg.ema else {}
    if cfg.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate=learning_rate, **averaging)
    optimizer = keras.optimizers.AdamW(learning_rate=learning_rate,
                                       weight_decay=cfg.weight_decay, **averaging)
    optimizer.exclude_from_weight_decay(var_list=no_decay_variables(model, cfg.decay_head))
    return optimizer


def no_decay_variables(model: keras.Model, decay_head: bool = True) -> list:
    """What AdamW leaves alone: BatchNorm's gamma and beta, every bias, and with
    `decay_head=False` the weights of the output layer (the classification head)."""
    layers = list(_layers(model))
    chosen = [w for layer in layers if isinstance(layer, keras.layers.BatchNormalization)
              for w in layer.weights]
    chosen += [w for w in model.weights if w.name == "bias"]
    if not decay_head and layers:
        chosen += model.layers[-1].weights
    unique = {id(w): w for w in chosen}
    return list(unique.values())


def _layers(layer: keras.layers.Layer):
    for sub in getattr(layer, "layers", []):
        yield sub
        yield from _layers(sub)


class SwapEMAWeights(keras.callbacks.SwapEMAWeights):
    """Keras' `SwapEMAWeights(swap_on_epoch=True)`: validation, the callbacks after it
    (ModelCheckpoint's best.keras) and the end of `fit` see the averaged weights; training
    continues on the raw ones. Keras' BackupAndRestore, placed after it, therefore saves an
    epoch with the averages in the model and the raw weights in the optimizer: when a resumed
    run restores such a backup this callback knows it, and swaps them back before training."""

    def __init__(self, backup_dir: str | Path | None = None) -> None:
        super().__init__(swap_on_epoch=True)
        self.backup_dir = Path(backup_dir) if backup_dir else None

    def on_train_begin(self, logs: dict | None = None) -> None:
        # before BackupAndRestore (later in the list) restores; its swap back comes at the
        # first on_epoch_begin, after the restore
        restored = self.backup_dir is not None and (self.backup_dir / BACKUP_WEIGHTS).is_file()
        self._ema_weights_in_model = restored


def ema_callbacks(cfg: LabConfig, backup_dir: str | Path | None = None) -> list:
    """The callbacks EMA needs, to be placed before ModelCheckpoint and BackupAndRestore."""
    return [SwapEMAWeights(backup_dir)] if cfg.ema else []


def test_time_model(model: keras.Model, cfg: LabConfig) -> keras.Model:
    """The model with the run's `tta`: `model` itself (tta="none") or, for
    tta="flip", a model whose output is the mean of `model`'s softmax on each image and on its
    mirror image (the same weights, nothing copied)."""
    if cfg.tta == "none":
        return model
    inputs = keras.Input(model.input_shape[1:], name="image")
    mirrored = keras.ops.flip(inputs, axis=2)  # NHWC: axis 2 is the width
    outputs = keras.layers.Average(name="flip_tta", dtype="float32")(
        [model(inputs), model(mirrored)])
    return keras.Model(inputs, outputs, name=f"{model.name}_flip_tta")


# --- what a run records, and the notebooks' table --------------------------------------------
def recipe_dict(cfg: LabConfig) -> dict[str, Any]:
    """Every recipe part and its value (metrics.json `recipe`); a strength is None when its
    part is off."""
    augment = cfg.augmentations
    return {
        "labels": "one-hot" if one_hot(cfg) else "integer",
        "label_smoothing": cfg.label_smoothing, "optimizer": cfg.optimizer,
        "weight_decay": cfg.weight_decay if cfg.optimizer == "adamw" else 0.0,
        "decay_head": cfg.decay_head, "ema": cfg.ema,
        "ema_momentum": cfg.ema_momentum if cfg.ema else None,
        "augmentations": list(augment),
        "crop_scale": list(cfg.crop_scale) if "crop" in augment else None,
        "randaugment_ops": cfg.randaugment_ops if "randaugment" in augment else None,
        "randaugment_factor": cfg.randaugment_factor if "randaugment" in augment else None,
        "mixup_alpha": cfg.mixup_alpha if "mixup" in augment else None,
        "cutmix_alpha": cfg.cutmix_alpha if "cutmix" in augment else None,
        "tta": cfg.tta, "test_image_size": test_image_size(cfg),
    }


def hparams(cfg: LabConfig) -> dict[str, Any]:
    """`recipe_dict` as TensorBoard HParams values (numbers, booleans and strings only)."""
    def scalar(value: Any) -> Any:
        if value is None:
            return "off"
        if isinstance(value, list):
            return ",".join(str(v) for v in value) or "none"
        return value

    return {name: scalar(value) for name, value in recipe_dict(cfg).items()}


def recipe_table(cfg: LabConfig, stage: str) -> pd.DataFrame:
    """One row per recipe part of `stage`: its setting and what it does."""
    r = recipe_dict(cfg)
    transfer = stage == "transfer"
    lr = cfg.learning_rate if transfer else cfg.finetune_learning_rate
    epochs = cfg.transfer_epochs if transfer else cfg.finetune_epochs
    decayed = _("no decay")
    if cfg.optimizer == "adamw":
        spared = _("BatchNorm, biases") if cfg.decay_head else _("BatchNorm, biases, the head")
        decayed = _("weight_decay={decay}; not decayed: {spared}").format(
            decay=num(cfg.weight_decay, "g"), spared=spared)
    mixing = [_("{name} (alpha {alpha})").format(name=a, alpha=num(r[a + "_alpha"], "g"))
              for a in MIXING if a in cfg.augmentations]
    labels = _("one-hot") if r["labels"] == "one-hot" else _("integer")
    rows = [
        (_("learning rate"), ngettext("{lr}, {schedule} schedule, {n} epoch(s)",
                                      "{lr}, {schedule} schedule, {n} epoch(s)", epochs).format(
            lr=lr_label(lr), schedule=_(cfg.schedule), n=epochs),
         _("the step size; the schedule lowers it over the stage")),
        (_("what trains"), _("the head (the base is frozen)") if transfer else
         _("unfreeze={unfreeze} (BatchNorm stays frozen)").format(unfreeze=cfg.unfreeze),
         _("the weights the optimizer moves")),
        (_("loss"), _("cross-entropy, label_smoothing={smoothing} ({labels} labels)").format(
            smoothing=num(cfg.label_smoothing, "g"), labels=labels),
         _("smoothing: targets 1-e+e/C on the true class and e/C on the others (e = smoothing, "
           "C = classes), so the model is not pushed to certainty") if cfg.label_smoothing else
         _("plain cross-entropy on the true class")),
        (_("optimizer"), f"{'AdamW' if cfg.optimizer == 'adamw' else 'Adam'}, {decayed}",
         _("decoupled weight decay shrinks weights towards 0 at every step (lr x decay)")
         if cfg.optimizer == "adamw" else _("adaptive steps, no regularisation of the weights")),
        (_("weight averaging"), _("EMA, momentum {momentum}").format(
            momentum=num(cfg.ema_momentum, "g")) if cfg.ema else _("off"),
         _("validation, best.keras and the test use the moving average of the weights")
         if cfg.ema else _("the weights are used as trained")),
        (_("augmentation"), _augmentation_text(cfg), _("training images only; validation and "
                                                       "test images are never augmented")),
        (_("mixing images"), "; ".join(mixing) or _("off"), _(
            "each training image is blended with (mixup) or pasted into (cutmix) another image "
            "of its batch, labels mixed alike; with both on, each batch gets one of the two")
         if mixing else "–"),
        (_("test time"), _("{settings} (training: {train} px)").format(
            settings=test_time_words(cfg.tta, r["test_image_size"]), train=cfg.image_size),
         _("after training, the kept model on validation (which chooses between runs) and test; "
           "the epoch is chosen at {size} px, one pass").format(size=cfg.image_size)),
    ]
    return pd.DataFrame(rows, columns=[_("part"), _("setting"), _("what it does")])


# augmentations and schedules, as shown
_WORDS = (N_("flip"), N_("crop"), N_("rotation"), N_("zoom"), N_("contrast"), N_("constant"),
          N_("cosine"), N_("exponential"), N_("plateau"))


def _augmentation_text(cfg: LabConfig) -> str:
    parts = []
    for name in cfg.augmentations:
        if name == "crop":
            lo, hi = cfg.crop_scale
            parts.append(_("crop ({low}-{high} of the area)").format(
                low=num(lo, ".0%"), high=num(hi, ".0%")))
        elif name == "randaugment":
            parts.append(_("randaugment ({ops} ops, factor {factor})").format(
                ops=cfg.randaugment_ops, factor=num(cfg.randaugment_factor, "g")))
        elif name not in MIXING:
            parts.append(_(name))
    return ", ".join(parts) or _("none")
