"""Test-time settings (`tta`, `test_image_size`) measured on validation too: one function applies
them for validation, test and `lab5 predict`; a sweep of them is allowed, validation (at those
settings) chooses, and its values share one training."""

import io
import json
import re
import shutil
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from lab5_utils import tables
from lab5_utils.cli import main
from lab5_utils.config import LabConfig
from lab5_utils.data import splits
from lab5_utils.evaluate import scoring
from lab5_utils.evaluate.predict import predict_files
from lab5_utils.model import network, recipe
from lab5_utils.report import analysis, narrative
from lab5_utils.train import rundir
from lab5_utils.train.sweep import parse_sweep, sweep_runs
from tests.conftest import tiny_config
from tests.test_predict import halves_model


# --- one function: the model at its test-time settings ----------------------------------------
def test_at_test_time_is_the_model_at_the_test_size_averaged_with_its_mirror(tmp_path):
    cfg = tiny_config(tmp_path, image_size=32, test_image_size=48, tta="flip", weights=None)
    model = network.build_model(cfg, 3)
    tested = network.at_test_time(model, cfg)
    assert tested.input_shape == (None, 48, 48, 3)
    resized = network.with_input_size(model, cfg, 48)
    x = np.random.default_rng(0).integers(0, 256, (4, 48, 48, 3)).astype(np.float32)
    plain, mirror = (np.asarray(resized(v, training=False)) for v in (x, x[:, :, ::-1]))
    np.testing.assert_allclose(np.asarray(tested(x, training=False)), (plain + mirror) / 2,
                               rtol=1e-5, atol=1e-6)
    same = cfg.replace(tta="none", test_image_size=None)
    assert recipe.trains_as_it_tests(same) and network.at_test_time(model, same) is model


def test_validation_at_test_time_is_the_validation_split_at_the_test_size(tmp_path):
    cfg = tiny_config(tmp_path, image_size=32, test_image_size=48, label_smoothing=0.1)
    encoded = splits.load_encoded(cfg)
    trained_on = splits.load_splits(cfg, encoded).validation  # one-hot labels (smoothing)
    at_test_time = splits.test_time_validation(cfg, encoded)
    images, labels = (np.concatenate(parts) for parts in zip(*at_test_time.as_numpy_iterator()))
    val_images, val_labels = (np.concatenate(p) for p in zip(*trained_on.as_numpy_iterator()))
    assert images.shape[1:] == (48, 48, 3) and val_images.shape[1:] == (32, 32, 3)
    assert labels.dtype == np.int32 and len(labels) == cfg.num_classes * 6
    np.testing.assert_array_equal(labels, val_labels.argmax(axis=1))  # the same images, in order


# --- a sweep of them: allowed; validation at those settings chooses ------------------------------
def test_a_sweep_of_tta_or_test_image_size_is_accepted(tmp_path):
    cfg = LabConfig.preset("demo", run_root=str(tmp_path))
    assert parse_sweep("tta=none,flip", cfg) == ("tta", ["none", "flip"])
    assert parse_sweep("test_image_size=96,128", cfg) == ("test_image_size", [96, 128])


def _write_run(cfg, name, val, at_test_time, settings, test_correct, image_size=96):
    """A finished run folder by hand; `at_test_time` None: written by an older lab5."""
    folder = Path(cfg.run_root) / name
    folder.mkdir(parents=True)
    correct = np.asarray(test_correct, bool)
    y_true = np.arange(len(correct)) % 3
    probs = np.full((len(correct), 3), 0.1, np.float32)
    probs[np.arange(len(correct)), np.where(correct, y_true, (y_true + 1) % 3)] = 0.8
    scoring.save_predictions(folder / scoring.PREDICTIONS_FILE,
                              scoring.Predictions(y_true, probs, np.zeros((0, 1, 1, 3))))
    metrics = {"learning_rate": 1e-4, "best_val_accuracy": val, "num_val": 400, "best_epoch": 6,
               "test_accuracy": float(correct.mean()), "num_test": len(correct),
               "trainable_params": 1000, "seconds_per_epoch": 1.5, "wall_time_s": 10.0,
               "device": "device: CPU", "image_size": image_size}
    if at_test_time is not None:
        metrics |= {"test_time_val_accuracy": at_test_time, "test_time": settings}
    (folder / "metrics.json").write_text(json.dumps(metrics))


