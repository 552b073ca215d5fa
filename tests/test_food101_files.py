"""Food-101's official folder and archive (`food101_files`, read through `splits`), and what the
report says about the data: a miniature official layout (generated JPEGs, meta/ lists, its tar.gz)
built per test."""

import gzip
import hashlib
import json
import re
import shutil
import socket
import threading
from pathlib import Path

import pytest

from lab5_utils.data import food101_files, splits
from lab5_utils.data.splits import DataUnavailableError
from tests.conftest import FOOD_CLASSES, tiny_config, write_archive, write_official_food101


def _listed(root: Path, split: str) -> set[str]:
    return {str(root / "images" / f"{line}.jpg")
            for line in (root / "meta" / f"{split}.txt").read_text().split()}


def _paths(files: list) -> set[str]:
    return {path for path, _ in files}


def _split_files(cfg) -> dict[str, list]:
    _, files, _, _, _ = splits._folder_files(cfg)
    return files


@pytest.fixture
def official(tmp_path) -> Path:
    return write_official_food101(tmp_path / "src")


@pytest.fixture
def archive(tmp_path, official, monkeypatch) -> Path:
    """The miniature's tar.gz, with `food101_files.OFFICIAL` set to its size and MD5: the check
    is the one the real archive gets, against the miniature's own numbers."""
    path = write_archive(official, tmp_path / "food-101.tar.gz")
    content = path.read_bytes()
    monkeypatch.setattr(food101_files, "OFFICIAL", food101_files.ArchiveSpec(
        "food-101.tar.gz", len(content), hashlib.md5(content).hexdigest()))
    return path


# --- the folder ---------------------------------------------------------------------------------
@pytest.mark.parametrize("pointed_at", ["food-101", "parent", "images"])
def test_the_official_folder_gives_the_official_split(tmp_path, official, pointed_at):
    folder = {"food-101": official, "parent": official.parent, "images": official / "images"}[
        pointed_at]
    cfg = tiny_config(tmp_path, dataset=f"folder:{folder}", validation_split=0.2)
    info = splits.load_encoded(cfg).info
    assert info.class_names == list(FOOD_CLASSES)  # classes.txt's order, not sorted
    assert info.official_test and info.source == f"food101-files:{official}"
    files = _split_files(cfg)
    assert _paths(files["test"]) == _listed(official, "test")  # exactly test.txt
    assert _paths(files["train"]) | _paths(files["validation"]) == _listed(official, "train")
    assert not _paths(files["train"]) & _paths(files["validation"])
    for path, label in files["train"] + files["validation"] + files["test"]:
        assert Path(path).parent.name == FOOD_CLASSES[label]
    per_class = [sum(label == k for _, label in files["validation"]) for k in range(3)]
    assert per_class == [2, 2, 2]  # 20 % of each class's 10 listed images
    assert (info.num_train, info.num_val, info.num_test) == (24, 6, 12)
    assert "meta/test.txt" in info.split_rule
    again = _split_files(cfg.replace(seed=7))
    assert _paths(again["test"]) == _paths(files["test"])  # the seed moves validation only
    assert _paths(again["validation"]) != _paths(files["validation"])


def test_train_fraction_keeps_that_share_of_each_class(tmp_path, official):
    cfg = tiny_config(tmp_path, dataset=f"folder:{official}", validation_split=0.1,
                      train_fraction=0.5)
    files = _split_files(cfg)
    assert [sum(label == k for _, label in files["train"]) for k in range(3)] == [5, 5, 5]
    assert len(files["test"]) == 12


def _message(cfg) -> str:
    with pytest.raises(DataUnavailableError) as err:
        splits.load_encoded(cfg)
    return str(err.value)


