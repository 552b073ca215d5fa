"""The three roles of the data in every source: train fits, validation chooses, test reports.
The splits are disjoint and the same in every run."""

import hashlib

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from tensorflow_datasets.core import splits as splits_lib

from lab5_utils.config import LabConfig
from lab5_utils.data.splits import DataUnavailableError, food101_splits, load_encoded
from tests.conftest import tiny_config

FOOD101_TRAIN = 75_750  # tfds food101: train 75,750 images, validation (the official test) 25,250


def _indices(spec: str) -> set[int]:
    """The tfds `train` example indices a split string reads."""
    info = {"train": splits_lib.SplitInfo(name="train", shard_lengths=[FOOD101_TRAIN], num_bytes=0)}
    ranges = tfds.core.ReadInstruction.from_spec(spec).to_absolute(info)
    assert all(r.splitname == "train" for r in ranges)
    return {i for r in ranges for i in range(r.from_ or 0, FOOD101_TRAIN if r.to is None else r.to)}


@pytest.mark.parametrize("seed", [0, 42, 7])
def test_food101_test_is_tfds_validation_and_validation_a_held_out_part_of_train(seed):
    splits = food101_splits(LabConfig.preset("full", seed=seed))
    assert splits["test"] == "validation"  # Food-101's official test set
    train, val = _indices(splits["train"]), _indices(splits["validation"])
    assert not train & val and train | val == set(range(FOOD101_TRAIN))
    assert len(val) == pytest.approx(0.05 * FOOD101_TRAIN, abs=1)
    # the same images for quick and full and every run; the seed moves the hold-out
    assert food101_splits(LabConfig.preset("quick", seed=seed)) == splits
    assert food101_splits(LabConfig.preset("full", seed=seed)) == splits


def test_food101_seed_chooses_the_hold_out_and_its_size_follows_validation_split():
    held = {seed: _indices(food101_splits(LabConfig.preset("full", seed=seed))["validation"])
            for seed in range(5)}
    assert len({min(v) for v in held.values()}) > 1
    ten = _indices(food101_splits(LabConfig.preset("full", validation_split=0.1))["validation"])
    assert len(ten) == pytest.approx(0.1 * FOOD101_TRAIN, abs=1)


def test_food101_loads_the_three_splits_it_names(tmp_path, monkeypatch):
    asked = {}
    real = tfds.load

    def load(name, split, **kwargs):
        asked["split"] = split
        return real(name, split=split, **kwargs)

    monkeypatch.setattr(tfds, "load", load)
    cfg = tiny_config(tmp_path, dataset="food101", weights="imagenet")
    with tfds.testing.mock_data(num_examples=6):
        splits = load_encoded(cfg)
    assert asked["split"] == [food101_splits(cfg)[name] for name in ("train", "validation", "test")]
    assert splits.info.sizes == {"train": 6, "validation": 6, "test": 6}
    assert "tfds validation (Food-101's official test set)" in splits.info.split_rule


def _digests(ds) -> list[str]:
    return [hashlib.sha1(bytes(example[0].numpy())).hexdigest() for example in ds]


def _check_disjoint_and_deterministic(cfg):
    first, again = load_encoded(cfg), load_encoded(cfg)
    parts = [_digests(ds) for ds in first[:3]]
    assert [_digests(ds) for ds in again[:3]] == parts  # the same images, in the same order
    sets = [set(p) for p in parts]
    assert all(len(s) == len(p) for s, p in zip(sets, parts))
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert [len(p) for p in parts] == list(first.info.sizes.values())
    return first


def test_synthetic_has_three_disjoint_generated_splits(tmp_path):
    cfg = tiny_config(tmp_path)
    splits = _check_disjoint_and_deterministic(cfg)
    assert splits.info.num_test == cfg.num_classes * cfg.synthetic_test_per_class
    labels = [int(y) for _, y in splits.test]
    assert np.bincount(labels).tolist() == [cfg.synthetic_test_per_class] * cfg.num_classes


def _photos(root, per_class=10, classes=("apple", "bread", "cake"), seed=0):
    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 255, size=(24, 32, 3), dtype=np.uint8)
            (root / c / f"{i}.jpg").write_bytes(tf.io.encode_jpeg(pixels).numpy())
    return root


def test_folder_without_sub_folders_is_split_by_class_and_seed(tmp_path):
    root = _photos(tmp_path / "photos")
    cfg = tiny_config(tmp_path, dataset=f"folder:{root}", validation_split=0.2, test_split=0.3)
    splits = _check_disjoint_and_deterministic(cfg)
    assert splits.info.sizes == {"train": 15, "validation": 6, "test": 9}
    for ds, per_class in ((splits.train, 5), (splits.validation, 2), (splits.test, 3)):
        assert np.bincount([int(e[1]) for e in ds]).tolist() == [per_class] * 3  # stratified
    other = load_encoded(cfg.replace(seed=1))
    assert _digests(other.test) != _digests(splits.test)
    assert "30% of each class" in splits.info.split_rule


def test_folder_sub_folders_are_used_and_a_missing_one_comes_from_train(tmp_path):
    root = tmp_path / "photos"
    _photos(root / "train")
    _photos(root / "test", per_class=2, seed=1)
    cfg = tiny_config(tmp_path, dataset=f"folder:{root}", validation_split=0.2)
    splits = _check_disjoint_and_deterministic(cfg)
    assert splits.info.sizes == {"train": 24, "validation": 6, "test": 6}
    assert f"test: {root / 'test'}/" in splits.info.split_rule


def test_folder_class_too_small_to_split_is_one_clear_message(tmp_path):
    root = _photos(tmp_path / "photos", per_class=2)
    with pytest.raises(DataUnavailableError,
                       match=r"class folder 'apple' has 2 usable image\(s\): too few to split off "
                             r"validation and test .*at least 3"):
        load_encoded(tiny_config(tmp_path, dataset=f"folder:{root}"))
    (tmp_path / "only").mkdir()
    _photos(tmp_path / "only" / "validation")
    with pytest.raises(DataUnavailableError, match="has validation/ but no train/"):
        load_encoded(tiny_config(tmp_path, dataset=f"folder:{tmp_path / 'only'}"))
