"""Data sources: Food-101 (tfds, or its official folder or archive: `food101_files`), an image
folder, or a synthetic set, each in three splits.

*train* fits the model; *validation* makes every choice (the best epoch, the sweep's best learning
rate); *test* is measured once per finished run and chooses nothing. Every source yields
*encoded* images and int32 labels 0..C-1; `pipeline.make_pipeline` turns them into batches
(`load_splits` does both). Folder datasets are checked file by file: damaged and non-image files
are skipped with a warning, or stop the run with `strict_data`.
"""

from __future__ import annotations

import random
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from lab5_utils.config import LabConfig
from lab5_utils.data import food101_files
from lab5_utils.data.photos import DECODABLE, conversion_hint, exif_orientation, image_problem
from lab5_utils.data.pipeline import decode, make_pipeline
from lab5_utils.data.synthetic import synthetic_class_names, synthetic_images
from lab5_utils.model import recipe

AUTOTUNE = tf.data.AUTOTUNE
SPLITS = ("train", "validation", "test")


@dataclass
class DataInfo:
    """What the three splits hold."""

    class_names: list[str]
    num_train: int
    num_val: int
    source: str
    skipped_files: list[str] = field(default_factory=list)
    num_test: int = 0
    split_rule: str = ""  # how the validation and test images were chosen
    official_test: bool = False  # the test split is Food-101's official test set

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def sizes(self) -> dict[str, int]:
        return {"train": self.num_train, "validation": self.num_val, "test": self.num_test}


class Splits(NamedTuple):
    """The train, validation and test datasets of a source, and what they hold."""

    train: tf.data.Dataset
    validation: tf.data.Dataset
    test: tf.data.Dataset
    info: DataInfo


class DataUnavailableError(RuntimeError):
    """The dataset could not be loaded (not downloaded, no network, bad folder)."""


# --- sources: (encoded image bytes, int32 label) -------------------------------------------
def load_encoded(cfg: LabConfig) -> Splits:
    """Unbatched datasets of (encoded image, label) for the train, validation and test splits."""
    if cfg.dataset == "food101" or cfg.dataset.startswith("tfds:"):
        return _food101(cfg)
    if cfg.dataset == "synthetic":
        return _synthetic(cfg)
    return _folder(cfg)


def food101_splits(cfg: LabConfig) -> dict[str, str]:
    """tfds split strings of the three roles. Food-101's tfds `validation` split is its official
    test set (250 images a class), so it is the test split here; validation is a seeded hold-out
    of `validation_split` (a whole percent) of tfds `train`. tfds stores examples in a shuffled
    order, so a block of it is a random sample; the seed chooses where the block starts."""
    width = min(50, max(1, round(100 * cfg.validation_split)))
    start = random.Random(cfg.seed).randint(0, 100 - width)
    end = start + width
    train = "+".join(part for part, keep in ((f"train[:{start}%]", start > 0),
                                             (f"train[{end}%:]", end < 100)) if keep)
    return {"train": train, "validation": f"train[{start}%:{end}%]", "test": "validation"}


def _food101(cfg: LabConfig) -> Splits:
    import tensorflow_datasets as tfds

    splits, prepare = food101_splits(cfg), {}
    if cfg.dataset.startswith("tfds:"):  # tfds prepares food101 from a local archive
        try:
            manual = food101_files.tfds_manual_dir(cfg.dataset[5:], cfg.data_cache or None)
        except food101_files.Food101FilesError as err:
            raise DataUnavailableError(str(err)) from None
        prepare = {"download_config": tfds.download.DownloadConfig(manual_dir=str(manual))}
    try:
        datasets, info = tfds.load(
            "food101", split=[splits[name] for name in SPLITS], as_supervised=True,
            with_info=True, shuffle_files=True, decoders={"image": tfds.decode.SkipDecoding()},
            read_config=tfds.ReadConfig(shuffle_seed=cfg.seed), download_and_prepare_kwargs=prepare,
        )
    except Exception as err:  # tfds raises many kinds: network, checksum, disk
        raise DataUnavailableError(
            f"Food-101 could not be loaded with tfds.load('food101') ({type(err).__name__}: "
            f"{err}). " + ("tfds:PATH needs the official food-101.tar.gz, which tfds checks and "
                           "prepares once (about 5 GB more in TFDS_DATA_DIR). " if prepare else
                           "It needs about 5 GB downloaded once (set TFDS_DATA_DIR to choose "
                           "where). ") + "Offline, use `--preset demo` (synthetic data), "
            "`--set dataset=folder:PATH` (Food-101's extracted folder, or one sub-folder of "
            "images per class) or `--set dataset=archive:PATH` (food-101.tar.gz)."
        ) from err
    class_names = list(info.features["label"].names)
    train, val, test = (d.map(_to_int32_label, num_parallel_calls=AUTOTUNE) for d in datasets)
    if cfg.train_fraction < 1.0:
        per_class = max(1, round(cfg.train_fraction * 750))  # Food-101: 750 train images a class
        train = _take_per_class(train, len(class_names), per_class).cache()
    rule = (f"validation: tfds {splits['validation']} (seeded hold-out of tfds train); "
            "test: tfds validation (Food-101's official test set)")
    return Splits(train, val, test, DataInfo(class_names, _count(train), _count(val), cfg.dataset,
                                             num_test=_count(test), split_rule=rule,
                                             official_test=True))


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


