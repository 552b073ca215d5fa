"""`run_stage`: the run folder, its metrics, refusals, and runs killed and resumed.

The tests that read `trained_lab` (the session's shared tiny training) or train are slow; the
refusals are fast."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from lab5_utils.files import remove_partial_files
from lab5_utils.train.epoch_logs import load_history, read_tensorboard
from lab5_utils.train.rundir import settle_best as _settle_best
from lab5_utils.train.training import RunError, run_stage
from tests.conftest import tiny_config


@pytest.mark.slow
def test_run_directories_hold_every_file(trained_lab):
    """Slow: reads the shared tiny training (`trained_lab`)."""
    _, transfer, finetune = trained_lab
    for result in (transfer, finetune):
        names = {p.name for p in result.run_dir.iterdir()}
        assert {"config.json", "history.csv", "tb", "best.keras", "metrics.json",
                "test_predictions.npz"} <= names
        assert "backup" not in names  # BackupAndRestore cleans up after a finished run
        metrics = json.loads((result.run_dir / "metrics.json").read_text())
        hist = load_history(result.run_dir)
        assert metrics["best_val_accuracy"] == pytest.approx(hist["val_accuracy"].max())
        assert hist.loc[hist["val_accuracy"].idxmax(), "epoch"] == metrics["best_epoch"]
        assert metrics["seconds_per_epoch"] > 0 and metrics["trainable_params"] > 0
        assert {"loss", "accuracy", "val_loss", "val_accuracy", "top5", "val_top5", "lr"} <= set(hist)


@pytest.mark.slow
def test_metrics_say_which_split_each_number_comes_from(trained_lab):
    """Slow: reads the shared tiny training (`trained_lab`)."""
    cfg, transfer, finetune = trained_lab
    sizes = (cfg.num_classes * cfg.synthetic_train_per_class,
             cfg.num_classes * cfg.synthetic_val_per_class,
             cfg.num_classes * cfg.synthetic_test_per_class)
    for result in (transfer, finetune):
        m = result.metrics
        assert (m["num_train"], m["num_val"], m["num_test"]) == sizes
        assert m["selected_on"] == "validation" and m["selected_epoch"] == m["best_epoch"]
        assert m["split_of"]["best_val_accuracy"] == "validation"
        assert m["split_of"]["test_accuracy"] == "test" and m["split_of"]["final_accuracy"] == "train"
        assert 0 <= m["test_accuracy"] <= m["test_top5"] <= 1 and m["test_loss"] > 0
        right = m["test_accuracy"] * m["num_test"]  # a whole number of test images
        assert right == pytest.approx(round(right))
        assert m["optimizer_state_mb"] == pytest.approx(m["trainable_params"] * 12 / 2**20)
        assert m["training_memory_mb"] > 0 and m["memory_kind"] == "RSS peak during training"
    assert finetune.metrics["optimizer_state_mb"] > 100 * transfer.metrics["optimizer_state_mb"]


@pytest.mark.slow
def test_each_run_is_one_hparams_session_with_its_test_accuracy(trained_lab):
    """Slow: reads the shared tiny training (`trained_lab`)."""
    from tensorboard.plugins.hparams import metadata

    from lab5_utils.train.epoch_logs import _events

    cfg, transfer, finetune = trained_lab
    for result, stage, lr, unfreeze in ((transfer, "transfer", cfg.learning_rate, "none"),
                                        (finetune, "finetune", cfg.finetune_learning_rate,
                                         cfg.unfreeze)):
        files = list((result.run_dir / "tb").glob("events.out.tfevents.*"))
        assert len(files) == 1  # one session per run, directly in tb/
        hparams, scalars = None, {}
        for _, event in _events(files[0]):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == metadata.PLUGIN_NAME:
                    data = metadata.parse_session_start_info_plugin_data(
                        value.metadata.plugin_data.content)
                    hparams = {k: v for k, v in data.hparams.items()}
                elif value.tag.startswith("hparams/"):
                    import tensorflow as tf

                    scalars[value.tag] = float(tf.make_ndarray(value.tensor))
        assert hparams["stage"].string_value == stage and hparams["unfreeze"].string_value == unfreeze
        assert hparams["learning_rate"].number_value == pytest.approx(lr)
        assert scalars["hparams/test_accuracy"] == pytest.approx(result.metrics["test_accuracy"])
        assert scalars["hparams/selected_val_accuracy"] == pytest.approx(
            result.metrics["best_val_accuracy"])


@pytest.mark.slow
def test_the_test_split_is_read_once_and_only_after_training(tmp_path, monkeypatch):
    """No callback, schedule or checkpoint can see the test images: the test pipeline is first
    read after `fit` returns (validation chose the model by then), and read once. Slow: it
    trains, with `fit` and the data loading watched (the shared training cannot be)."""
    import keras
    import tensorflow as tf

    from lab5_utils.data.splits import Splits
    from lab5_utils.train import training

    events = []
    real_fit, real_load = keras.Model.fit, training.load_splits

    def fit(self, *args, **kwargs):
        events.append("fit starts")
        try:
            return real_fit(self, *args, **kwargs)
        finally:
            events.append("fit ends")

    def load_splits(cfg, encoded=None):
        splits = real_load(cfg, encoded)

        def read():
            events.append("test read")
            yield from splits.test.as_numpy_iterator()

        test = tf.data.Dataset.from_generator(read, output_signature=splits.test.element_spec)
        return Splits(splits.train, splits.validation, test, splits.info)

    monkeypatch.setattr(keras.Model, "fit", fit)
    monkeypatch.setattr(training, "load_splits", load_splits)
    cfg = tiny_config(tmp_path, transfer_epochs=2, image_size=32)
    result = run_stage(cfg, "transfer", verbose=0)
    assert events == ["fit starts", "fit ends", "test read"]
    assert result.metrics["num_test"] == cfg.num_classes * cfg.synthetic_test_per_class


@pytest.mark.slow
def test_a_run_killed_after_training_is_not_trained_again(trained_lab, tmp_path):
    """BackupAndRestore removes its backup when `fit` ends: a kill during the test evaluation
    that follows must not retrain the stage. The same call then only evaluates and finishes.
    Slow: it evaluates EfficientNet-B0 on a copy of the shared training's transfer run."""
    cfg, first, _ = trained_lab
    run_dir = shutil.copytree(first.run_dir, tmp_path / "transfer")
    kept = {p: p.read_bytes() for p in (run_dir / "history.csv", run_dir / "best.keras")}
    (run_dir / "metrics.json").unlink()  # as a kill before metrics.json leaves it
    (run_dir / "test_predictions.npz").unlink()
    again = run_stage(cfg, "transfer", run_dir=run_dir, verbose=0)
    assert {p: p.read_bytes() for p in kept} == kept  # no epoch trained again
    assert again.metrics["test_accuracy"] == first.metrics["test_accuracy"]
    assert again.metrics["best_epoch"] == first.metrics["best_epoch"]
    assert (run_dir / "test_predictions.npz").is_file()