def _tta_sweep(cfg, flip_val=0.66, old_transfer=False):
    """transfer; tta=none and tta=flip, trained alike (the same validation accuracy at 96 px),
    measured apart: flip at `flip_val` on validation."""
    rng = np.random.default_rng(3)
    base = rng.random(400) < 0.5
    _write_run(cfg, "transfer", 0.50, None if old_transfer else 0.50, "one pass at 96 px", base)
    runs = sweep_runs([1e-4], "tta", ["none", "flip"])
    _write_run(cfg, runs[0].name, 0.60, 0.60, "one pass at 96 px", base | (rng.random(400) < 0.2))
    _write_run(cfg, runs[1].name, 0.60, flip_val, "flip TTA at 96 px",
               base | (rng.random(400) < 0.3))
    return runs


@pytest.mark.parametrize("flip_val, chosen", [(0.66, "tta=flip"), (0.55, "tta=none")])
def test_validation_at_the_test_time_settings_chooses_the_value(tmp_path, flip_val, chosen):
    cfg = LabConfig.preset("demo", run_root=str(tmp_path / "runs"))
    runs = _tta_sweep(cfg, flip_val)
    table = analysis.results_table(cfg, runs)
    assert analysis.best_finetune(table)["setting"] == chosen  # the two tie at 96 px, one pass
    assert list(analysis.glance_data(table)["val accuracy"]) == pytest.approx(
        [50.0, 60.0, 100 * flip_val])
    text = narrative.conclusion(table)
    settings = "flip TTA" if chosen == "tta=flip" else "one pass"
    best = f"{max(flip_val, 0.6) * 100:.2f} %"
    assert f"fine-tuning at **{chosen} (lr=1e-04)** had the best validation accuracy" in text
    assert f"({best} [95 % CI" in text
    if chosen == "tta=flip":  # its validation at test time differs: the sentence names how
        assert f"with {settings} at 96 px, at epoch 6)" in text
    else:  # one pass at the training size: the same number, so no settings to name
        assert re.search(rf"\({best} \[95 % CI [0-9.]+-[0-9.]+\] at epoch 6\)", text)
    assert narrative.headline(table).startswith(f"**Validation chose fine-tuning at {chosen}")
    shown = tables.results_view(table)
    assert list(shown["test time"]) == ["one pass at 96 px", "one pass at 96 px",
                                        "flip TTA at 96 px"]
    assert shown["validation accuracy at test time (%) [95 % CI]"].iloc[2].startswith(
        f"{100 * flip_val:.2f} [")


def test_runs_of_an_older_lab5_load_with_a_dash_and_validation_at_the_training_size(tmp_path):
    cfg = LabConfig.preset("demo", run_root=str(tmp_path / "runs"))
    runs = _tta_sweep(cfg, old_transfer=True)
    table = analysis.results_table(cfg, runs)
    assert pd.isna(table.iloc[0]["test-time val accuracy (%)"])
    shown = tables.results_view(table)
    assert shown["validation accuracy at test time (%) [95 % CI]"].iloc[0] == tables.DASH
    assert shown["test time"].iloc[0] == tables.DASH
    assert list(analysis.glance_data(table)["val accuracy"]) == [50.0, 60.0, 60.0]  # all at 96 px
    for name in [r.name for r in runs]:  # a whole sweep of an older lab5
        path = Path(cfg.run_root) / name / "metrics.json"
        old = {k: v for k, v in json.loads(path.read_text()).items()
               if k not in ("test_time_val_accuracy", "test_time")}
        path.write_text(json.dumps(old))
    table = analysis.results_table(cfg, runs)
    assert analysis.choice_split(analysis.finished_finetunes(table)) == "val"
    assert analysis.best_finetune(table)["setting"] == "tta=none"  # a tie: the first value
    assert "test time" not in tables.results_view(table).columns
    assert "at epoch 6)" in narrative.conclusion(table)


def test_a_learning_rate_sweep_at_the_training_settings_shows_no_test_time_columns(tmp_path):
    cfg = LabConfig.preset("demo", run_root=str(tmp_path / "runs"))
    rng = np.random.default_rng(4)
    _write_run(cfg, "transfer", 0.5, 0.5, "one pass at 96 px", rng.random(100) < 0.5)
    _write_run(cfg, "finetune_lr=1e-04", 0.6, 0.6, "one pass at 96 px", rng.random(100) < 0.5)
    shown = tables.results_view(analysis.results_table(cfg))
    assert "test time" not in shown.columns
    assert "validation accuracy at test time (%) [95 % CI]" not in shown.columns