def _folder(cfg: LabConfig) -> Splits:
    class_names, files, skipped, rule, source = _folder_files(cfg)
    root = source.split(":", 1)[1]
    if skipped:
        warnings.warn(
            f"Skipped {len(skipped)} file(s) in {root} that are not usable images: "
            + ", ".join(skipped[:3]) + (", ..." if len(skipped) > 3 else "")
            + "." + conversion_hint(skipped)
            + " Set strict_data=true (lab5 --strict) to stop on such files instead.",
            stacklevel=2,
        )
    train, val, test = (_files_dataset(files[name]) for name in SPLITS)
    info = DataInfo(class_names, len(files["train"]), len(files["validation"]), source,
                    skipped, num_test=len(files["test"]), split_rule=rule,
                    official_test=source.startswith("food101-files:"))
    return Splits(train, val, test, info)


def _folder_files(cfg: LabConfig) -> tuple[list[str], dict[str, list], list[str], str, str]:
    """Class names, {split: (path, label) pairs}, skipped files, the rule that made the splits
    and the source. Food-101's official layout (or archive) gives its own split
    (`_official_files`). Otherwise `train/`, `validation/` and `test/` sub-folders are used as
    given; a missing validation or test split is a seeded, stratified split of `train/` (of the
    folder itself when it has no `train/`): `validation_split` and `test_split` of each class."""
    root = cfg.folder
    assert root is not None
    try:
        if cfg.dataset.startswith("archive:"):
            root = food101_files.extracted(root, cfg.data_cache or None)
        official = food101_files.official_root(root) if root.is_dir() else None
        if official is not None:
            return _official_files(cfg, food101_files.list_official(official, cfg.strict_data))
    except food101_files.Food101FilesError as err:
        raise DataUnavailableError(str(err)) from None
    if not root.is_dir():
        raise DataUnavailableError(f"dataset folder {str(root)!r} does not exist or is not a folder.")
    given = [name for name in SPLITS if (root / name).is_dir()]
    if given and "train" not in given:
        raise DataUnavailableError(
            f"dataset folder {str(root)!r} has {' and '.join(f'{n}/' for n in given)} but no "
            "train/ sub-folder: add train/, or put the class folders directly in it."
        )
    files, skipped, class_names = {}, [], None
    for name in given or ["train"]:
        names, found, bad = list_images(root / name if given else root, cfg.strict_data)
        if class_names is not None and names != class_names:
            raise DataUnavailableError(
                f"{root}/train and {root}/{name} have different class folders."
            )
        class_names, files[name], skipped = names, found, skipped + bad
    missing = {name: getattr(cfg, f"{name}_split") for name in SPLITS[1:] if name not in files}
    files.update(_stratified_split(files, missing, cfg.seed, class_names))
    rule = "; ".join(
        f"{name}: {root / name}/" if name in given else
        f"{name}: {missing[name]:.0%} of each class of {root / 'train' if given else root}/ "
        f"(seed {cfg.seed})" for name in SPLITS[1:])
    return class_names, files, skipped, rule, f"folder:{root}"


def _official_files(cfg: LabConfig, found: food101_files.OfficialFiles
                    ) -> tuple[list[str], dict[str, list], list[str], str, str]:
    """Food-101's official split: test = meta/test.txt; validation = `validation_split` of each
    class of meta/train.txt (seeded, stratified); train = the rest (`train_fraction`: of each
    class, that share of its listed images, as tfds' `quick`)."""
    files = {"train": found.train, "test": found.test}
    files.update(_stratified_split(files, {"validation": cfg.validation_split}, cfg.seed,
                                   found.class_names))
    files["train"] = found.per_class_share(files["train"], cfg.train_fraction)
    rule = (f"validation: {cfg.validation_split:.0%} of each class of meta/train.txt (seed "
            f"{cfg.seed}); test: meta/test.txt (Food-101's official test set)")
    return found.class_names, files, found.skipped, rule, f"food101-files:{found.root}"


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
    _, files, _, _, _ = _folder_files(cfg)
    for path, _ in [f for name in SPLITS for f in files[name]]:
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


