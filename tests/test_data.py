import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from lab5_utils.data.pipeline import make_pipeline
from lab5_utils.data.splits import DataUnavailableError, load_encoded, load_splits
from tests.conftest import tiny_config


def _check_batches(ds, num_classes, size):
    images, labels = next(iter(ds))
    assert images.dtype == tf.uint8 and labels.dtype == tf.int32  # a quarter of float32's bytes
    assert images.shape[1:] == (size, size, 3)
    x = images.numpy()
    # EfficientNet rescales inside the model: pixels must arrive as 0..255, not 0..1 or z-scores
    assert x.min() >= 0 and x.max() <= 255 and x.max() > 1.5
    assert labels.numpy().min() >= 0 and labels.numpy().max() < num_classes


def test_food101_through_tfds_mock(tmp_path):
    cfg = tiny_config(tmp_path, dataset="food101", weights="imagenet", batch_size=4)
    with tfds.testing.mock_data(num_examples=12):
        train, val, test, info = load_splits(cfg)
        assert info.num_classes == 101 and info.class_names[0] == "apple_pie"
        assert (info.num_train, info.num_val, info.num_test) == (12, 12, 12)  # the mock's size
        for ds in (train, val, test):
            _check_batches(ds, 101, 64)


def test_food101_per_class_subset_keeps_at_most_the_quota(tmp_path):
    cfg = tiny_config(tmp_path, dataset="food101", train_fraction=1 / 750)
    with tfds.testing.mock_data(num_examples=300):
        train, _, _, info = load_encoded(cfg)
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
    cfg = tiny_config(tmp_path, dataset=f"folder:{root}", validation_split=0.25, test_split=0.25,
                      batch_size=3)
    train, val, test, info = load_splits(cfg)
    assert info.class_names == ["apple", "bread", "cake"]
    assert (info.num_train, info.num_val, info.num_test) == (6, 3, 3)
    for ds in (train, val, test):
        _check_batches(ds, 3, 64)
    again = load_encoded(cfg)[1]
    assert [bytes(x.numpy()) for x, *_ in again] == [bytes(x.numpy()) for x, *_ in load_encoded(cfg)[1]]


def test_folder_with_train_and_validation_subfolders(tmp_path):
    root = tmp_path / "photos"
    _image_folder(root / "train")
    _image_folder(root / "validation", per_class=2)
    info = load_encoded(tiny_config(tmp_path, dataset=f"folder:{root}", test_split=0.25)).info
    assert (info.num_train, info.num_val, info.num_test) == (9, 6, 3)  # test: from train/


def test_missing_folder_is_refused_by_name(tmp_path):
    with pytest.raises(DataUnavailableError, match="nowhere"):
        load_encoded(tiny_config(tmp_path, dataset=f"folder:{tmp_path / 'nowhere'}"))


def test_synthetic_is_deterministic_by_seed(tmp_path):
    def first_images(seed):
        train = load_encoded(tiny_config(tmp_path, seed=seed)).train
        return [bytes(x.numpy()) for x, _ in train.take(5)]

    assert first_images(1) == first_images(1)
    assert first_images(1) != first_images(2)
    info = load_encoded(tiny_config(tmp_path)).info
    assert info.class_names[0].startswith("class_00")


def test_augmentation_changes_training_images_but_never_validation(tmp_path):
    cfg = tiny_config(tmp_path, augmentations=["flip", "crop", "rotation", "zoom", "contrast"],
                      batch_size=8)
    train_raw, val_raw, _, _ = load_encoded(cfg)
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
    train = load_splits(cfg).train
    first, second = ([int(y) for y in next(iter(train))[1]] for _ in range(2))
    assert sorted(first) == sorted(second) and first != second


# --- the fast preprocessing path: reduced-scale JPEG decoding, crops, flips, cache --------------
def _food_like(count, shapes=((384, 512), (512, 512), (341, 512), (512, 384))):
    from lab5_utils.data.benchdata import food_like_jpeg

    rng = np.random.default_rng(0)
    return [food_like_jpeg(rng, *shapes[i % len(shapes)]) for i in range(count)]


def _encoded(images):
    labels = np.arange(len(images), dtype=np.int32) % 3
    return tf.data.Dataset.from_tensor_slices((images, labels))


