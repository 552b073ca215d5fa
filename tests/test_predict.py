"""`lab5 predict` on files and folders as users have them: orientation, formats, CSV, --explain."""

import io
import json

import keras
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lab5_utils.cli import main
from lab5_utils.evaluate.predict import overlay_targets, predict_files
from tests.test_explain import small_cam_model
from tests.test_photos import _TO_STORED, save_with_orientation, upright_photo


def halves_model(folder, axis: int = 0, names: tuple[str, str] = ("top", "bottom")):
    """A 32 px model, saved as `folder/best.keras` with its class names, whose answer is where
    the light is: `names[1]` when the second half of the image along `axis` (0: rows, 1:
    columns) is brighter than the first, `names[0]` otherwise. Its answers to an image and to
    that image mirrored along `axis` are the same two probabilities, swapped."""
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    dense = keras.layers.Dense(2, activation="softmax")
    model = keras.Model(inputs, dense(x))
    second = np.zeros((32, 32, 3), np.float32)
    second[(slice(None),) * axis + (slice(16, None),)] = 1.0
    w = (second - 0.5).reshape(-1) * 0.05
    dense.set_weights([np.stack([-w, w], axis=1), np.zeros(2, np.float32)])
    path = folder / "best.keras"
    path.parent.mkdir()
    model.save(path)
    (path.parent / "class_names.json").write_text(json.dumps(list(names)))
    return path


@pytest.fixture
def position_model(tmp_path):
    """`halves_model`: class "bottom" when the lower half of the image is brighter than the
    upper half, "top" otherwise."""
    return halves_model(tmp_path / "model")


