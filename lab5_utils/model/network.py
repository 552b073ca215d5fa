"""EfficientNet-B0 with a new classification head; freezing, unfreezing and weights loading."""

from __future__ import annotations

import warnings
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from lab5_utils.config import LabConfig, parse_unfreeze
from lab5_utils.i18n import _
from lab5_utils.model import distribute, recipe

BASE_NAME = "efficientnetb0"


def gpu_available() -> bool:
    return bool(tf.config.list_physical_devices("GPU"))


def use_mixed_precision(cfg: LabConfig) -> bool:
    """`auto` turns mixed precision on exactly when a GPU or a TPU is used."""
    return distribute.precision_policy(cfg) != "float32"


def device_summary(cfg: LabConfig) -> str:
    """One line: the devices training runs on, the distribution strategy and its replicas (the
    one entered, else the one `cfg.distribution` chooses), and the precision."""
    chosen = tf.distribute.get_strategy() if tf.distribute.has_strategy() else (
        distribute.strategy(cfg))
    gpus = tf.config.list_physical_devices("GPU")
    if distribute.is_tpu(chosen):
        device = "TPU"
    elif gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        device = f"GPU ({details.get('device_name', gpus[0].name)})" + (
            f" x {len(gpus)}" if len(gpus) > 1 else "")
    else:
        device = f"CPU ({len(tf.config.list_physical_devices('CPU'))} device, no GPU)"
    policy = distribute.precision_policy(cfg, chosen)
    mp = f"on ({policy})" if policy != "float32" else "off (float32)"
    return (f"device: {device}; distribution: {distribute.describe(chosen)}; mixed precision: {mp}; "
            f"XLA jit_compile: {cfg.jit_compile}")


def set_precision(cfg: LabConfig) -> str:
    """Set Keras' global dtype policy for `cfg` under the current strategy; returns its name."""
    policy = distribute.precision_policy(cfg)
    keras.mixed_precision.set_global_policy(policy)
    return policy


def build_model(cfg: LabConfig, num_classes: int) -> keras.Model:
    """EfficientNet-B0 base (layer `efficientnetb0`, run with training=False) + pooling, dropout
    and a float32 softmax head. `cfg.weights`: "imagenet", a `.weights.h5` file of the base,
    "calibrated" or None (random init; "calibrated" re-estimates BatchNorm statistics later)."""
    set_precision(cfg)
    keras.utils.set_random_seed(cfg.seed)
    shape = (cfg.image_size, cfg.image_size, 3)
    base = keras.applications.EfficientNetB0(
        include_top=False, weights="imagenet" if cfg.weights == "imagenet" else None,
        input_shape=shape, name=BASE_NAME,
    )
    if cfg.weights not in (None, "imagenet", "calibrated"):
        load_base_weights(base, cfg.weights)
    inputs = keras.Input(shape, name="image")
    x = base(inputs, training=False)  # BatchNorm stays in inference mode, even when unfrozen
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = keras.layers.Dropout(cfg.dropout, name="head_dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32",
                                 name="predictions")(x)
    return keras.Model(inputs, outputs, name="lab5_efficientnetb0")


