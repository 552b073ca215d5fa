"""Photos as phones and other programs save them: EXIF orientation and the formats a folder
dataset accepts."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageOps

from lab5_utils.data.photos import exif_orientation, image_problem
from lab5_utils.data.pipeline import orient
from lab5_utils.data.splits import load_splits
from lab5_utils.train.training import run_stage
from tests.conftest import tiny_config

# The transpose that turns a photo upright stored with EXIF orientation o, and its inverse
# (how a camera stores an upright photo with that tag)
_TO_STORED = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90,
              8: Image.Transpose.ROTATE_270}


def upright_photo(h: int = 64, w: int = 96, block: bool = True) -> np.ndarray:
    """A smooth photo whose orientation shows: redder downwards, greener rightwards and (with
    `block`) a red block top left."""
    yy, xx = np.mgrid[0:h, 0:w]
    image = np.stack([40 + 150 * yy / h, 60 + 60 * xx / w, np.full((h, w), 90.0)], axis=-1)
    if block:
        image[: h // 3, : w // 3] = (230, 30, 30)
    return image.astype(np.uint8)


def save_with_orientation(path, upright: np.ndarray, orientation: int) -> None:
    """Save `upright` as a camera would with `orientation`: pixels stored turned, plus the tag."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored = Image.fromarray(upright)
    if orientation in _TO_STORED:
        stored = stored.transpose(_TO_STORED[orientation])
    stored.save(path, quality=95, exif=exif.tobytes())


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orient_shows_images_as_pillows_exif_transpose_does(orientation):
    stored = np.random.default_rng(orientation).integers(0, 255, (5, 7, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    Image.fromarray(stored).save(buffer, format="PNG", exif=exif.tobytes())  # lossless
    expected = np.asarray(ImageOps.exif_transpose(Image.open(buffer)))
    np.testing.assert_array_equal(orient(tf.constant(stored), orientation).numpy(), expected)


def _sideways_folder(root, orientation):
    """train/, validation/ and test/, each with class `a`: the upright photo; `b`: the same photo
    stored turned, with its tag; `c`: stored turned without the tag (a control)."""
    photo = upright_photo()
    for split in ("train", "validation", "test"):
        for name in "abc":
            (root / split / name).mkdir(parents=True)
        Image.fromarray(photo).save(root / split / "a" / "upright.jpg", quality=95)
        save_with_orientation(root / split / "b" / "sideways.jpg", photo, orientation)
        turned = Image.fromarray(photo).transpose(_TO_STORED[orientation])
        turned.save(root / split / "c" / "untagged.jpg", quality=95)
    return root


def _by_label(ds) -> dict[int, np.ndarray]:
    return {int(y): x.astype(np.float32) for xs, ys in ds.as_numpy_iterator() for x, y in zip(xs, ys)}


@pytest.mark.parametrize("orientation", [6, 3, 8])
def test_a_sideways_stored_jpeg_decodes_upright_in_training_and_validation(tmp_path, orientation):
    root = _sideways_folder(tmp_path / "photos", orientation)
    assert exif_orientation(root / "train" / "b" / "sideways.jpg") == orientation
    assert exif_orientation(root / "train" / "a" / "upright.jpg") == 1
    for cache in ("", "memory"):
        cfg = tiny_config(tmp_path, dataset=f"folder:{root}", image_size=32, batch_size=3,
                          augmentations=[], cache_train=cache, cache_validation=cache)
        train, val, test, info = load_splits(cfg)
        assert (info.num_train, info.num_val, info.num_test) == (3, 3, 3)
        for ds in (train, val, test):
            images = _by_label(ds)
            assert np.abs(images[1] - images[0]).mean() < 3  # JPEG noise
            assert np.abs(images[2] - images[0]).mean() > 20  # the untagged copy is turned


@pytest.mark.parametrize("cache", ["", "memory"])
def test_random_crops_of_a_sideways_jpeg_are_crops_of_the_upright_photo(tmp_path, cache):
    root = tmp_path / "photos"
    for name in "ab":
        (root / name).mkdir(parents=True)
        for i in range(3):  # one each for train, validation and test
            save_with_orientation(root / name / f"sideways{i}.jpg",
                                  upright_photo(96, 128, block=False), 6)
    cfg = tiny_config(tmp_path, dataset=f"folder:{root}", image_size=32, batch_size=2,
                      augmentations=["crop", "flip"], validation_split=0.01, cache_train=cache)
    train = load_splits(cfg).train
    for _ in range(5):  # new crops and flips every epoch
        for images, _ in train:
            red = images.numpy()[..., 0].astype(np.float32)  # upright, red rises downwards
            rows, cols = red.mean(axis=2), red.mean(axis=1)  # [batch, 32] profiles
            assert (rows[:, -4:].mean(1) - rows[:, :4].mean(1) > 40).all()  # >= half its height
            assert (np.abs(cols[:, -4:].mean(1) - cols[:, :4].mean(1)) < 8).all()  # flat across


def _encoded(fmt: str, pixels: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def test_formats_are_recognised_by_their_signature(tmp_path):
    pixels = upright_photo(24, 32)
    files = {
        "photo.gif": _encoded("GIF", pixels), "photo.bmp": _encoded("BMP", pixels),
        "photo.webp": _encoded("WEBP", pixels), "photo.png": _encoded("PNG", pixels),
        "no_suffix": _encoded("JPEG", pixels),  # a JPEG is a JPEG, whatever its name
        "cut.gif": _encoded("GIF", pixels)[:-40], "cut.bmp": _encoded("BMP", pixels)[:-40],
        "cut.webp": _encoded("WEBP", pixels)[:-40],
        "phone.heic": b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64),
        "phone.jpg": b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64),
        "scan.tif": _encoded("TIFF", pixels), "photo.avif": _encoded("AVIF", pixels),
        "moving.webp": _encoded("WEBP", pixels, save_all=True,
                                append_images=[Image.fromarray(255 - pixels)]),
        "notes.txt": b"not a photo", "text.png": b"not a photo",
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    problems = {name: image_problem(tmp_path / name) for name in files}
    assert {n for n, p in problems.items() if p is None} == {
        "photo.gif", "photo.bmp", "photo.webp", "photo.png", "no_suffix"}
    for name in ("cut.gif", "cut.bmp", "cut.webp"):
        assert problems[name].startswith("truncated ")
    assert problems["phone.heic"] == problems["phone.jpg"] == (
        "HEIC/HEIF image, which TensorFlow cannot decode")
    assert problems["scan.tif"].startswith("TIFF image")
    assert problems["photo.avif"].startswith("AVIF image")
    assert problems["moving.webp"].startswith("animated WebP")
    assert problems["notes.txt"].startswith("not an image file")
    assert problems["text.png"].startswith("not a JPEG, PNG, GIF, BMP or WebP image")
    # what image_problem accepts, the decode path decodes
    for name in ("photo.gif", "photo.bmp", "photo.webp", "photo.png", "no_suffix"):
        decoded = tf.io.decode_image(files[name], channels=3, expand_animations=False).numpy()
        assert decoded.shape == (24, 32, 3)


@pytest.mark.slow
def test_a_folder_of_gif_bmp_and_webp_photos_trains_and_heic_is_skipped_with_a_hint(tmp_path):
    """Slow: trains one epoch on the photos."""
    root = tmp_path / "photos"
    rng = np.random.default_rng(0)
    for label, name in enumerate(("cat", "dog")):
        (root / name).mkdir(parents=True)
        for i, fmt in enumerate(["GIF", "BMP", "WEBP"] * 2):
            pixels = np.clip(upright_photo(40, 48) * (0.5 + label) + rng.normal(0, 9, (40, 48, 3)),
                             0, 255).astype(np.uint8)
            (root / name / f"{i}.{fmt.lower()}").write_bytes(_encoded(fmt, pixels))
    (root / "dog" / "IMG_0001.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(64))
    (root / "dog" / "scan.tiff").write_bytes(_encoded("TIFF", upright_photo()))
    cfg = tiny_config(tmp_path, dataset=f"folder:{root}", batch_size=4, image_size=32,
                      transfer_epochs=1, validation_split=0.25)
    with pytest.warns(UserWarning, match="Skipped 2 file") as warned:
        train, val, test, info = load_splits(cfg)
    text = next(str(w.message) for w in warned if "Skipped" in str(w.message))
    assert "IMG_0001.HEIC (HEIC/HEIF image, which TensorFlow cannot decode)" in text
    assert "2 of them are in a format TensorFlow cannot decode: convert them to JPEG" in text
    assert info.num_train + info.num_val + info.num_test == 12
    assert sum(int(x.shape[0]) for ds in (train, val, test) for x, _ in ds) == 12  # none dropped
    with pytest.warns(UserWarning, match="Skipped 2 file"):  # training lists the folder again
        result = run_stage(cfg, "transfer", verbose=0)
    assert list(result.history["epoch"]) == [1]


def test_notebook_previews_show_folder_photos_upright(tmp_path):
    from lab5_utils.data import views
    from lab5_utils.data.splits import load_encoded

    root = _sideways_folder(tmp_path / "photos", 6)
    train, _, _, info = load_encoded(tiny_config(tmp_path, dataset=f"folder:{root}"))
    _, sizes = views.scan_examples(train, info.class_names, max_scan=10)
    assert sizes[["width", "height"]].values.tolist() == [[96, 64], [96, 64], [64, 96]]
    images, titles = views.sample_images(train, info.class_names, n=3)
    assert titles == ["a", "b", "c"] and [i.shape for i in images][:2] == [(64, 96, 3)] * 2
    assert np.abs(images[1].astype(float) - images[0]).mean() < 3
