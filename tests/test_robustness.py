"""Bad input is refused with one clear message and touches nothing; failures stay contained."""

import json

import keras
import pytest

from lab5_utils.model import network
from lab5_utils.train.training import RunError, run_stage
from tests.conftest import tiny_config


def test_weights_file_that_is_not_a_weights_file(tmp_path):
    fake = tmp_path / "notes.weights.h5"
    fake.write_text("these are not weights")
    with pytest.raises(ValueError, match="notes.weights.h5"):
        network.build_model(tiny_config(tmp_path, image_size=32, weights=str(fake)), 5)


def test_models_load_in_safe_mode_and_refuse_code(tmp_path):
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs))
    model.save(tmp_path / "lambda.keras")
    with pytest.raises(ValueError, match="safe_mode"):
        network.load_model(tmp_path / "lambda.keras")


def test_output_folder_that_cannot_be_written(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("keep me")
    with pytest.raises(RunError, match="cannot be written"):
        run_stage(tiny_config(tmp_path), "transfer", run_dir=blocker / "run", verbose=0)
    assert blocker.read_text() == "keep me"


def test_finetune_refuses_a_transfer_run_with_other_classes(tmp_path):
    """The transfer run's `best.keras` is the lab's model for 5 classes, saved untrained: the
    check reads only its output layer."""
    cfg = tiny_config(tmp_path, image_size=32)
    transfer = tmp_path / "transfer"
    transfer.mkdir()
    network.build_model(cfg, cfg.num_classes).save(transfer / "best.keras")
    other = cfg.replace(num_classes=cfg.num_classes + 1)
    with pytest.raises(RunError, match=f"predicts {cfg.num_classes} classes but the dataset"):
        run_stage(other, "finetune", transfer_dir=transfer, verbose=0)


@pytest.mark.slow
def test_nan_loss_stops_with_advice_and_keeps_finished_epochs(tmp_path):
    """Slow: only training finds the NaN."""
    cfg = tiny_config(tmp_path, transfer_epochs=2, schedule="constant", image_size=32,
                      calibration_images=16)
    with pytest.raises(RunError, match=r"NaN or infinite.*try 1e\+37"):
        run_stage(cfg, "transfer", learning_rate=1e38, verbose=0)
    run_dir = tmp_path / "runs" / "transfer"
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "backup").exists()
    rows = (run_dir / "history.csv").read_text().lower()
    assert "nan" not in rows and "inf" not in rows
    assert json.loads((run_dir / "config.json").read_text())["learning_rate"] == 1e38