def test_a_runs_text_gives_validation_at_test_time_only_when_it_differs():
    metrics = {"best_val_accuracy": 0.6, "best_epoch": 6, "first_epoch": 5, "last_epoch": 6,
               "final_val_accuracy": 0.58, "final_accuracy": 0.7, "trainable_params": 1000,
               "seconds_per_epoch": 2.0, "learning_rate": 1e-4}
    assert "as the test split is" not in narrative.describe_run(metrics)  # an older run
    same = metrics | {"test_time_val_accuracy": 0.6, "test_time": "one pass at 96 px"}
    assert "as the test split is" not in narrative.describe_run(same)
    for value in (0.64, 0.52):
        text = narrative.describe_run(metrics | {"test_time_val_accuracy": value,
                                                 "test_time": "flip TTA at 128 px"})
        assert (f"Measured as the test split is (flip TTA at 128 px), its validation accuracy "
                f"is {100 * value:.2f} %.") in text


# --- one training for every value of a test-time setting ----------------------------------------
def _finished(folder: Path, cfg: LabConfig) -> None:
    """A finished fine-tuning run folder by hand (its training files are stand-ins)."""
    (folder / "tb" / "train").mkdir(parents=True)
    (folder / "tb" / "train" / "events").write_text("logs")
    (folder / "config.json").write_text(cfg.to_json())
    (folder / "best.keras").write_bytes(b"weights")
    (folder / "history.csv").write_text("epoch,val_accuracy\n4,0.5\n")
    transfer = Path(cfg.run_root) / "transfer"
    (folder / "metrics.json").write_text(json.dumps({"transfer_run": str(transfer)}))


def _beside(cfg: LabConfig, trained: str, new: str) -> tuple[Path, Path]:
    """A finished run folder `trained` and an empty one `new` beside it."""
    folders = Path(cfg.run_root) / trained, Path(cfg.run_root) / new
    _finished(folders[0], cfg)
    folders[1].mkdir()
    return folders


def test_a_run_that_differs_only_in_test_time_settings_copies_the_training(tmp_path):
    cfg = tiny_config(tmp_path)
    trained, flip = _beside(cfg, "finetune_lr=1e-04_tta=none", "finetune_lr=1e-04_tta=flip")
    transfer = Path(cfg.run_root) / "transfer"
    elsewhere = Path(cfg.run_root) / "other" / ".." / "transfer"  # the same folder, spelled apart
    other_start = tmp_path / "transfer"
    assert rundir.share_training(flip, cfg.replace(tta="flip"), other_start) is None
    assert rundir.share_training(flip, cfg.replace(tta="flip", test_image_size=96),
                                 elsewhere) == trained
    for name in ("best.keras", "history.csv", "tb/train/events"):
        assert (flip / name).read_bytes() == (trained / name).read_bytes()
    assert (flip / rundir.TRAINED_IN).read_text().strip() == trained.name
    assert not (flip / "metrics.json").exists()  # it is measured, not finished
    assert rundir.share_training(flip, cfg.replace(tta="flip"), transfer) is None  # trained now


def test_a_run_that_trains_differently_copies_nothing(tmp_path):
    cfg = tiny_config(tmp_path)
    trained, other = _beside(cfg, "finetune_lr=1e-04", "finetune_lr=1e-04_dropout=0.5")
    transfer = Path(cfg.run_root) / "transfer"
    assert rundir.share_training(other, cfg.replace(dropout=0.5, tta="flip"), transfer) is None
    (trained / "metrics.json").unlink()  # unfinished: its training may still change
    flip = Path(cfg.run_root) / "finetune_lr=1e-04_tta=flip"
    flip.mkdir()
    assert rundir.share_training(flip, cfg.replace(tta="flip"), transfer) is None
    assert sorted(p.name for p in flip.iterdir()) == []


def test_the_estimate_counts_one_training_for_a_sweep_of_a_test_time_setting(tmp_path,
                                                                             monkeypatch):
    from lab5_utils.cost import estimate
    from lab5_utils.report import build

    calls = []
    monkeypatch.setattr(estimate, "preflight", lambda cfg, stages, *a, **k: calls.append(
        (stages, k["finetune_runs"])))
    cfg = LabConfig.preset("quick", run_root=str(tmp_path / "runs"))
    for key, values in (("test_image_size", [224, 256, 288]), ("dropout", [0.1, 0.2, 0.3])):
        build._preflight(cfg, sweep_runs([1e-4], key, values), False, False, False, 5, [])
    assert calls == [(["transfer", "finetune"], 1), (["transfer", "finetune"], 3)]


