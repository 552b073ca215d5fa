"""Shared fixtures: quiet TensorFlow, a headless matplotlib, and one tiny trained lab."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402

from lab5_utils.config import LabConfig  # noqa: E402


def tiny_config(tmp_path, **overrides) -> LabConfig:
    """The demo preset shrunk for tests: still learnable, a few seconds per epoch."""
    values = dict(image_size=64, batch_size=16, transfer_epochs=3, finetune_epochs=1,
                  synthetic_train_per_class=16, synthetic_val_per_class=6, synthetic_test_per_class=6,
                  num_classes=5,
                  calibration_images=64, run_root=str(tmp_path / "runs"))
    values.update(overrides)
    return LabConfig.preset("demo", **values)


@pytest.fixture(scope="session")
def trained_lab(tmp_path_factory):
    """Transfer then finetune on the tiny demo config, trained once for the whole session."""
    from lab5_utils.training import run_stage

    cfg = tiny_config(tmp_path_factory.mktemp("lab"))
    transfer = run_stage(cfg, "transfer", verbose=0)
    finetune = run_stage(cfg, "finetune", verbose=0)
    return cfg, transfer, finetune