def _encoded(fmt: str, pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def test_predict_sees_a_sideways_stored_jpeg_upright(position_model, tmp_path):
    photo = upright_photo()  # brighter downwards
    Image.fromarray(photo).save(tmp_path / "upright.jpg", quality=95)
    save_with_orientation(tmp_path / "sideways.jpg", photo, 6)
    Image.fromarray(photo).transpose(_TO_STORED[6]).save(tmp_path / "untagged.jpg", quality=95)
    results, problems = predict_files(position_model, [tmp_path / "upright.jpg",
                                                       tmp_path / "sideways.jpg",
                                                       tmp_path / "untagged.jpg"], top=2)
    assert problems == []
    bottom = {r.path.rsplit("/", 1)[1]: dict(r.ranked)["bottom"] for r in results}
    assert bottom["upright.jpg"] > 0.9
    assert abs(bottom["sideways.jpg"] - bottom["upright.jpg"]) < 0.01
    assert bottom["untagged.jpg"] < 0.7  # the control: turned, the light is at the side


def test_predict_a_folder_as_csv_one_row_per_decodable_image(position_model, tmp_path, capsys):
    photos = tmp_path / "photos"
    (photos / "more").mkdir(parents=True)
    photo = upright_photo()
    Image.fromarray(photo).save(photos / "upright.jpg")
    save_with_orientation(photos / "sideways.jpg", photo, 6)
    (photos / "anim.gif").write_bytes(_encoded("GIF", photo))
    (photos / "photo.webp").write_bytes(_encoded("WEBP", photo))
    (photos / "more" / "photo.bmp").write_bytes(_encoded("BMP", photo))  # found recursively
    (photos / "notes.txt").write_text("shopping list")
    (photos / "IMG_0001.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(64))
    broken = (photos / "upright.jpg").read_bytes()
    (photos / "broken.jpg").write_bytes(broken[:3] + bytes(600) + broken[-2:])  # decoding finds it
    (photos / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")  # hidden: left out

    code = main(["predict", str(photos), "--model", str(position_model), "--csv", "--top", "2"])
    captured = capsys.readouterr()
    table = pd.read_csv(io.StringIO(captured.out))
    assert code == 1  # some files could not be read: said on stderr, one line each
    assert list(table.columns) == ["path", "class_1", "prob_1", "class_2", "prob_2", "error"]
    images = table[table["error"].isna()]
    assert sorted(p.rsplit("/", 1)[1] for p in images["path"]) == [
        "anim.gif", "photo.bmp", "photo.webp", "sideways.jpg", "upright.jpg"]
    assert (images["class_1"] == "bottom").all() and (images["prob_1"] > 0.9).all()
    assert np.allclose(images["prob_1"] + images["prob_2"], 1.0)
    failed = dict(zip(table.loc[table["error"].notna(), "path"].str.rsplit("/", n=1).str[1],
                      table.loc[table["error"].notna(), "error"]))
    assert sorted(failed) == ["IMG_0001.HEIC", "broken.jpg", "notes.txt"]
    assert failed["IMG_0001.HEIC"] == "HEIC/HEIF image, which TensorFlow cannot decode"
    assert failed["broken.jpg"].startswith("cannot be decoded")
    *err, closing = captured.err.strip().splitlines()  # the last line names the command's log
    assert len(err) == 4 and "notes.txt: not an image" in captured.err
    assert closing.startswith("[lab5] log: ")
    assert err[-1] == ("lab5 predict: 1 of them are in a format TensorFlow cannot decode: "
                       "convert them to JPEG first (macOS Preview: File > Export; Python: "
                       "Pillow, with the pillow-heif package for HEIC); iPhones save JPEG with "
                       "Settings > Camera > Formats > Most Compatible.")

    assert main(["predict", str(photos / "upright.jpg"), "--model", str(position_model)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["image", "top-1", "top-2"]
    assert lines[1].split()[1:] == ["bottom", f"({float(images['prob_1'].iloc[-1]):.1%})",
                                    "top", f"({float(images['prob_2'].iloc[-1]):.1%})"]


def test_overlay_names_follow_the_images_and_never_replace_a_file(tmp_path):
    files = [tmp_path / "a" / "pizza.jpg", tmp_path / "b" / "pizza.jpg", tmp_path / "pizza.png",
             tmp_path / "pizza-2.jpg", tmp_path / "soup.webp"]
    out = tmp_path / "explained"
    assert [t.name for t in overlay_targets(files, out)] == [
        "pizza.png", "pizza-2.png", "pizza-3.png", "pizza-2-2.png", "soup.png"]
    out.mkdir()
    (out / "soup.png").write_bytes(b"the user's own file")
    with pytest.raises(ValueError, match=r"--explain .*explained: 1 overlay file\(s\) already "
                                         r"exist there \(soup.png\).*--force"):
        overlay_targets(files, out)
    assert overlay_targets(files, out, force=True)[-1] == out / "soup.png"
    assert (out / "soup.png").read_bytes() == b"the user's own file"  # only named, not written


def test_explain_writes_one_overlay_per_image_in_the_photos_proportions(tmp_path, capsys):
    model = small_cam_model()  # the structure Grad-CAM needs, untrained: fast
    model_path = tmp_path / "best.keras"
    model.save(model_path)
    photos = tmp_path / "photos"
    photos.mkdir()
    save_with_orientation(photos / "portrait.jpg", upright_photo(120, 80), 6)  # stored 80 x 120
    Image.fromarray(upright_photo(60, 150)).save(photos / "wide.png")
    (photos / "notes.txt").write_text("not an image")
    out = tmp_path / "explained"
    args = ["predict", str(photos), "--model", str(model_path), "--explain", str(out)]
    assert main(args) == 1  # notes.txt is reported
    table = capsys.readouterr().out
    assert "overlay" in table.splitlines()[0] and str(out / "portrait.png") in table
    assert sorted(p.name for p in out.iterdir()) == ["portrait.png", "wide.png"]
    assert Image.open(out / "portrait.png").size == (80, 120)  # (width, height) as displayed
    assert Image.open(out / "wide.png").size == (150, 60)
    before = (out / "wide.png").read_bytes()
    assert main(args) == 2  # a second run refuses to replace them, before any work
    assert "--force" in capsys.readouterr().err
    assert (out / "wide.png").read_bytes() == before
    assert main([*args, "--force"]) == 1


def test_bad_arguments_get_one_message_naming_them(position_model, tmp_path, capsys):
    photo = tmp_path / "photo.jpg"
    Image.fromarray(upright_photo()).save(photo)
    assert main(["predict", str(photo), "--model", str(position_model), "--top", "0"]) == 2
    assert "--top=0 is not valid: expected an integer >= 1" in capsys.readouterr().err
    taken = tmp_path / "taken.png"
    taken.write_bytes(b"a file")
    assert main(["predict", str(photo), "--model", str(position_model), "--explain", str(taken)]) == 2
    assert "is a file; expected a folder" in capsys.readouterr().err
    assert taken.read_bytes() == b"a file"
    assert main(["predict", str(photo), "--model", str(tmp_path / "none.keras")]) == 2
    assert "none.keras' does not exist" in capsys.readouterr().err