@pytest.mark.parametrize("size", [64, 96, 224])
def test_validation_is_deterministic_and_matches_a_full_decode(tmp_path, size):
    images = _food_like(4)
    cfg = tiny_config(tmp_path, image_size=size, batch_size=4)
    pipe = make_pipeline(_encoded(images), cfg, training=False)
    batches = [next(iter(pipe)) for _ in range(2)]
    _check_batches(pipe, 3, size)
    np.testing.assert_array_equal(batches[0][0].numpy(), batches[1][0].numpy())
    for got, encoded in zip(batches[0][0].numpy(), images):
        full = tf.io.decode_jpeg(encoded, channels=3)
        # A reduced-scale decode averages pixels, like an antialiased resize of the full image
        smooth = tf.image.resize(full, [size, size], antialias=True).numpy()
        assert np.abs(got - smooth).mean() < 3
        if min(full.shape[:2]) < 2 * size:  # decoded at full scale: the plain resize, rounded
            np.testing.assert_allclose(got, tf.image.resize(full, [size, size]).numpy(), atol=0.5)


def test_jpegs_decode_at_the_smallest_scale_that_keeps_the_target_size():
    from lab5_utils.data.pipeline import decode, jpeg_scale

    assert [int(jpeg_scale(side, 224)) for side in (223, 447, 448, 512, 1792)] == [0, 0, 1, 1, 3]
    encoded = _food_like(1, shapes=((384, 512),))[0]
    assert decode(encoded, 96).shape.as_list() == [96, 128, 3]  # 1/4 scale: 384 // 4 = 96
    assert decode(encoded, 200).shape.as_list() == [384, 512, 3]  # 1/2 would be too small
    for seed in range(8):
        crop = decode(encoded, 64, crop_seed=tf.constant([seed, 1], tf.int64))
        assert min(crop.shape[:2]) >= 64


def _coordinate_image(fmt):
    """Red encodes the column, green the row, blue is constant: crops can be located."""
    h, w = 384, 512
    red = np.broadcast_to(np.linspace(0, 255, w), (h, w))
    green = np.broadcast_to(np.linspace(0, 255, h)[:, None], (h, w))
    pixels = np.stack([red, green, np.full((h, w), 200.0)], -1).round().astype(np.uint8)
    if fmt == "jpeg":
        return tf.io.encode_jpeg(pixels, quality=98, chroma_downsampling=False).numpy()
    return tf.io.encode_png(pixels).numpy()


@pytest.mark.parametrize("fmt,cache", [("jpeg", ""), ("png", ""), ("jpeg", "memory")])
def test_training_crops_are_inside_the_image_and_sometimes_flipped(tmp_path, fmt, cache):
    cfg = tiny_config(tmp_path, image_size=64, batch_size=32, augmentations=["flip", "crop"],
                      cache_train=cache)
    pipe = make_pipeline(_encoded([_coordinate_image(fmt)] * 32), cfg, training=True)
    images, _ = next(iter(pipe))
    flipped = 0
    for image in images.numpy().astype(np.float32):
        assert np.abs(image[..., 2] - 200).max() < 8  # no padding, no pixels from outside
        red, green = image[..., 0].mean(0), image[..., 1].mean(1)
        assert np.all(np.diff(green) > 0)  # rows top to bottom
        assert np.all(np.diff(red) > 0) or np.all(np.diff(red) < 0)  # columns, maybe mirrored
        flipped += bool(red[0] > red[-1])
        width, height = np.ptp(red) / 255 * 512, np.ptp(green) / 255 * 384
        assert 0.3 < width * height / (512 * 384) <= 1.0  # area 35-100 % (edge pixels lost)
        assert 0.7 < width / height < 1.45  # aspect 3/4..4/3
    assert 0 < flipped < 32


@pytest.mark.parametrize("cache", ["", "memory"])
def test_training_augmentation_is_reproducible_from_the_seed(tmp_path, cache):
    images = _food_like(8)
    cfg = tiny_config(tmp_path, image_size=64, batch_size=8, cache_train=cache)

    def epochs(config, n=2):
        pipe = make_pipeline(_encoded(images), config, training=True)
        return [batch[0].numpy() for batch, _ in zip(pipe.repeat(), range(n))]

    first, again = epochs(cfg), epochs(cfg)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], first[1])  # a new crop and flip every epoch
    assert not np.array_equal(first[0], epochs(cfg.replace(seed=7), 1)[0])