@pytest.mark.slow
def test_one_history_row_per_epoch_and_finetune_epochs_continue(trained_lab):
    """Slow: reads the shared tiny training (`trained_lab`)."""
    cfg, transfer, finetune = trained_lab
    assert list(load_history(transfer.run_dir)["epoch"]) == list(range(1, cfg.transfer_epochs + 1))
    assert list(load_history(finetune.run_dir)["epoch"]) == list(
        range(cfg.transfer_epochs + 1, cfg.transfer_epochs + cfg.finetune_epochs + 1)
    )


@pytest.mark.slow
def test_synthetic_accuracy_ends_well_above_chance_and_finetuning_changes_it(trained_lab):
    """Slow: reads the shared tiny training (`trained_lab`)."""
    cfg, transfer, finetune = trained_lab
    chance = 1 / cfg.num_classes
    assert transfer.metrics["best_val_accuracy"] >= 1.5 * chance
    assert finetune.metrics["trainable_params"] > 100 * transfer.metrics["trainable_params"]
    assert finetune.metrics["final_val_loss"] != pytest.approx(transfer.metrics["final_val_loss"])


def test_a_finished_run_is_never_overwritten(tmp_path):
    """A finished run folder (metrics.json written last) as `run_stage` leaves it, without its
    large files: the refusal reads only metrics.json and config.json."""
    cfg = tiny_config(tmp_path)
    run_dir = tmp_path / "runs" / "transfer"
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(cfg.to_json())
    (run_dir / "metrics.json").write_text(json.dumps({"best_val_accuracy": 0.5}))
    (run_dir / "history.csv").write_text("epoch,loss,accuracy,val_loss,val_accuracy\n0,1,0.4,1,0.5\n")
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in run_dir.iterdir()}
    with pytest.raises(RunError, match="already holds a finished run.*--force"):
        run_stage(cfg, "transfer", verbose=0)
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in run_dir.iterdir()} == before


def test_finetune_without_transfer_run_names_the_command(tmp_path):
    with pytest.raises(RunError, match="lab5 train --stage transfer --preset demo"):
        run_stage(tiny_config(tmp_path), "finetune", verbose=0)