def test_bad_official_folders_each_get_their_message(tmp_path, official):
    cfg = tiny_config(tmp_path, dataset=f"folder:{official}")
    images = official / "images"
    (official / "images").rename(tmp_path / "moved")
    assert re.search(r"has meta/ but no images/ folder", _message(cfg))
    from lab5_utils.train.training import run_stage

    with pytest.raises(DataUnavailableError, match="no images/ folder"):
        run_stage(cfg, "transfer", verbose=0)
    assert not Path(cfg.run_root).exists()  # stopped before the run folder
    (tmp_path / "moved").rename(images)

    shutil.rmtree(images / "sushi")
    assert "1 class(es) of meta/classes.txt have no folder" in _message(cfg) and "sushi" in _message(cfg)
    (images / "sushi").mkdir()
    text = _message(cfg)
    assert "14 image(s) listed in" in text and "train.txt: sushi/" in text and ", ..." in text

    write_official_food101(tmp_path / "again")
    again = tmp_path / "again" / "food-101"
    test = (again / "meta" / "test.txt").read_text()
    train = again / "meta" / "train.txt"
    train.write_text(test.split()[0] + "\n" + train.read_text())
    text = _message(cfg.replace(dataset=f"folder:{again}"))
    assert f"1 image(s) are listed in both meta/train.txt and meta/test.txt: {test.split()[0]}" in text


def test_a_damaged_jpeg_in_the_official_folder_is_skipped_or_stops_with_strict(tmp_path, official):
    damaged = sorted(_listed(official, "train"))[0]
    Path(damaged).write_bytes(Path(damaged).read_bytes()[:300])
    cfg = tiny_config(tmp_path, dataset=f"folder:{official}")
    with pytest.warns(UserWarning, match=r"Skipped 1 file\(s\).*truncated JPEG"):
        info = splits.load_encoded(cfg).info
    assert info.num_train + info.num_val == 29 and info.skipped_files[0].startswith(damaged)
    with pytest.raises(DataUnavailableError, match="truncated JPEG.*strict_data is on"):
        splits.load_encoded(cfg.replace(strict_data=True))


# --- the archive --------------------------------------------------------------------------------
def test_the_archive_is_checked_extracted_once_and_read_as_the_folder(tmp_path, archive, official,
                                                                      capsys):
    cache = tmp_path / "cache"
    cfg = tiny_config(tmp_path, dataset=f"archive:{archive}", data_cache=str(cache))
    info = splits.load_encoded(cfg).info
    printed = capsys.readouterr().out
    assert "[lab5] checking food-101.tar.gz (MD5)" in printed and "[lab5] extracted" in printed
    assert info.class_names == list(FOOD_CLASSES) and info.official_test
    extracted = Path(info.source.split(":", 1)[1])
    assert extracted.is_relative_to(cache) and extracted.name == "food-101"
    assert {Path(p).relative_to(extracted) for p in _paths(_split_files(cfg)["test"])} == {
        Path(p).relative_to(official) for p in _listed(official, "test")}
    assert splits.load_encoded(cfg).info.sizes == info.sizes
    assert "[lab5]" not in capsys.readouterr().out  # found again without reading the archive
    assert _kept(cache) == [extracted.parent.name]  # no partial folder left


