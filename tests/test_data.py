import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from lab5_utils.data import DataUnavailableError, load_encoded, load_splits, make_pipeline
from tests.conftest import tiny_config


def _check_batches(ds, num_classes, size):
    images, labels = next(iter(ds))
    assert images.dtype == tf.float32 and labels.dtype == tf.int32
    assert images.shape[1:] == (size, size, 3)
    x = images.numpy()
    # EfficientNet rescales inside the model: pixels must arrive as 0..255, not 0..1 or z-scores
    assert x.min() >= 0 and x.max() <= 255 and x.max() > 1.5
    assert labels.numpy().min() >= 0 and labels.numpy().max() < num_classes


def test_food101_through_tfds_mock(tmp_path):
    cfg = tiny_config(tmp_path, dataset="food101", weights="imagenet", batch_size=4)
    with tfds.testing.mock_data(num_examples=12):
        train, val, info = load_splits(cfg)
        assert info.num_classes == 101 and info.class_names[0] == "apple_pie"
        assert (info.num_train, info.num_val) == (12, 12)
        _check_batches(train, 101, 64)
        _check_batches(val, 101, 64)


def test_food101_per_class_subset_keeps_at_most_the_quota(tmp_path):
    cfg = tiny_config(tmp_path, dataset="food101", train_fraction=1 / 750)
    with tfds.testing.mock_data(num_examples=300):
        train, _, info = load_encoded(cfg)
        labels = [int(y) for _, y in train]
    assert len(labels) == info.num_train and max(np.bincount(labels)) == 1


def test_food101_unavailable_is_one_clear_message(tmp_path, monkeypatch):
    monkeypatch.setattr(tfds, "load", lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    with pytest.raises(DataUnavailableError, match="--preset demo"):
        load_splits(tiny_config(tmp_path, dataset="food101"))


def _image_folder(root, classes=("apple", "bread", "cake"), per_class=4):
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 255, size=(30 + i, 40, 3), dtype=np.uint8)
            suffix = "jpg" if i % 2 else "png"
            Image.fromarray(pixels).save(root / c / f"{i}.{suffix}")
    return root


def test_folder_source_with_jpeg_and_png_split_by_seed(tmp_path):
    root = _image_folder(tmp_path / "photos")
    cfg = tiny_config(tmp_path, dataset=f"folder:{root}", validation_split=0.25, batch_size=3)
    train, val, info = load_splits(cfg)
    assert info.class_names == ["apple", "bread", "cake"]
    assert (info.num_train, info.num_val) == (9, 3)
    _check_batches(train, 3, 64)
    _check_batches(val, 3, 64)
    again = load_encoded(cfg)[1]
    assert [bytes(x.numpy()) for x, _ in again] == [bytes(x.numpy()) for x, _ in load_encoded(cfg)[1]]


def test_folder_with_train_and_validation_subfolders(tmp_path):
    root = tmp_path / "photos"
    _image_folder(root / "train")
    _image_folder(root / "validation", per_class=2)
    _, _, info = load_encoded(tiny_config(tmp_path, dataset=f"folder:{root}"))
    assert (info.num_train, info.num_val) == (12, 6)


def test_missing_folder_is_refused_by_name(tmp_path):
    with pytest.raises(DataUnavailableError, match="nowhere"):
        load_encoded(tiny_config(tmp_path, dataset=f"folder:{tmp_path / 'nowhere'}"))


def test_synthetic_is_deterministic_by_seed(tmp_path):
    def first_images(seed):
        train, _, _ = load_encoded(tiny_config(tmp_path, seed=seed))
        return [bytes(x.numpy()) for x, _ in train.take(5)]

    assert first_images(1) == first_images(1)
    assert first_images(1) != first_images(2)
    _, _, info = load_encoded(tiny_config(tmp_path))
    assert info.class_names[0].startswith("class_00")


def test_augmentation_changes_training_images_but_never_validation(tmp_path):
    cfg = tiny_config(tmp_path, augmentations=["flip", "crop", "rotation", "zoom", "contrast"],
                      batch_size=8)
    train_raw, val_raw, _ = load_encoded(cfg)
    one = train_raw.take(8)
    pipe = make_pipeline(one, cfg.replace(shuffle_buffer=1), training=True)
    a, b = (next(iter(pipe))[0].numpy() for _ in range(2))
    plain = make_pipeline(one, cfg.replace(augmentations=[], shuffle_buffer=1), training=True)
    assert not np.allclose(a, b)  # a fresh random augmentation every pass
    assert not np.allclose(a, next(iter(plain))[0].numpy())
    v1, v2 = (next(iter(make_pipeline(val_raw, cfg, training=False)))[0].numpy() for _ in range(2))
    v_plain = next(iter(make_pipeline(val_raw, cfg.replace(augmentations=[]), training=False)))
    np.testing.assert_array_equal(v1, v2)
    np.testing.assert_array_equal(v1, v_plain[0].numpy())


def test_training_split_is_reshuffled_every_epoch(tmp_path):
    cfg = tiny_config(tmp_path, augmentations=[], batch_size=100)
    train, _, _ = load_splits(cfg)
    first, second = ([int(y) for y in next(iter(train))[1]] for _ in range(2))
    assert sorted(first) == sorted(second) and first != second
