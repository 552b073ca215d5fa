"""Data sources: Food-101 (tfds), an image folder, or a synthetic set.

Every source yields *encoded* images and int32 labels 0..C-1; `pipeline.make_pipeline` turns
them into batches (`load_splits` does both). Folder datasets are checked file by file: damaged
and non-image files are skipped with a warning, or stop the run with `strict_data`.
"""

from __future__ import annotations

import random
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf

from lab5_utils.config import LabConfig
from lab5_utils.photos import DECODABLE, conversion_hint, exif_orientation, image_problem
from lab5_utils.pipeline import decode, make_pipeline

AUTOTUNE = tf.data.AUTOTUNE


@dataclass
class DataInfo:
    """What a split pair holds."""

    class_names: list[str]
    num_train: int
    num_val: int
    source: str
    skipped_files: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


class DataUnavailableError(RuntimeError):
    """The dataset could not be loaded (not downloaded, no network, bad folder)."""


# --- sources: (encoded image bytes, int32 label) -------------------------------------------
def load_encoded(cfg: LabConfig) -> tuple[tf.data.Dataset, tf.data.Dataset, DataInfo]:
    """Unbatched datasets of (encoded image, label) for the train and validation splits."""
    if cfg.dataset == "food101":
        return _food101(cfg)
    if cfg.dataset == "synthetic":
        return _synthetic(cfg)
    return _folder(cfg)


def _food101(cfg: LabConfig) -> tuple[tf.data.Dataset, tf.data.Dataset, DataInfo]:
    import tensorflow_datasets as tfds

    try:
        (train, val), info = tfds.load(
            "food101", split=["train", "validation"], as_supervised=True, with_info=True,
            shuffle_files=True, decoders={"image": tfds.decode.SkipDecoding()},
            read_config=tfds.ReadConfig(shuffle_seed=cfg.seed),
        )
    except Exception as err:  # tfds raises many kinds: network, checksum, disk
        raise DataUnavailableError(
            f"Food-101 could not be loaded with tfds.load('food101') ({type(err).__name__}: "
            f"{err}). It needs about 5 GB downloaded once (set TFDS_DATA_DIR to choose where). "
            "Offline, use `--preset demo` (synthetic data) or `--set dataset=folder:PATH` "
            "with one sub-folder of images per class."
        ) from err
    class_names = list(info.features["label"].names)
    train, val = (d.map(_to_int32_label, num_parallel_calls=AUTOTUNE) for d in (train, val))
    if cfg.train_fraction < 1.0:
        per_class = max(1, round(cfg.train_fraction * 750))  # Food-101: 750 train images a class
        train = _take_per_class(train, len(class_names), per_class).cache()
    return train, val, DataInfo(class_names, _count(train), _count(val), "food101")


def _take_per_class(ds: tf.data.Dataset, num_classes: int, per_class: int) -> tf.data.Dataset:
    """Keep the first `per_class` examples of every class (one pass, in stream order)."""

    def step(counts, example):
        label = example[1]
        keep = counts[label] < per_class
        return tf.tensor_scatter_nd_add(counts, [[label]], [1]), (example, keep)

    counts = tf.zeros([num_classes], tf.int32)
    kept = ds.scan(counts, step).filter(lambda ex, keep: keep)
    return kept.map(lambda ex, keep: ex)