def test_two_loads_at_once_extract_the_archive_once(tmp_path, archive):
    """`lab5 report` starts notebooks side by side: the second waits for the first one's folder."""
    lines, found = [], []

    def load():
        found.append(food101_files.extracted(archive, tmp_path / "cache", say=lines.append))

    threads = [threading.Thread(target=load) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(found) == 2 and found[0] == found[1] and found[0].is_dir()
    assert sum(line.startswith("[lab5] extracted") for line in lines) == 1


def _archive_message(cfg) -> str:
    """The error of a bad archive, once it is clear that nothing was left in the cache."""
    message = _message(cfg)
    assert _kept(Path(cfg.data_cache)) == []
    return message


def test_an_archive_of_the_wrong_size_is_refused_before_the_cache_is_made(tmp_path, archive):
    other = tmp_path / "other.tar.gz"
    other.write_bytes(archive.read_bytes() + bytes(10))
    cfg = tiny_config(tmp_path, dataset=f"archive:{other}", data_cache=str(tmp_path / "cache"))
    assert "is not food-101.tar.gz: " in _message(cfg)
    assert not (tmp_path / "cache").exists()


def _kept(cache: Path) -> list[str]:
    """What the cache folder holds besides the extraction's lock file."""
    return sorted(p.name for p in cache.iterdir() if p.name != ".lab5-extract.lock") if (
        cache.exists()) else []


def test_bad_archives_each_get_their_message_and_nothing_is_extracted(tmp_path, archive,
                                                                     monkeypatch):
    cfg = tiny_config(tmp_path, dataset=f"archive:{archive}", data_cache=str(tmp_path / "cache"))
    content = archive.read_bytes()
    truncated = tmp_path / "cut.tar.gz"
    truncated.write_bytes(content[: len(content) // 2])
    assert re.search(rf"is truncated: {len(content) // 2:,} bytes of the {len(content):,}",
                     _archive_message(cfg.replace(dataset=f"archive:{truncated}")))
    damaged = tmp_path / "damaged.tar.gz"
    damaged.write_bytes(content[:-10] + bytes(10))
    assert "has the wrong checksum: MD5" in _archive_message(cfg.replace(dataset=f"archive:{damaged}"))
    text_file = tmp_path / "notes.tar.gz"
    text_file.write_text("not an archive")
    assert "is not a tar.gz archive" in _archive_message(cfg.replace(dataset=f"archive:{text_file}"))
    gzip_of_text = tmp_path / "text.gz"  # a gzip file with the expected MD5 that holds no tar
    gzip_of_text.write_bytes(gzip.compress(b"just text, no tar" * 1000))
    monkeypatch.setattr(food101_files, "OFFICIAL", food101_files.ArchiveSpec(
        "food-101.tar.gz", gzip_of_text.stat().st_size,
        hashlib.md5(gzip_of_text.read_bytes()).hexdigest()))
    text = _archive_message(cfg.replace(dataset=f"archive:{gzip_of_text}"))
    assert "could not be extracted" in text and "not a tar.gz archive" in text


def test_a_cache_that_cannot_take_the_archive_is_refused_before_extracting(tmp_path, archive,
                                                                          monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    cfg = tiny_config(tmp_path, dataset=f"archive:{archive}", data_cache=str(blocker / "cache"))
    assert re.search(r"cache folder .* is not writable .*set data_cache", _message(cfg))
    monkeypatch.setattr(food101_files.shutil, "disk_usage",
                        lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    cfg = cfg.replace(data_cache=str(tmp_path / "small"))
    needed = archive.stat().st_size * 1.1 / 1e6
    text = _message(cfg)
    assert f"has 0.0 MB free; extracting the archive needs about {needed:.1f} MB" in text
    assert not list((tmp_path / "small").iterdir())


def test_tfds_path_prepares_from_the_local_archive_without_downloading(tmp_path, official,
                                                                       monkeypatch):
    """tfds takes `tfds:PATH`'s archive from its manual_dir (here refused by tfds' own checksum,
    since it is the miniature) and never opens a connection."""
    import tensorflow_datasets as tfds

    mine = write_archive(official, tmp_path / "my-copy.tar.gz")
    monkeypatch.setattr(tfds.core.constants, "DATA_DIR", str(tmp_path / "tfds"))  # read at import

    def no_network(*args, **kwargs):
        raise AssertionError("tfds tried to download")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    cfg = tiny_config(tmp_path, dataset=f"tfds:{mine}", data_cache=str(tmp_path / "cache"))
    text = _message(cfg)
    assert "NonMatchingChecksumError" in text and "tfds_manual/food-101.tar.gz" in text
    assert (tmp_path / "cache/tfds_manual/food-101.tar.gz").resolve() == mine
    assert "tfds:PATH needs the official food-101.tar.gz" in text
    assert (tmp_path / "tfds" / "food101").is_dir()  # prepared where it was told, nowhere else


def test_dataset_paths_are_validated(tmp_path):
    for prefix in ("archive:", "tfds:"):
        with pytest.raises(ValueError, match=f"dataset='{prefix}' is not valid: .*followed by a path"):
            tiny_config(tmp_path, dataset=prefix)
    with pytest.raises(ValueError, match="dataset='zip:x' is not valid: expected one of .*archive:PATH"):
        tiny_config(tmp_path, dataset="zip:x")
    with pytest.raises(DataUnavailableError, match="does not exist or is not a file"):
        splits.load_encoded(tiny_config(tmp_path, dataset=f"archive:{tmp_path / 'none.tar.gz'}"))


# --- a short run from the archive ---------------------------------------------------------------
@pytest.mark.slow
def test_a_short_run_from_the_archive_tests_on_exactly_test_txt(tmp_path, archive, official):
    """Slow: it trains both stages (tiny sizes) from the extracted miniature archive."""
    import numpy as np

    from lab5_utils.evaluate.scoring import PREDICTIONS_FILE
    from lab5_utils.files import read_json
    from lab5_utils.train.training import run_stage

    cfg = tiny_config(tmp_path, dataset=f"archive:{archive}", data_cache=str(tmp_path / "cache"),
                      image_size=32, batch_size=8, transfer_epochs=2, finetune_epochs=1,
                      calibration_images=16, validation_split=0.2)
    for stage in ("transfer", "finetune"):
        run = run_stage(cfg, stage, verbose=0).run_dir
        metrics = read_json(run / "metrics.json")
        assert (metrics["num_train"], metrics["num_val"], metrics["num_test"]) == (24, 6, 12)
        assert metrics["official_test"] and metrics["data_source"].startswith("food101-files:")
        assert read_json(run / "class_names.json") == list(FOOD_CLASSES)
        y_true = np.load(run / PREDICTIONS_FILE)["y_true"]
        assert sorted(y_true.tolist()) == sorted(
            FOOD_CLASSES.index(line.split("/")[0])
            for line in (official / "meta" / "test.txt").read_text().split())


# --- what the report says about the data --------------------------------------------------------
def test_the_report_names_the_source_the_counts_and_whether_test_is_official():
    from lab5_utils.report import narrative_data

    text = narrative_data.data_text("food101-files:/data/food-101", 67_400, 3_600, 25_250, 101,
                                    True, "test: meta/test.txt")
    assert text.startswith("**Data:** Food-101's official folder `/data/food-101`")
    assert "101 classes; 67,400 training, 3,600 validation and 25,250 test images" in text
    assert "test images; splits: test: meta/test.txt. " in text
    assert "is Food-101's official test set" in text
    own = narrative_data.data_text("folder:/photos", 80, 10, 10, 3, False)
    assert "the image folder `/photos`: 3 classes; 80 training" in own
    assert "is not Food-101's official test set" in own
    assert "through tensorflow-datasets" in narrative_data.source_name("food101")
    archive = narrative_data.source_name("tfds:/a/food-101.tar.gz")
    assert "from the archive `/a/food-101.tar.gz`" in archive


def test_the_original_lab_is_compared_like_with_like():
    from lab5_utils.report import narrative_data

    like = narrative_data.original_like_with_like
    same = like("imagenet", "food101-files:/k/food-101", True)
    assert "Both use Food-101" in same and "official test set" in same
    assert "cannot be compared" in like("imagenet", "folder:/p", False)
    assert "not ImageNet weights" in like("calibrated", "food101", True)
    assert like("imagenet", None, False) == ""


def test_the_report_reads_the_data_of_the_transfer_run(tmp_path):
    import pandas as pd

    from lab5_utils.report import narrative_data

    cfg = tiny_config(tmp_path, dataset="food101")
    table = pd.DataFrame({"run": ["transfer"], "status": ["finished"]})
    assert narrative_data.data_used(cfg, table).startswith("**Data:** no finished transfer run")
    run = Path(cfg.run_root) / "transfer"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps(  # a run made before data_source existed
        {"num_train": 7575, "num_val": 3790, "num_test": 25250, "split_rule": "r"}))
    (run / "class_names.json").write_text(json.dumps(["a"] * 101))
    text = narrative_data.data_used(cfg, table)
    assert "(`food101`): 101 classes; 7,575 training, 3,790 validation and 25,250 test" in text
    assert "is Food-101's official test set" in text
    (run / "metrics.json").write_text(json.dumps({"num_train": 8, "num_val": 2, "num_test": 2,
                                                  "data_source": "synthetic", "official_test": False}))
    assert "is not Food-101's official test set" in narrative_data.data_used(cfg, table)