def test_cache_validation_in_memory_and_in_a_file(tmp_path):
    images = _food_like(6)
    cfg = tiny_config(tmp_path, image_size=64, batch_size=6)
    plain = next(iter(make_pipeline(_encoded(images), cfg, training=False)))[0].numpy()
    path = tmp_path / "cache" / "val"
    for setting in ("memory", str(path)):
        pipe = make_pipeline(_encoded(images), cfg.replace(cache_validation=setting), training=False)
        first, second = (np.concatenate([x.numpy() for x, _ in pipe]) for _ in range(2))
        np.testing.assert_array_equal(first, second)
        np.testing.assert_array_equal(first, plain)  # the same pixels, decoded once
    assert list(path.parent.glob("val-*"))


def test_in_memory_cache_too_big_for_ram_is_skipped_with_a_warning(tmp_path, monkeypatch):
    import psutil

    monkeypatch.setattr(psutil, "virtual_memory", lambda: type("M", (), {"available": 100_000})())
    cfg = tiny_config(tmp_path, image_size=64, batch_size=6, cache_validation="memory")
    with pytest.warns(UserWarning, match="cache_validation='memory': no cache"):
        pipe = make_pipeline(_encoded(_food_like(6)), cfg, training=False)
    _check_batches(pipe, 3, 64)


def test_training_cache_keeps_shrunk_images_and_a_file_cache_is_never_reused_for_other_data(
    tmp_path,
):
    from lab5_utils.data.pipeline import cache_side, shrink

    assert cache_side(224) == 256 and cache_side(96) == 110
    encoded = _food_like(1, shapes=((384, 512),))[0]
    assert shrink(encoded, 256).shape.as_list() == [256, 341, 3]  # aspect kept
    assert shrink(encoded, 500).shape.as_list() == [384, 512, 3]  # never enlarged

    images = _food_like(6)
    prefix = tmp_path / "cache" / "train"
    cfg = tiny_config(tmp_path, image_size=64, batch_size=6, cache_train=str(prefix))
    names = []
    for config in (cfg, cfg.replace(image_size=48)):
        pipe = make_pipeline(_encoded(images), config, training=True)
        epochs = [np.concatenate([x.numpy() for x, _ in pipe]) for _ in range(2)]
        assert epochs[0].shape == (6, config.image_size, config.image_size, 3)
        assert not np.array_equal(epochs[0], epochs[1])  # cached pixels, fresh crops
        names.append({p.stem for p in prefix.parent.glob("train-*.index")})
    assert len(names[0]) == 1 and len(names[1]) == 2  # one cache per image size
    # A killed run leaves a lock file that tf.data would refuse and a partly written shard;
    # a new pipeline removes both and keeps the finished caches
    name = names[0].pop()
    stale = [prefix.parent / f"{name}_0.lockfile",
             prefix.parent / f"{name}_0.data-00000-of-00001.tempstate1909219219747322338"]
    for path in stale:
        path.write_text("")
    make_pipeline(_encoded(images), cfg, training=True)
    assert not any(path.exists() for path in stale)
    assert len(list(prefix.parent.glob("train-*.index"))) == 2


def test_auto_cache_too_big_for_ram_is_skipped_with_a_note(tmp_path, monkeypatch, capsys):
    import psutil

    monkeypatch.setattr(psutil, "virtual_memory", lambda: type("M", (), {"available": 100_000})())
    cfg = tiny_config(tmp_path, image_size=64, batch_size=6, cache_train="auto")
    pipe = make_pipeline(_encoded(_food_like(6)), cfg, training=True)
    assert "cache_train='auto': no cache" in capsys.readouterr().out
    _check_batches(pipe, 3, 64)


def test_exploration_helpers_count_measure_and_preview_the_data(tmp_path):
    from lab5_utils.data import views

    cfg = tiny_config(tmp_path)
    train, _, _, info = load_encoded(cfg)
    counts, sizes = views.scan_examples(train, info.class_names, max_scan=1000)
    assert list(counts) == [cfg.synthetic_train_per_class] * cfg.num_classes
    assert len(sizes) == info.num_train and sizes["width"].between(72, 128).all()
    images, titles = views.sample_images(train, info.class_names, n=3)
    assert [im.shape[:2] for im in images] == [(h, w) for w, h in sizes[["width", "height"]].values[:3]]
    assert titles == [info.class_names[y] for y in sizes["label"][:3]]
    original, augmented = views.augmentation_examples(cfg, train, n=4)
    assert original.shape == (64, 64, 3) and len(augmented) == 4
    assert not all(np.array_equal(a, augmented[0]) for a in augmented[1:])  # different each time