def _to_int32_label(image: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    return image, tf.cast(label, tf.int32)


def _count(ds: tf.data.Dataset) -> int:
    n = int(ds.cardinality())
    if n >= 0:
        return n
    return int(ds.reduce(np.int64(0), lambda c, _: c + 1))


def _folder(cfg: LabConfig) -> tuple[tf.data.Dataset, tf.data.Dataset, DataInfo]:
    class_names, train_files, val_files, skipped = _folder_files(cfg)
    root = cfg.folder
    if skipped:
        warnings.warn(
            f"Skipped {len(skipped)} file(s) in {root} that are not usable images: "
            + ", ".join(skipped[:3]) + (", ..." if len(skipped) > 3 else "")
            + "." + conversion_hint(skipped)
            + " Set strict_data=true (lab5 --strict) to stop on such files instead.",
            stacklevel=2,
        )
    train, val = (_files_dataset(f) for f in (train_files, val_files))
    info = DataInfo(class_names, len(train_files), len(val_files), f"folder:{root}", skipped)
    return train, val, info


def _folder_files(cfg: LabConfig) -> tuple[list[str], list, list, list[str]]:
    """Class names, training and validation (path, label) pairs, and skipped files: from
    `train/` and `validation/` when the folder has both, else a stratified split."""
    root = cfg.folder
    assert root is not None
    if not root.is_dir():
        raise DataUnavailableError(f"dataset folder {str(root)!r} does not exist or is not a folder.")
    if (root / "train").is_dir() and (root / "validation").is_dir():
        class_names, train_files, skipped = list_images(root / "train", cfg.strict_data)
        val_names, val_files, val_skipped = list_images(root / "validation", cfg.strict_data)
        if val_names != class_names:
            raise DataUnavailableError(
                f"{root}/train and {root}/validation have different class folders."
            )
        return class_names, train_files, val_files, skipped + val_skipped
    class_names, files, skipped = list_images(root, cfg.strict_data)
    return class_names, *_stratified_split(files, cfg.validation_split, cfg.seed), skipped


@contextmanager
def naming_undecodable_files(cfg: LabConfig) -> Iterator[None]:
    """With `strict_data` on a folder dataset, TensorFlow's decoding error (which names no file)
    becomes a DataUnavailableError naming the first file that cannot be decoded."""
    try:
        yield
    except tf.errors.InvalidArgumentError as err:
        if not (cfg.is_folder and cfg.strict_data):
            raise
        print("[lab5] an image could not be decoded; decoding each file to find it...", flush=True)
        found = undecodable_file(cfg)
        if found is None:
            raise
        raise DataUnavailableError(
            f"{found}. strict_data is on: remove or replace the file, or set strict_data=false "
            "to skip such files with a warning."
        ) from err


def undecodable_file(cfg: LabConfig) -> str | None:
    """"path: reason" of the first image of a folder dataset TensorFlow cannot decode, or None
    (slow: decodes every file)."""
    _, train_files, val_files, _ = _folder_files(cfg)
    for path, _ in train_files + val_files:
        try:
            decode(tf.io.read_file(path), cfg.image_size)
        except tf.errors.InvalidArgumentError as err:
            reason = re.sub(r"\{\{.*?\}\}|\[Op:.*", "", err.message).strip()  # TF's op names
            return f"{path}: {reason.splitlines()[0] if reason else 'cannot be decoded'}"
    return None


def list_images(
    root: Path, strict: bool = False
) -> tuple[list[str], list[tuple[str, int]], list[str]]:
    """Class names (sub-folders), (path, label) pairs, and the files skipped as "path (reason)":
    non-images, formats TensorFlow cannot decode (HEIC, TIFF, ...) and truncated images
    (`photos.image_problem`). `strict`: the first such file is an error instead."""
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise DataUnavailableError(
            f"dataset folder {str(root)!r} needs at least 2 class sub-folders; found "
            f"{len(classes)} ({', '.join(classes) or 'none'})."
        )
    files: list[tuple[str, int]] = []
    skipped: list[str] = []
    for label, name in enumerate(classes):
        found = 0
        for path in sorted((root / name).rglob("*")):
            if not path.is_file() or path.name.startswith("."):
                continue
            problem = image_problem(path)
            if problem is None:
                files.append((str(path), label))
                found += 1
            elif strict:
                raise DataUnavailableError(
                    f"{path}: {problem}. strict_data is on: remove or replace the file, or set "
                    "strict_data=false to skip such files with a warning."
                )
            else:
                skipped.append(f"{path} ({problem})")
        if not found:
            raise DataUnavailableError(
                f"class folder {str(root / name)!r} holds no usable images ({DECODABLE})."
            )
    return classes, files, skipped


def _stratified_split(
    files: list[tuple[str, int]], fraction: float, seed: int
) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """Per class, a seeded shuffle and the last `fraction` of files for validation."""
    rng = random.Random(seed)
    train, val = [], []
    for label in sorted({lab for _, lab in files}):
        items = [f for f in files if f[1] == label]
        rng.shuffle(items)
        n_val = max(1, round(len(items) * fraction)) if len(items) > 1 else 0
        val += items[len(items) - n_val:]
        train += items[: len(items) - n_val]
    return train, val


def _files_dataset(files: list[tuple[str, int]]) -> tf.data.Dataset:
    """(encoded, label, EXIF orientation) of image files: the orientation is read now (a JPEG
    header, ~0.1 ms a file), the pipeline turns the small decoded image upright."""
    paths = tf.constant([p for p, _ in files], tf.string)
    labels = tf.constant([lab for _, lab in files], tf.int32)
    orientations = tf.constant([exif_orientation(p) for p, _ in files], tf.int32)
    ds = tf.data.Dataset.from_tensor_slices((paths, labels, orientations))
    return ds.map(lambda p, y, o: (tf.io.read_file(p), y, o), num_parallel_calls=AUTOTUNE)


def _synthetic(cfg: LabConfig) -> tuple[tf.data.Dataset, tf.data.Dataset, DataInfo]:
    names = [f"class_{i:02d}_{_SHAPES[i % len(_SHAPES)]}" for i in range(cfg.num_classes)]
    train = synthetic_images(cfg.num_classes, cfg.synthetic_train_per_class, cfg.seed)
    val = synthetic_images(cfg.num_classes, cfg.synthetic_val_per_class, cfg.seed + 1)
    datasets = [tf.data.Dataset.from_tensor_slices(split) for split in (train, val)]
    return datasets[0], datasets[1], DataInfo(names, len(train[1]), len(val[1]), "synthetic")


_SHAPES = ("disc", "square", "stripes", "ring")


def synthetic_images(num_classes: int, per_class: int, seed: int) -> tuple[list[bytes], np.ndarray]:
    """Deterministic, learnable JPEGs: the class sets hue, shape and texture; noise varies the rest."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for i in range(num_classes * per_class):
        label = i % num_classes
        h, w = (int(v) for v in rng.integers(72, 129, size=2))
        yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
        cy, cx, r = rng.uniform(0.4, 0.6), rng.uniform(0.4, 0.6), rng.uniform(0.25, 0.38)
        shape = _SHAPES[label % len(_SHAPES)]
        if shape == "disc":
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
        elif shape == "square":
            mask = (abs(yy - cy) < r) & (abs(xx - cx) < r)
        elif shape == "stripes":
            mask = np.sin((xx + yy * (label % 3)) * (10 + label) + rng.uniform(0, 6)) > 0
        else:
            d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
            mask = (d < r) & (d > r * 0.55)
        hue = label / num_classes
        colour = 255 * np.array([_hue_channel(hue + k / 3) for k in range(3)])
        background = rng.uniform(10, 60, size=3)
        img = np.where(mask[..., None], colour, background) + rng.normal(0, 18, size=(h, w, 3))
        images.append(tf.io.encode_jpeg(np.clip(img, 0, 255).astype(np.uint8), quality=90).numpy())
        labels.append(label)
    return images, np.array(labels, np.int32)


def _hue_channel(x: float) -> float:
    return float(np.clip(abs((x % 1.0) * 6 - 3) - 1, 0, 1))


def load_splits(cfg: LabConfig) -> tuple[tf.data.Dataset, tf.data.Dataset, DataInfo]:
    """Batched, prefetched train and validation datasets plus their `DataInfo`."""
    train, val, info = load_encoded(cfg)
    return (
        make_pipeline(train, cfg, training=True, num_examples=info.num_train),
        make_pipeline(val, cfg, training=False, num_examples=info.num_val),
        info,
    )
