"""Data exploration for notebook 01: class counts, image sizes, samples, augmentation preview."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import tensorflow as tf

from lab5_utils.config import MIXING, LabConfig
from lab5_utils.data.pipeline import decode, make_pipeline
from lab5_utils.i18n import N_, _
from lab5_utils.tables import split_rule_text


def scan_examples(ds: Any, class_names: Sequence[str], max_scan: int) -> tuple[pd.Series, pd.DataFrame]:
    """Images per class and (width, height), as shown, of the first `max_scan` encoded examples."""

    def shape(encoded, label, orientation=1):
        dims = tf.cond(tf.io.is_jpeg(encoded), lambda: tf.io.extract_jpeg_shape(encoded)[:2],
                       lambda: tf.shape(tf.io.decode_image(encoded, 3, expand_animations=False))[:2])
        return tf.where(orientation >= 5, dims[::-1], dims), label  # 5-8: stored sideways

    rows = [(int(hw[1]), int(hw[0]), int(y))
            for hw, y in ds.take(max_scan).map(shape).as_numpy_iterator()]
    sizes = pd.DataFrame(rows, columns=["width", "height", "label"])
    counts = sizes["label"].value_counts().reindex(range(len(class_names)), fill_value=0)
    counts.index = list(class_names)
    return counts, sizes


# data sources and weights, as shown
_WORDS = (N_("synthetic"), N_("folder"), N_("food101"), N_("imagenet"), N_("calibrated"),
          N_("None"))


def data_summary(cfg: LabConfig, info: Any, scanned: int) -> pd.DataFrame:
    """What the dataset holds and how the model sees it."""
    rows = {
        _("source"): _(info.source), _("classes"): info.num_classes,
        _("training images (fit)"): info.num_train,
        _("validation images (choose epochs and learning rates)"): info.num_val,
        _("test images (measured once per finished run)"): info.num_test,
        _("how validation and test were chosen"): split_rule_text(info.split_rule),
        _("examples scanned for the charts"): scanned,
        _("model input"): _("{size} x {size} px, uint8 values 0..255").format(size=cfg.image_size),
        _("augmentations (training only)"): ", ".join(map(_, cfg.augmentations)) or _("none"),
        _("weights"): _(str(cfg.weights)),
    }
    return pd.DataFrame({_("value"): [str(v) for v in rows.values()]}, index=list(rows))


def sample_images(ds: Any, class_names: Sequence[str], n: int = 12) -> tuple[list, list[str]]:
    """The first `n` images decoded at their own size (upright), and their class names."""
    images, titles = [], []
    for encoded, label, *orientation in ds.take(n).as_numpy_iterator():
        images.append(decode(encoded, None, orientation=(orientation or [1])[0]).numpy())
        titles.append(str(class_names[int(label)]))
    return images, titles


def augmentation_examples(cfg: LabConfig, ds: Any, n: int = 5) -> tuple[Any, list]:
    """The first image as validation sees it, and `n` versions of it from the training pipeline
    (every augmentation of `cfg`). With mixup or cutmix on, which mix the images of a batch,
    the `n` are instead the first `n` training images as one augmented, mixed batch. All of
    them applied in the pipeline, whatever `augment_on` says: the same operations and strengths
    as in the training step, seeded otherwise."""
    cfg = cfg.replace(augment_on="pipeline")
    first = ds.take(1)
    unmixed = [a for a in cfg.augmentations if a not in MIXING]  # validation ignores them all
    original, _label = next(iter(make_pipeline(
        first, cfg.replace(batch_size=1, augmentations=unmixed), False, 1)))
    mixing = unmixed != cfg.augmentations
    shown = ds.take(n) if mixing else first.repeat(n)
    # the labels are not shown: any depth above the largest label will do for mixing
    depth = 1 + max(int(example[1]) for example in shown.as_numpy_iterator()) if mixing else None
    batch = make_pipeline(shown, cfg.replace(batch_size=n), True, n, one_hot_depth=depth)
    images, _labels = next(iter(batch))
    return original.numpy()[0], list(images.numpy())
