"""The training augmentations built from Keras' preprocessing layers, for both places they can
run (`cfg.augment_on`): the tf.data map of `pipeline`, or a stage inside the compiled training
step (`attach`, on the GPU when there is one): the batch-level rotation/zoom/contrast,
RandAugment per image, and mixup/CutMix per batch. Flip and crop always stay in the pipeline
(the crop is decoded straight from the JPEG).

RandAugment, MixUp and CutMix draw every random number from a seed given with each call
(`seeded`): the pipeline passes a per-element (per-batch) seed from `cfg.seed`, so they run in
a parallel tf.data map and still repeat exactly; in the training step the seed comes from
`cfg.seed` and the optimizer's step counter, which a resumed run restores. Written by hand,
because Keras lacks them: the per-call seeds, and RandAugment drawing its ops per image in a
batch (Keras' layer draws them once per call, so on a batch, once per batch): the step maps
the per-image layer over the batch (`tf.map_fn`), one seed per image.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from lab5_utils.config import HEAVY_AUGMENTATIONS, LabConfig


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

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._call_seeds = _CallSeeds()

    def _get_seed_generator(self, backend=None):  # where Keras' layers take their seeds
        return self._call_seeds

    def seeded(self, data, seed: tf.Tensor):
        self._call_seeds.start(seed)
        return self(data, training=True)


class Equalization(keras.layers.Equalization):
    """Keras' Equalization with each histogram counted as an integer segment sum, the same
    counts as its `bincount`: TensorFlow's GPU bincount refuses to run under op determinism
    (`deterministic`, the default), integer segment sums are deterministic there."""

    def _custom_histogram_fixed_width(self, values, value_range, nbins):
        low, high = (tf.cast(v, tf.float32) for v in value_range)
        bins = tf.cast((tf.cast(values, tf.float32) - low) * (nbins - 1) / (high - low), tf.int32)
        bins = tf.reshape(tf.clip_by_value(bins, 0, nbins - 1), [-1])
        return tf.math.unsorted_segment_sum(tf.ones_like(bins), bins, nbins)


class RandAugment(_Seeded, keras.layers.RandAugment):
    """Keras' RandAugment that computes only the `num_ops` operations it picked for an image
    (`tf.switch_case`); Keras computes all eleven and selects, 5x slower per image here.
    Keras' posterization and solarization get stronger as `factor` gets smaller, so they are
    left out (see README, "The fine-tuning recipe")."""

    _AUGMENT_LAYERS = [name for name in keras.layers.RandAugment._AUGMENT_LAYERS
                       if name not in ("random_posterization", "solarization")]

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.equalization = Equalization(value_range=self.value_range,
                                         data_format=self.data_format, dtype=self.dtype_policy)

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
    pass


class CutMix(_Seeded, keras.layers.CutMix):
    pass


class RandomRotation(_Seeded, keras.layers.RandomRotation):
    pass


class RandomZoom(_Seeded, keras.layers.RandomZoom):
    pass


class RandomContrast(_Seeded, keras.layers.RandomContrast):
    pass


# name: (Keras' layer, the same seeded per call, its factor)
_BATCH_LAYERS = {"rotation": (keras.layers.RandomRotation, RandomRotation, 0.08),
                 "zoom": (keras.layers.RandomZoom, RandomZoom, 0.15),
                 "contrast": (keras.layers.RandomContrast, RandomContrast, 0.25)}


def batch_augmenter(augmentations: list[str], seed: int) -> keras.Sequential | None:
    """Keras preprocessing layers for the batch-level augmentations (rotation, zoom, contrast)."""
    chosen = [keras_layer(factor, seed=seed) for name, (keras_layer, _, factor)
              in _BATCH_LAYERS.items() if name in augmentations]
    return keras.Sequential(chosen, name="augment") if chosen else None


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


# --- where the heavy augmentations run -------------------------------------------------------
def heavy(augmentations: list[str]) -> list[str]:
    """The augmentations that may run in the training step (all but flip and crop)."""
    return [a for a in augmentations if a in HEAVY_AUGMENTATIONS]


def placement(cfg: LabConfig) -> str:
    """Where `cfg`'s heavy augmentations run: "pipeline" or "device". Nothing heavy: "pipeline"
    (nothing to move). `augment_on="auto"` left unresolved (`speed.choose_augment_on` resolves
    it for a run): "device" with a GPU, else "pipeline"."""
    if not heavy(cfg.augmentations):
        return "pipeline"
    if cfg.augment_on != "auto":
        return cfg.augment_on
    return "device" if tf.config.list_physical_devices("GPU") else "pipeline"


def pipeline_augmentations(cfg: LabConfig, training: bool) -> list[str]:
    """The augmentations the tf.data map applies: none in inference, flip and crop only when
    the heavy ones run on the device."""
    if not training:
        return []
    if placement(cfg) == "device":
        return [a for a in cfg.augmentations if a not in HEAVY_AUGMENTATIONS]
    return list(cfg.augmentations)


class DeviceAugment:
    """`cfg`'s heavy augmentations as one function of a batch, for the training step:
    `(uint8 or float images, labels, seed [2] int64) -> (float32 0..255 images, labels)`.
    RandAugment per image (its own seed each), then rotation/zoom/contrast per batch, then
    mixup/CutMix (labels one-hot), the order of the pipeline."""

    def __init__(self, cfg: LabConfig) -> None:
        chosen = heavy(cfg.augmentations)
        self.randaugment = per_image_augmenter(chosen, cfg)
        self.batch_layers = [seeded(factor, seed=cfg.seed, dtype="float32") for name, (
            _, seeded, factor) in _BATCH_LAYERS.items() if name in chosen]
        self.mixer = batch_mixer(chosen, cfg)

    def __call__(self, images: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor):
        images = tf.cast(images, tf.float32)
        if self.randaugment is not None:
            count = tf.shape(images)[:1]
            seeds = tf.random.stateless_uniform(tf.concat([count, [2]], 0), _fold(seed, 1),
                                                minval=None, maxval=None, dtype=tf.int64)
            images = tf.map_fn(lambda pair: tf.clip_by_value(
                self.randaugment.seeded(pair[0], pair[1]), 0, 255), (images, seeds),
                fn_output_signature=tf.float32)
        for i, layer in enumerate(self.batch_layers):
            images = tf.clip_by_value(layer.seeded(images, _fold(seed, 2 + i)), 0, 255)
        if self.mixer is not None:
            mix_seed = tf.random.stateless_uniform([], _fold(seed, 9), minval=None, maxval=None,
                                                   dtype=tf.int64)
            images, labels = self.mixer(images, labels, mix_seed)
            images = tf.clip_by_value(images, 0, 255)
        return images, labels


def _fold(seed: tf.Tensor, data: int | tf.Tensor) -> tf.Tensor:
    return tf.random.experimental.stateless_fold_in(seed, tf.cast(data, tf.int64))


def attach(model: keras.Model, cfg: LabConfig, salt: int = 0) -> DeviceAugment | None:
    """With the heavy augmentations on the device (`placement`), run them inside `model`'s
    training step, before its forward pass; validation, `predict` and the saved model never
    see them (the step is replaced on this model object only, not in its saved config). The
    seed of a step is `cfg.seed`, `salt` (e.g. the stage) and the optimizer's step counter,
    and under tf.distribute the replica: a rerun, or a resumed run, repeats it. Returns the
    stage, or None when nothing moves."""
    if placement(cfg) != "device":
        return None
    stage = DeviceAugment(cfg)
    plain = type(model).train_step.__get__(model)  # the class's step, never an earlier wrapper
    base = tf.constant([cfg.seed, salt], tf.int64)

    def train_step(data):
        images, labels, *rest = data
        seed = _fold(base, model.optimizer.iterations)
        replica = tf.distribute.get_replica_context()
        if replica is not None and replica.num_replicas_in_sync > 1:
            seed = _fold(seed, replica.replica_id_in_sync_group)
        images, labels = stage(images, labels, seed)
        return plain((images, labels, *rest))

    model.train_step = train_step
    model.train_function = None  # made again, with this step
    return stage


def detach(model: keras.Model) -> None:
    """Undo `attach`: the model's own training step again."""
    vars(model).pop("train_step", None)
    model.train_function = None