def load_base_weights(base: keras.Model, path: str | Path) -> None:
    """Load a `.weights.h5` file saved from an EfficientNet-B0 base; one clear error otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"weights file {str(path)!r} does not exist. Use weights='imagenet', None, "
            "'calibrated', or the path of a .weights.h5 file saved from an EfficientNet-B0 base."
        )
    with warnings.catch_warnings(record=True) as caught:  # before failing, Keras warns once
        warnings.simplefilter("always")                   # per layer group the file lacks
        try:
            base.load_weights(str(path))
        except Exception as err:  # noqa: BLE001 - every failure gets the same advice
            reason = str(err).strip().partition("\n")[0]  # Keras lists every layer after it
            raise ValueError(
                f"weights file {str(path)!r} could not be loaded into EfficientNet-B0 "
                f"({type(err).__name__}: {reason}). It must be a .weights.h5 file "
                "saved with `base.save_weights(...)` from "
                "keras.applications.EfficientNetB0(include_top=False)."
            ) from err
    for w in caught:  # it loaded: pass on what Keras said
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def base_of(model: keras.Model) -> keras.Model:
    return model.get_layer(BASE_NAME)


def calibrate_batchnorm(model: keras.Model, dataset: tf.data.Dataset, max_images: int) -> int:
    """Re-estimate the base's BatchNorm moving statistics as the mean of the batch statistics
    over `max_images` training images (an offline stand-in for pretrained statistics).
    Returns images used."""
    base = base_of(model)
    bns = [layer for layer in base.layers if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.momentum = 0.0  # each forward pass leaves that batch's statistics in the layer
    forward = tf.function(lambda images: base(images, training=True))  # one trace, not eager
    totals = [np.zeros((2, *bn.moving_mean.shape), np.float64) for bn in bns]
    seen = steps = 0
    try:
        for images, _ in dataset:
            forward(images)
            for total, bn in zip(totals, bns):
                total += [bn.moving_mean.numpy(), bn.moving_variance.numpy()]
            steps, seen = steps + 1, seen + int(images.shape[0])
            if seen >= max_images:
                break
        for total, bn in zip(totals, bns):
            if steps:
                bn.moving_mean.assign(total[0] / steps)
                bn.moving_variance.assign(total[1] / steps)
    finally:
        for bn, momentum in zip(bns, momenta):
            bn.momentum = momentum
    return seen


def freeze_base(model: keras.Model) -> keras.Model:
    """Only the head trains (the transfer-learning stage)."""
    return unfreeze(model, "none")


def unfreeze(model: keras.Model, mode: str) -> keras.Model:
    """`all`: every non-BatchNorm base layer trains; `top:N`: the last N non-BatchNorm layers;
    `none`: the base is frozen. BatchNorm always stays frozen. Recompiles a compiled model."""
    kind, n = parse_unfreeze(mode)
    base = base_of(model)
    base.trainable = kind != "none"
    if kind != "none":
        candidates = [layer for layer in base.layers
                      if not isinstance(layer, keras.layers.BatchNormalization)]
        chosen = set(map(id, candidates if kind == "all" else candidates[-n:]))
        for layer in base.layers:
            layer.trainable = id(layer) in chosen
    if getattr(model, "optimizer", None) is not None and model.compiled:
        lr = float(np.asarray(model.optimizer.learning_rate))
        compile_model(model, lr, jit_compile=bool(model.jit_compile),
                      steps_per_execution=int(model.steps_per_execution),
                      cfg=getattr(model, "lab5_recipe", None))
    return model


def compile_model(model: keras.Model, learning_rate, jit_compile: bool = False,
                  steps_per_execution: int = 1, cfg: LabConfig | None = None) -> keras.Model:
    """The recipe's optimizer (`learning_rate=` a float or a keras schedule), loss and metrics
    (accuracy, top-5) from `recipe` for `cfg` (None: Adam, sparse cross-entropy, integer
    labels); XLA and the steps run per call as given."""
    model.compile(
        optimizer=recipe.make_optimizer(cfg, learning_rate, model),
        loss=recipe.make_loss(cfg),
        # Metric objects (not strings) are created now, not while tracing `fit`: this keeps
        # Keras from tracing the train step twice (measured 40 s -> 26 s on this CPU).
        metrics=recipe.make_metrics(cfg, int(model.output_shape[-1])),
        jit_compile=jit_compile, steps_per_execution=steps_per_execution,
    )
    model.optimizer.build(model.trainable_variables)
    model.lab5_recipe = cfg  # what `unfreeze` compiles again with
    return model


def with_input_size(model: keras.Model, cfg: LabConfig, size: int) -> keras.Model:
    """The same network rebuilt for `size` x `size` inputs with `model`'s weights (the
    recipe's `test_image_size`): EfficientNet's weights do not depend on the input size, but
    its padding does, so the layers are built again rather than called at another size."""
    if size == int(model.input_shape[1]):
        return model
    resized = build_model(cfg.replace(image_size=size, weights=None),
                          int(model.output_shape[-1]))
    resized.set_weights(model.get_weights())
    return resized


def at_test_time(model: keras.Model, cfg: LabConfig) -> keras.Model:
    """The model as the run is measured after training, on validation and test alike, and as
    `lab5 predict` applies it: rebuilt at `test_image_size` with the same weights, then with
    flip TTA (`recipe.test_time_model`) when `tta="flip"`. The one place both settings act."""
    return recipe.test_time_model(with_input_size(model, cfg, recipe.test_image_size(cfg)), cfg)


def trainable_summary(model: keras.Model) -> dict[str, int]:
    """Trainable and non-trainable parameter counts."""
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    frozen = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
    return {"trainable": trainable, "non_trainable": frozen, "total": trainable + frozen}


def load_model(path: str | Path) -> keras.Model:
    """Load a `.keras` model with safe mode on: nothing in the file is executed as code."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {str(path)!r} does not exist.")
    return keras.models.load_model(path, safe_mode=True, compile=False)


def parameter_table(model: keras.Model, unfreeze_mode: str) -> pd.DataFrame:
    """Trainable and frozen parameters with the base frozen and as fine-tuning unfreezes it
    (the model is left with its base frozen)."""
    rows = {}
    for label, mode in ((_("transfer (base frozen)"), "none"),
                        (_("fine-tuning (unfreeze={mode})").format(mode=unfreeze_mode), unfreeze_mode)):
        counts = trainable_summary(unfreeze(model, mode))
        rows[label] = {**counts, "trainable (%)": round(100 * counts["trainable"] / counts["total"], 2)}
    freeze_base(model)
    return pd.DataFrame.from_dict(rows, orient="index")
