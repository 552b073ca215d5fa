"""`dataset=folder:PATH`: the folders and files a user may point the lab at, good and bad."""

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from lab5_utils.data.splits import DataUnavailableError, load_encoded, load_splits, undecodable_file
from lab5_utils.train.training import run_stage
from tests.conftest import tiny_config


def _jpeg(seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, size=(40, 48, 3), dtype=np.uint8)
    return tf.io.encode_jpeg(pixels, quality=90).numpy()


def _png(seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, size=(40, 48, 3), dtype=np.uint8)
    return tf.io.encode_png(pixels).numpy()


def _folder(root, classes=("cat", "dog"), per_class=4):
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (root / c / f"{i}.jpg").write_bytes(_jpeg(i))
    return root


def _cfg(tmp_path, root, **overrides):
    return tiny_config(tmp_path, dataset=f"folder:{root}", batch_size=4, **overrides)


def _snapshot(root):
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case,message", [
    ("missing", "does not exist or is not a folder"),
    ("empty", "needs at least 2 class sub-folders; found 0 \\(none\\)"),
    ("one class", "needs at least 2 class sub-folders; found 1 \\(cat\\)"),
    ("empty class", r"class folder '.*dog' holds no usable images \(JPEG, PNG, GIF, BMP or WebP\)"),
])
def test_unusable_folders_are_refused_with_one_message(tmp_path, case, message):
    root = tmp_path / "photos"
    if case == "empty":
        root.mkdir()
    elif case == "one class":
        _folder(root, classes=("cat",))
    elif case == "empty class":
        _folder(root, classes=("cat",))
        (root / "dog").mkdir()
        (root / "dog" / "notes.txt").write_text("no images here")
    before = _snapshot(tmp_path)
    with pytest.raises(DataUnavailableError, match=message):
        load_encoded(_cfg(tmp_path, root))
    assert _snapshot(tmp_path) == before  # nothing written, nothing removed


def _damaged_folder(tmp_path):
    """4 good JPEGs and a good PNG per class, plus one file of each kind of damage."""
    root = _folder(tmp_path / "photos")
    (root / "cat" / "4.png").write_bytes(_png(4))
    (root / "dog" / "4.png").write_bytes(_png(5))
    good = _jpeg(9)
    (root / "cat" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (root / "dog" / "truncated.png").write_bytes(_png(6)[:300])
    (root / "dog" / "text.jpg").write_text("not a photo")
    (root / "dog" / "notes.txt").write_text("a non-image file")
    # Intact start and end, garbage in between: only decoding it can tell
    (root / "cat" / "corrupt.jpg").write_bytes(good[:3] + bytes(600) + good[-2:])
    return root


def test_damaged_and_non_image_files_are_skipped_counted_and_named(tmp_path):
    root = _damaged_folder(tmp_path)
    before = _snapshot(root)
    with pytest.warns(UserWarning) as warned:
        train, val, test, info = load_splits(_cfg(tmp_path, root, cache_train="",
                                                  validation_split=0.2, test_split=0.2))
    text = next(str(w.message) for w in warned if "Skipped" in str(w.message))
    assert "Skipped 4 file(s)" in text and "truncated.jpg (truncated JPEG" in text
    assert "strict_data" in text  # how to make it an error instead
    assert sorted(Path(p.split(" (")[0]).name for p in info.skipped_files) == [
        "notes.txt", "text.jpg", "truncated.jpg", "truncated.png"]
    # The corrupt file passes the listing and is dropped when decoding fails
    assert info.num_train + info.num_val + info.num_test == 11
    seen = sum(int(x.shape[0]) for ds in (train, val, test) for x, _ in ds)
    assert seen == 10
    assert _snapshot(root) == before


@pytest.mark.slow
def test_training_on_a_folder_with_a_damaged_image_runs_quietly(tmp_path, recwarn):
    """Slow: it trains, since only training meets the corrupt image."""
    root = _damaged_folder(tmp_path)
    result = run_stage(_cfg(tmp_path, root, transfer_epochs=2, validation_split=0.2,
                            image_size=32, calibration_images=16), "transfer", verbose=0)
    assert list(result.history["epoch"]) == [1, 2]
    messages = [str(w.message) for w in recwarn]
    assert any("Skipped 4 file(s)" in m for m in messages)
    # the corrupt image is dropped, so the dataset has no known length: Keras' warning about it
    # ("ran out of data") would only alarm a user whose epochs are complete
    assert not [m for m in messages if "ran out of data" in m]


def test_strict_data_stops_at_the_first_damaged_file(tmp_path):
    root = _damaged_folder(tmp_path)
    with pytest.raises(DataUnavailableError, match=r"truncated\.jpg: truncated JPEG.*strict_data"):
        load_encoded(_cfg(tmp_path, root, strict_data=True))
    # Only decoding finds the corrupt file: with strict_data it stops training instead of skipping
    (root / "cat" / "truncated.jpg").unlink()
    for name in ("truncated.png", "text.jpg", "notes.txt"):
        (root / "dog" / name).unlink()
    train, val, test, _ = load_splits(_cfg(tmp_path, root, strict_data=True, cache_train=""))
    with pytest.raises(tf.errors.InvalidArgumentError, match="Invalid JPEG data"):
        for ds in (train, val, test):
            for _ in ds:
                pass
    assert undecodable_file(_cfg(tmp_path, root)) is not None  # what training uses to name it
    (root / "cat" / "corrupt.jpg").unlink()
    assert undecodable_file(_cfg(tmp_path, root)) is None


@pytest.mark.slow
def test_strict_training_names_the_file_that_fails_to_decode(tmp_path):
    """Training names the file, TensorFlow's decoding error does not. Slow: the error comes from
    inside training (the BatchNorm calibration reads the training images first)."""
    root = _damaged_folder(tmp_path)
    (root / "cat" / "truncated.jpg").unlink()  # found by the listing: the test above
    for name in ("truncated.png", "text.jpg", "notes.txt"):
        (root / "dog" / name).unlink()
    with pytest.raises(DataUnavailableError, match=r"cat/corrupt\.jpg: .*JPEG.*strict_data is on"):
        run_stage(_cfg(tmp_path, root, strict_data=True, image_size=32, calibration_images=16),
                  "transfer", verbose=0)


def test_train_and_validation_sub_folders_are_used_as_given(tmp_path):
    root = tmp_path / "photos"
    _folder(root / "train", per_class=3)
    _folder(root / "validation", per_class=2)
    _folder(root / "test", per_class=1)
    info = load_encoded(_cfg(tmp_path, root)).info
    assert (info.num_train, info.num_val, info.num_test) == (6, 4, 2)
    assert info.class_names == ["cat", "dog"]
    (root / "validation" / "dog").rename(root / "validation" / "wolf")
    with pytest.raises(DataUnavailableError, match="different class folders"):
        load_encoded(_cfg(tmp_path, root))