# --- lab5 predict applies them; --no-test-time turns them off -----------------------------------
@pytest.fixture
def sided_model(tmp_path):
    """`halves_model` by columns: "right" when the right half of the image is brighter than
    the left. Its mirror image gets the other answer with the same confidence, so flip TTA
    averages any image to exactly 50 / 50. And a photo brighter on the right."""
    from PIL import Image

    photo = np.zeros((40, 40, 3), np.uint8)
    photo[:, 20:] = 230
    Image.fromarray(photo).save(tmp_path / "right.png")
    return halves_model(tmp_path / "run", axis=1, names=("left", "right")), tmp_path / "right.png"


def test_predict_applies_the_runs_tta_and_the_flag_turns_it_off(sided_model, tmp_path, capsys):
    path, photo = sided_model
    alone, _ = predict_files(path, [photo], top=2)  # no config.json: the model as it is
    assert dict(alone[0].ranked)["right"] > 0.9
    (path.parent / "config.json").write_text(json.dumps({"tta": "flip", "image_size": 32}))
    tested, _ = predict_files(path, [photo], top=2)
    assert dict(tested[0].ranked)["right"] == pytest.approx(0.5, abs=1e-5)
    plain, _ = predict_files(path, [photo], top=2, test_time=False)
    assert dict(plain[0].ranked) == pytest.approx(dict(alone[0].ranked))
    assert main(["predict", str(photo), "--model", str(path), "--csv", "--no-test-time"]) == 0
    row = pd.read_csv(io.StringIO(capsys.readouterr().out)).iloc[0]
    assert row["class_1"] == "right" and row["prob_1"] > 0.9


def test_predict_rebuilds_the_model_at_the_runs_test_size(tmp_path):
    cfg = tiny_config(tmp_path, image_size=32, weights=None, num_classes=3)
    model = network.build_model(cfg, 3)
    path = tmp_path / "run" / "best.keras"
    path.parent.mkdir()
    model.save(path)
    (path.parent / "config.json").write_text(cfg.replace(test_image_size=48, tta="flip").to_json())
    photo = tmp_path / "photo.png"
    from PIL import Image

    pixels = np.random.default_rng(5).integers(0, 256, (60, 50, 3)).astype(np.uint8)
    Image.fromarray(pixels).save(photo)
    got, problems = predict_files(path, [photo], top=3)
    from lab5_utils.evaluate.predict import _read

    image = _read(photo, 48)[0][None].astype(np.float32)
    expected = np.asarray(network.at_test_time(model, cfg.replace(test_image_size=48, tta="flip"))(
        image, training=False))[0]
    assert problems == [] and len(got) == 1
    probs = dict(got[0].ranked)
    for i, name in enumerate(["class 0", "class 1", "class 2"]):
        assert probs[name] == pytest.approx(float(expected[i]), abs=1e-5)


@pytest.mark.slow
def test_a_sweep_value_of_tta_is_measured_on_the_copied_training_without_fit(
        trained_lab, tmp_path, monkeypatch):
    """Slow: it evaluates EfficientNet-B0 (validation and test, flip TTA) on a copy of the
    shared training's runs; only `run_stage` shows the copy is measured, not trained again."""
    from lab5_utils.train import training

    cfg, transfer, finetune = trained_lab
    root = tmp_path / "runs"
    shutil.copytree(finetune.run_dir, root / finetune.run_dir.name)  # started from `transfer`
    flip = cfg.replace(run_root=str(root), tta="flip")

    def no_fit(*args, **kwargs):
        raise AssertionError("the copied training was trained again")

    monkeypatch.setattr(keras.Model, "fit", no_fit)
    run_dir = root / f"{finetune.run_dir.name}_tta=flip"
    result = training.run_stage(flip, "finetune", run_dir=run_dir, verbose=0,
                                transfer_dir=transfer.run_dir)
    m = result.metrics
    assert m["trained_in"] == finetune.run_dir.name and m["test_time"].startswith("flip TTA")
    assert m["best_val_accuracy"] == finetune.metrics["best_val_accuracy"]
    assert m["seconds_per_epoch"] == finetune.metrics["seconds_per_epoch"]
    pd.testing.assert_frame_equal(result.history, finetune.history)
    best = network.load_model(run_dir / "best.keras")
    validation = splits.test_time_validation(flip, splits.load_encoded(flip))
    seen = scoring.collect_predictions(network.at_test_time(best, flip), validation, keep_images=0)
    assert m["test_time_val_accuracy"] == pytest.approx(seen.correct.mean())