def _stratified_split(files: dict[str, list], fractions: dict[str, float], seed: int,
                      class_names: list[str]) -> dict[str, list]:
    """Move `fractions` ({split: fraction}) of each class of `files["train"]` into new splits:
    per class a seeded shuffle, then at least one image for each new split and for training."""
    if not fractions:
        return {}
    rng = random.Random(seed)
    out: dict[str, list] = {"train": [], **{name: [] for name in fractions}}
    for label, name in enumerate(class_names):
        items = [f for f in files["train"] if f[1] == label]
        rng.shuffle(items)
        if len(items) < len(fractions) + 1:
            raise DataUnavailableError(
                f"class folder {name!r} has {len(items)} usable image(s): too few to split off "
                f"{' and '.join(fractions)} images (it needs at least {len(fractions) + 1}). Add "
                f"images, or give the folder {' and '.join(f'{n}/' for n in fractions)} "
                "sub-folders of its own."
            )
        total = len(items)
        for split, fraction in fractions.items():
            n = min(max(1, round(total * fraction)), len(items) - 1)
            out[split] += items[len(items) - n:]
            items = items[: len(items) - n]
        out["train"] += items
    return out


def _files_dataset(files: list[tuple[str, int]]) -> tf.data.Dataset:
    """(encoded, label, EXIF orientation) of image files: the orientation is read now (a JPEG
    header, ~0.1 ms a file), the pipeline turns the small decoded image upright."""
    paths = tf.constant([p for p, _ in files], tf.string)
    labels = tf.constant([lab for _, lab in files], tf.int32)
    orientations = tf.constant([exif_orientation(p) for p, _ in files], tf.int32)
    ds = tf.data.Dataset.from_tensor_slices((paths, labels, orientations))
    return ds.map(lambda p, y, o: (tf.io.read_file(p), y, o), num_parallel_calls=AUTOTUNE)


def _synthetic(cfg: LabConfig) -> Splits:
    """Three generated splits: the seed makes them distinct images of the same classes."""
    names = synthetic_class_names(cfg.num_classes)
    per_class = (cfg.synthetic_train_per_class, cfg.synthetic_val_per_class,
                 cfg.synthetic_test_per_class)
    arrays = [synthetic_images(cfg.num_classes, n, cfg.seed + i) for i, n in enumerate(per_class)]
    train, val, test = (tf.data.Dataset.from_tensor_slices(split) for split in arrays)
    seeds = ", ".join(str(cfg.seed + i) for i in range(3))
    info = DataInfo(names, *(len(a[1]) for a in arrays[:2]), "synthetic",
                    num_test=len(arrays[2][1]), split_rule=f"three generated sets (seeds {seeds})")
    return Splits(train, val, test, info)


def load_splits(cfg: LabConfig, encoded: Splits | None = None) -> Splits:
    """Batched, prefetched train, validation and test datasets plus their `DataInfo` (from
    `encoded`, else `load_encoded(cfg)`). Training and validation labels are one-hot when the
    recipe needs them (`recipe.one_hot`); the test split keeps integer labels, at the recipe's
    test size, and is never cached: it is read once per finished run."""
    train, val, test, info = encoded or load_encoded(cfg)
    depth = info.num_classes if recipe.one_hot(cfg) else None
    return Splits(
        make_pipeline(train, cfg, training=True, num_examples=info.num_train, one_hot_depth=depth),
        make_pipeline(val, cfg, training=False, num_examples=info.num_val, one_hot_depth=depth),
        make_pipeline(test, _test_time_config(cfg), training=False),
        info,
    )


def test_time_validation(cfg: LabConfig, encoded: Splits) -> tf.data.Dataset:
    """The validation split read as the test split is (integer labels, at the recipe's test
    size, not cached): what the kept model is measured on at its test-time settings."""
    return make_pipeline(encoded.validation, _test_time_config(cfg), training=False)


def _test_time_config(cfg: LabConfig) -> LabConfig:
    return cfg.replace(cache_validation="", image_size=recipe.test_image_size(cfg))
