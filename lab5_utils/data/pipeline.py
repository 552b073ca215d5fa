"""The input pipeline: encoded images -> batched uint8 images, decoded as little as possible.

One path for training and evaluation: decode (only the crop, at a reduced DCT scale, when `crop`
augmentation is on), augment (training only), resize to `image_size`, batch and prefetch. Pixels
stay uint8 0..255: Keras EfficientNet rescales and normalizes inside the model, so normalizing here
would do it twice (the original lab's bug). Optional caches keep decoded pixels so later epochs
skip the JPEG decoding.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import tensorflow as tf

from lab5_utils.config import MIXING, LabConfig
from lab5_utils.data.augment import (
    batch_augmenter,
    batch_mixer,
    per_image_augmenter,
    pipeline_augmentations,
)

AUTOTUNE = tf.data.AUTOTUNE


# --- decoding -----------------------------------------------------------------------
# A JPEG's CPU cost is mostly entropy decoding, then IDCT, colour conversion and the resize. So:
# decode only the crop (`decode_and_crop_jpeg`: rows below it are never decoded), at the smallest
# DCT scale (1, 1/2, 1/4, 1/8) that still leaves `size` pixels on each side (never upscale a
# reduced decode), resize (the only float work) and flip the small resized image.
JPEG_SCALES = (1, 2, 4, 8)
CROP_SCALE = (0.35, 1.0)  # LabConfig.crop_scale's default: the crop's share of the image area


def decode(
    encoded: tf.Tensor, size: int | None, crop_seed: tf.Tensor | None = None,
    orientation: tf.Tensor | int | None = None, crop_scale: tuple[float, float] = CROP_SCALE,
) -> tf.Tensor:
    """Encoded JPEG/PNG/GIF/BMP/WebP -> uint8 [h, w, 3], ready to resize to `size`: JPEGs are
    decoded at the smallest scale that keeps >= `size` px a side (`size=None`: full scale).
    With `crop_seed`, a random crop (`crop_scale` of the area, aspect 3/4-4/3) that, for JPEGs,
    is decoded straight from the file. `orientation` (EXIF, 1-8) turns the small decoded image
    upright, as photo viewers show it; a crop taken as stored is a crop of the upright photo."""

    def jpeg() -> tf.Tensor:
        shape = tf.io.extract_jpeg_shape(encoded)
        if crop_seed is None:
            return _decode_jpeg_scaled(encoded, tf.reduce_min(shape[:2]), size, None)
        box = _crop_box(shape, crop_seed, crop_scale)
        return _decode_jpeg_scaled(encoded, tf.reduce_min(box[2:]), size, box)

    def other() -> tf.Tensor:
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
        if crop_seed is not None:
            y, x, h, w = tf.unstack(_crop_box(tf.shape(image), crop_seed, crop_scale))
            image = image[y : y + h, x : x + w]
        return image

    image = tf.cond(tf.io.is_jpeg(encoded), jpeg, other)
    if orientation is not None:
        image = orient(image, orientation)
    image.set_shape([None, None, 3])
    return image


def orient(image: tf.Tensor, orientation: tf.Tensor | int) -> tf.Tensor:
    """An image as stored -> as shown, for EXIF orientation 1-8 (other values: as stored).
    E.g. 6 (a phone held upright, stored sideways) turns it 90 degrees clockwise. Plain reverses
    and transposes: `tf.image`'s flips and turns add shape assertions, stateful ops that make
    tf.data run the whole pipeline serially under op determinism (`seeding`)."""
    def swap(x):
        return tf.transpose(x, [1, 0, 2])

    cases = [
        lambda: image,  # 0, or a value outside 1-8
        lambda: image,  # 1: stored upright
        lambda: tf.reverse(image, [1]),  # 2: mirrored
        lambda: tf.reverse(image, [0, 1]),  # 3: upside down
        lambda: tf.reverse(image, [0]),  # 4: mirrored upside down
        lambda: swap(image),  # 5: mirrored along the main diagonal
        lambda: tf.reverse(swap(image), [1]),  # 6: a quarter turn clockwise
        lambda: tf.reverse(swap(image), [0, 1]),  # 7: along the other diagonal
        lambda: tf.reverse(swap(image), [0]),  # 8: a quarter turn counter-clockwise
    ]
    index = tf.cast(orientation, tf.int32)
    index = tf.where((index >= 1) & (index <= 8), index, 0)
    return tf.switch_case(index, cases)


def jpeg_scale(side: tf.Tensor, size: int) -> tf.Tensor:
    """Index into `JPEG_SCALES` of the largest scale divisor r with `side // r >= size`."""
    fits = [tf.cast(side // r >= size, tf.int32) for r in JPEG_SCALES[1:]]
    return tf.add_n(fits)  # the conditions are nested: r=8 fits => r=4 and r=2 fit


def _decode_jpeg_scaled(
    encoded: tf.Tensor, side: tf.Tensor, size: int | None, box: tf.Tensor | None
) -> tf.Tensor:
    """Decode (the `box` [y, x, h, w] of) a JPEG at 1/r scale, r chosen from the shorter `side`
    (`size=None`: r = 1)."""

    def at(r: int):
        if box is None:
            return lambda: tf.io.decode_jpeg(encoded, channels=3, ratio=r)
        return lambda: tf.io.decode_and_crop_jpeg(encoded, box // r, channels=3, ratio=r)

    if size is None:
        return at(1)()
    return tf.switch_case(jpeg_scale(side, size), [at(r) for r in JPEG_SCALES])


def _crop_box(shape: tf.Tensor, seed: tf.Tensor,
              crop_scale: tuple[float, float] = CROP_SCALE) -> tf.Tensor:
    """[y, x, h, w] of a random crop of an image of `shape` covering `crop_scale` of its area
    (stateless: same seed, same box)."""
    begin, extent, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape, tf.zeros([0, 0, 4]), seed=seed, min_object_covered=0.0,
        aspect_ratio_range=(3 / 4, 4 / 3), area_range=tuple(crop_scale), max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    return tf.stack([begin[0], begin[1], extent[0], extent[1]])


def cache_side(image_size: int) -> int:
    """Shorter side of the training images kept in the cache: 8/7 of the input size (256 px for
    224), the margin random crops work in."""
    return -(-image_size * 8 // 7)


def shrink(encoded: tf.Tensor, side: int, orientation: tf.Tensor | int | None = None) -> tf.Tensor:
    """Encoded image -> uint8 upright, with the shorter side at most `side`, aspect kept. JPEGs
    are decoded at the DCT scale that leaves less than 2x to shrink, so plain bilinear suffices
    (an antialiased resize would cost 1.7x as much for the whole first epoch)."""
    image = decode(encoded, side, orientation=orientation)
    shape = tf.shape(image)[:2]
    short = tf.reduce_min(shape)

    def resized() -> tf.Tensor:
        return _to_uint8(tf.image.resize(image, shape * side // short))

    return tf.cond(short > side, resized, lambda: image)


def model_input(encoded: tf.Tensor, size: int, orientation: tf.Tensor | int | None = None) -> tf.Tensor:
    """Encoded image -> the uint8 [size, size, 3] a model sees in validation (and `predict`):
    decoded, upright, resized (the whole image, squeezed to a square)."""
    return _to_uint8(tf.image.resize(decode(encoded, size, orientation=orientation), [size, size]))


def _to_uint8(image: tf.Tensor) -> tf.Tensor:
    return tf.cast(tf.round(image), tf.uint8)  # resizing 0..255 pixels stays inside 0..255


def make_pipeline(
    ds: tf.data.Dataset, cfg: LabConfig, training: bool, num_examples: int | None = None,
    one_hot_depth: int | None = None,
) -> tf.data.Dataset:
    """Encoded (image, label) or, from folders, (image, label, EXIF orientation) -> batched
    (uint8 0..255 upright images, int32 labels), prefetched. With `one_hot_depth` (the number
    of classes; `recipe.one_hot` says when) labels are float32 one-hot vectors instead.

    uint8 batches are a quarter the size of float32 ones; Keras casts them to the model's
    float32 input inside the compiled step. Training: shuffle, random crop + flip + RandAugment
    (per image, seeded per element from `cfg.seed`, fresh every epoch), batch-level Keras
    augmentations, then mixup/cutmix (per batch, seeded alike); with `cache_train`, images are
    decoded once (shorter side `cache_side`) and later epochs only crop, resize and augment.
    With the heavy augmentations on the device (`augment.placement`), only crop and flip are
    applied here; `augment.attach` runs the rest in the training step.
    Validation: deterministic, decoded once when `cache_validation` is on."""
    augment = pipeline_augmentations(cfg, training)
    crop, flip = "crop" in augment, "flip" in augment
    randaugment = per_image_augmenter(augment, cfg)
    mixer = batch_mixer(augment, cfg)
    if training and set(MIXING) & set(cfg.augmentations) and not one_hot_depth:
        raise ValueError(f"augmentations={cfg.augmentations}: mixup and cutmix mix labels, so "
                         "make_pipeline needs one_hot_depth (the number of classes)")
    size, count = cfg.image_size, num_examples or int(ds.cardinality())
    # What the cache holds: the image shrunk for later crops (4:3 assumed), or the final image
    side = cache_side(size) if crop else size
    image_bytes = side * (side * 4 // 3 if crop else side) * 3
    setting, field_name = (cfg.cache_train, "cache_train") if training else (
        cfg.cache_validation, "cache_validation")
    buffer = min(cfg.shuffle_buffer, count if count > 0 else cfg.shuffle_buffer)
    held = count + buffer if training and count >= 0 else count  # the shuffle buffer, after the cache
    cache = _cache_target(setting, field_name, held, image_bytes, cfg)

    ds = ds.map(_with_orientation)  # ((encoded, orientation), label) from here on
    if cache is not None:
        stored = (lambda e, y: (shrink(e[0], side, e[1]), y)) if crop else (
            lambda e, y: (model_input(e[0], size, e[1]), y))
        ds = _skip_undecodable(ds.map(stored, num_parallel_calls=AUTOTUNE), cfg).cache(cache)
    if training:
        ds = ds.shuffle(buffer, seed=cfg.seed, reshuffle_each_iteration=True)

    def prepare(image, label, seed=None):
        crop_seed = flip_seed = None
        if seed is not None:
            crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split([seed, 0], 2))
        if cache is None:  # `image` is (encoded, orientation): decode only the crop, reduced
            image = decode(image[0], size, crop_seed if crop else None, image[1], cfg.crop_scale)
        elif crop:
            y, x, h, w = tf.unstack(_crop_box(tf.shape(image), crop_seed, cfg.crop_scale))
            image = image[y : y + h, x : x + w]
        if cache is None or crop:
            image = _to_uint8(tf.image.resize(image, [size, size]))
        if flip:  # on the small resized image
            image = tf.image.stateless_random_flip_left_right(image, flip_seed)
        if randaugment is not None:  # its own seed, so crops and flips stay as without it
            seed_pair = tf.random.experimental.stateless_fold_in([seed, 0], 1)
            image = _to_uint8(tf.clip_by_value(randaugment.seeded(image, seed_pair), 0, 255))
        return image, label

    if crop or flip or randaugment is not None:
        # One random int64 per element from `cfg.seed`, new every epoch: stateless crops,
        # flips and RandAugment are then reproducible, whatever order the parallel map runs.
        seeds = tf.data.Dataset.random(cfg.seed, rerandomize_each_iteration=True)
        ds = tf.data.Dataset.zip(ds, seeds).map(lambda example, seed: (*example, seed))
    if cache is None or crop or flip or randaugment is not None:
        ds = ds.map(prepare, num_parallel_calls=AUTOTUNE,
                    deterministic=cfg.deterministic or not training)
        if cache is None:
            ds = _skip_undecodable(ds, cfg)
    ds = ds.batch(cfg.batch_size)
    augmenter = batch_augmenter(augment, cfg.seed)
    if augmenter is not None:
        ds = ds.map(lambda x, y: (augmenter(x, training=True), y), num_parallel_calls=AUTOTUNE)
    if one_hot_depth:
        ds = ds.map(lambda x, y: (x, tf.one_hot(y, one_hot_depth)))
    if mixer is not None:  # last: the labels are mixed as the pixels are
        seeds = tf.data.Dataset.random(cfg.seed + 1, rerandomize_each_iteration=True)
        ds = tf.data.Dataset.zip(ds, seeds).map(
            lambda batch, seed: _mixed(mixer, *batch, seed), num_parallel_calls=AUTOTUNE,
            deterministic=cfg.deterministic)
    # deterministic=False: training batches may come in the order they are ready
    return ds.prefetch(AUTOTUNE).with_options(_options(cfg.deterministic or not training))


def _mixed(mixer, images: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor):
    images, labels = mixer(images, labels, seed)
    return _to_uint8(tf.clip_by_value(images, 0, 255)), labels


def _with_orientation(
    encoded: tf.Tensor, label: tf.Tensor, orientation: tf.Tensor | int = 1
) -> tuple[tuple[tf.Tensor, tf.Tensor], tf.Tensor]:
    """Folder sources carry each JPEG's EXIF orientation; the others' images are upright (1)."""
    return (encoded, tf.cast(orientation, tf.int32)), label


def _skip_undecodable(ds: tf.data.Dataset, cfg: LabConfig) -> tf.data.Dataset:
    """Folder datasets: drop (and log) images whose decoding fails, unless `strict_data`."""
    if cfg.is_folder and not cfg.strict_data:
        return ds.ignore_errors(log_warning=True)
    return ds


def _options(deterministic: bool = True) -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = deterministic  # every map's order (op determinism forces it on)
    # Per-image ops are small: each runs on one thread; the parallel map is the parallelism.
    options.threading.max_intra_op_parallelism = 1
    # Fuse consecutive maps (e.g. a source's `read_file` and `prepare`): fewer thread hand-offs
    options.experimental_optimization.map_fusion = True
    # Under tf.distribute, shard by element (DATA), said explicitly rather than left to AUTO:
    # it works for every source (tensors in memory, files read in a map, tfds' few shards) and
    # gives each input pipeline its own images, so none is seen twice per epoch.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return options


def _cache_target(
    setting: str, name: str, num_examples: int, image_bytes: int, cfg: LabConfig
) -> str | None:
    """`ds.cache` argument: None (off), "" (memory) or a file prefix. "memory" and "auto" need
    the cache to fit in half the available RAM: else "memory" warns and "auto" says so; both
    then run without a cache. A file cache's name carries a fingerprint of what it holds."""
    if setting in ("", "off"):
        return None
    if setting not in ("memory", "auto"):
        return _cache_file(Path(setting).expanduser(), name, cfg)
    import psutil

    needed = num_examples * image_bytes  # uint8 pixels; num_examples < 0: unknown
    available = psutil.virtual_memory().available
    if 0 <= needed <= available // 2:
        return ""
    size = f"{needed / 2**30:.1f} GiB" if num_examples >= 0 else "an unknown size"
    message = (
        f"{name}={setting!r}: no cache, it would take {size}, more than half of the "
        f"{available / 2**30:.1f} GiB available; every epoch decodes the images again. "
        f"Set {name} to a file path (on a disk with room) to cache on disk."
    )
    if setting == "memory":
        warnings.warn(message, stacklevel=3)
    else:
        print(message)
    return None


def _cache_file(prefix: Path, name: str, cfg: LabConfig) -> str:
    """`<prefix>-<fingerprint>`: a cache of other data or another image size is never reused.
    What a killed run left is removed (one process uses a cache at a time): the lock file
    tf.data would refuse and the partly written `*.tempstate*` shard (as large as the cache)."""
    import hashlib

    key = [cfg.dataset, cfg.image_size, cfg.seed, cfg.validation_split, cfg.train_fraction,
           "crop" in cfg.augmentations, name, cfg.synthetic_train_per_class,
           cfg.synthetic_val_per_class, cfg.num_classes]
    target = prefix.with_name(f"{prefix.name}-{hashlib.sha1(repr(key).encode()).hexdigest()[:10]}")
    target.parent.mkdir(parents=True, exist_ok=True)
    for pattern in ("*.lockfile", "*.tempstate*"):
        for stale in target.parent.glob(target.name + pattern):
            stale.unlink()
    return str(target)
