"""The training augmentations built from Keras' preprocessing layers, for `pipeline`: the
batch-level rotation/zoom/contrast, RandAugment per image, and mixup/CutMix per batch.

RandAugment, MixUp and CutMix draw every random number from a seed given with each call
(`seeded`): the pipeline passes a per-element (per-batch) seed from `cfg.seed`, so they run in
a parallel tf.data map and still repeat exactly.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from lab5_utils.config import LabConfig


def batch_augmenter(augmentations: list[str], seed: int) -> keras.Sequential | None:
    """Keras preprocessing layers for the batch-level augmentations (rotation, zoom, contrast)."""
    layers = {
        "rotation": lambda: keras.layers.RandomRotation(0.08, seed=seed),
        "zoom": lambda: keras.layers.RandomZoom(0.15, seed=seed),
        "contrast": lambda: keras.layers.RandomContrast(0.25, seed=seed),
    }
    chosen = [layers[a]() for a in augmentations if a in layers]
    return keras.Sequential(chosen, name="augment") if chosen else None


# --- RandAugment, mixup and CutMix: Keras' layers, seeded per call -------------------------
class _CallSeeds(keras.random.SeedGenerator):
    """A SeedGenerator whose seeds come from one seed tensor given with each call (`start`),
    not from a variable: Keras' own generator is a variable that the calls of a parallel
    tf.data map advance in whatever order they run, so their draws would not repeat."""

    def __init__(self) -> None:
        super().__init__(seed=0)
        self._seed: tf.Tensor | None = None
        self._draws = 0

    def start(self, seed: tf.Tensor) -> None:
        self._seed, self._draws = seed, 0

    def next(self, ordered: bool = True) -> tf.Tensor:
        self._draws += 1  # counted while tracing: each draw of a call gets its own seed
        return tf.random.experimental.stateless_fold_in(self._seed, self._draws)


class _Seeded:
    """Mixin for a Keras preprocessing layer: `seeded(data, seed)` runs it in training mode
    with every random draw derived from `seed` ([2] int64), stateless and reproducible."""

    def _init_seeds(self) -> None:
        self._call_seeds = _CallSeeds()

    def _get_seed_generator(self, backend=None):  # where Keras' layers take their seeds
        return self._call_seeds

    def seeded(self, data, seed: tf.Tensor):
        self._call_seeds.start(seed)
        return self(data, training=True)


class RandAugment(_Seeded, keras.layers.RandAugment):
    """Keras' RandAugment that computes only the `num_ops` operations it picked for an image
    (`tf.switch_case`); Keras computes all eleven and selects, 5x slower per image here.
    Keras' posterization and solarization get stronger as `factor` gets smaller, so they are
    left out (see README, "The fine-tuning recipe")."""

    _AUGMENT_LAYERS = [name for name in keras.layers.RandAugment._AUGMENT_LAYERS
                       if name not in ("random_posterization", "solarization")]

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._init_seeds()

    def transform_images(self, images, transformation, training=True):
        images = self.backend.cast(images, self.compute_dtype)
        if not training:
            return images
        transforms = transformation["transforms"]
        for i in range(self.num_ops):
            branches = [lambda name=name, x=images: getattr(self, name).transform_images(
                x, transforms[name]) for name in self._AUGMENT_LAYERS]
            images = tf.switch_case(transformation["layer_idxes"][i], branches)
        return images


class MixUp(_Seeded, keras.layers.MixUp):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._init_seeds()


class CutMix(_Seeded, keras.layers.CutMix):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._init_seeds()


def per_image_augmenter(augmentations: list[str], cfg: LabConfig) -> RandAugment | None:
    """RandAugment on uint8 0..255 images (`randaugment_ops`, `randaugment_factor`), or None."""
    if "randaugment" not in augmentations:
        return None
    return RandAugment(value_range=(0, 255), num_ops=cfg.randaugment_ops,
                       factor=cfg.randaugment_factor, seed=cfg.seed, dtype="float32")


def batch_mixer(augmentations: list[str], cfg: LabConfig):
    """`mix(images, one_hot_labels, seed)` for a batch -> float32 (images, labels): mixup,
    cutmix, or (both on) one of the two chosen per batch. None when neither is on."""
    layers = []
    if "mixup" in augmentations:
        layers.append(MixUp(alpha=cfg.mixup_alpha, seed=cfg.seed, dtype="float32"))
    if "cutmix" in augmentations:  # factor (a, a): alpha is a, as in the CutMix paper
        layers.append(CutMix(factor=(cfg.cutmix_alpha, cfg.cutmix_alpha), seed=cfg.seed,
                             dtype="float32"))
    if not layers:
        return None

    def mix(images, labels, seed):
        pair = tf.random.experimental.stateless_fold_in([seed, 0], 1)
        branches = [lambda layer=layer: _mixed(layer, images, labels, pair) for layer in layers]
        pick = tf.random.stateless_uniform([], pair, 0, len(layers), dtype=tf.int32)
        return tf.switch_case(pick, branches) if len(layers) > 1 else branches[0]()

    return mix


def _mixed(layer, images: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor):
    out = layer.seeded({"images": images, "labels": labels}, seed)
    return out["images"], tf.cast(out["labels"], tf.float32)