def test_unfinished_run_with_other_config_is_not_resumed(tmp_path):
    cfg = tiny_config(tmp_path)
    run_dir = tmp_path / "runs" / "transfer"
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(cfg.replace(batch_size=8).to_json())
    with pytest.raises(RunError, match="batch_size: 8 in the run, 16 now"):
        run_stage(cfg, "transfer", verbose=0)
    assert json.loads((run_dir / "config.json").read_text())["batch_size"] == 8


def _train_command(cfg, run_dir):
    settings = [f"--set={k}={v}" for k, v in (
        ("image_size", cfg.image_size), ("batch_size", cfg.batch_size),
        ("transfer_epochs", cfg.transfer_epochs), ("num_classes", cfg.num_classes),
        ("synthetic_train_per_class", cfg.synthetic_train_per_class),
        ("synthetic_val_per_class", cfg.synthetic_val_per_class),
        ("synthetic_test_per_class", cfg.synthetic_test_per_class),
        ("steps_per_execution", cfg.steps_per_execution),
        ("calibration_images", cfg.calibration_images), ("run_root", cfg.run_root))]
    return [sys.executable, "-m", "lab5_utils.cli", "train", "--stage", "transfer",
            "--run-dir", str(run_dir), *settings]


def _kill_when(cmd, ready, timeout=300):
    """Start `cmd`, SIGKILL it as soon as `ready()` is true (or at the timeout)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not ready():
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def _rows(csv):
    return len(csv.read_text().splitlines()) - 1 if csv.is_file() else 0


@pytest.mark.slow
def test_run_killed_at_several_moments_resumes_with_every_epoch_exactly_once(tmp_path):
    """Slow: four `lab5 train` processes, three of them killed (start-up, right after an epoch,
    mid-epoch), each starting TensorFlow and tracing the model."""
    cfg = tiny_config(tmp_path, transfer_epochs=4, steps_per_execution=2,  # 2 steps per call
                      image_size=32, calibration_images=16)
    run_dir = tmp_path / "killed"
    cmd = _train_command(cfg, run_dir)
    csv, started = run_dir / "history.csv", time.time()
    # 1: during start-up (config written, model not trained yet)
    _kill_when(cmd, lambda: (run_dir / "config.json").is_file() and time.time() - started > 3)
    assert _rows(csv) == 0
    # 2: right after the first epoch is logged, possibly before its backup is written
    _kill_when(cmd, lambda: _rows(csv) >= 1)
    # 3: in the middle of a later epoch
    mark = {}
    _kill_when(cmd, lambda: _rows(csv) >= 2 and time.time() - mark.setdefault("t", time.time()) > 1)
    assert not (run_dir / "metrics.json").exists()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming after epoch" in done.stdout
    assert list(load_history(run_dir)["epoch"]) == [1, 2, 3, 4]
    assert list(read_tensorboard(run_dir / "tb")["epoch"]) == [1, 2, 3, 4]
    assert not any(p.name.startswith(".") for p in run_dir.rglob("*"))  # no partial files left
    assert (run_dir / "best.keras").is_file()
    assert json.loads((run_dir / "metrics.json").read_text())["steps_per_execution"] == 2


def test_resume_keeps_best_model_in_step_with_the_kept_epochs(tmp_path):
    """A kill can leave epoch-named best checkpoints and atomic-write temporaries behind:
    resuming after epoch 4 promotes the newest checkpoint of a kept epoch, deletes checkpoints
    of epochs that train again and the temporaries, and touches nothing else."""
    for name, text in [("best.keras", "epoch 1"), (".best-002.partial.keras", "epoch 2"),
                       (".best-004.partial.keras", "epoch 4"), (".best-005.partial.keras", "torn"),
                       (".history.csv.k1x2.tmp", "half"), ("history.csv", "rows"),
                       (".hidden-by-user", "keep"), ("tb/train/.events.out.tfevents.1.z.tmp", "")]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert _settle_best(tmp_path, finished=4) == tmp_path / "best.keras"
    assert [p.name for p in remove_partial_files(tmp_path)] == [
        ".history.csv.k1x2.tmp", ".events.out.tfevents.1.z.tmp"]
    assert (tmp_path / "best.keras").read_text() == "epoch 4"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden-by-user", "best.keras",
                                                          "history.csv", "tb"]
    assert not any((tmp_path / "tb").rglob("*.tmp"))
    (tmp_path / ".best-006.partial.keras").write_text("epoch 6, killed before its backup")
    assert _settle_best(tmp_path, finished=5) is None
    assert (tmp_path / "best.keras").read_text() == "epoch 4"
