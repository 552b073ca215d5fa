"""Runs that repeat: the same command twice, in fresh processes, gives the same run."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from lab5_utils.evaluate.scoring import PREDICTIONS_FILE
from tests.conftest import tiny_config

SETTINGS = {"image_size": 32, "batch_size": 16, "transfer_epochs": 1, "finetune_epochs": 1,
            "num_classes": 5, "synthetic_train_per_class": 16, "synthetic_val_per_class": 6,
            "synthetic_test_per_class": 6, "calibration_images": 32}


def _train_twice(stage, run_dirs, *extra):
    """`lab5 train` for each run folder, the processes side by side (they share the cores, as
    `lab5 report --jobs 2` does)."""
    sets = [f"--set={k}={v}" for k, v in SETTINGS.items()]
    procs = [subprocess.Popen([sys.executable, "-m", "lab5_utils.cli", "train", "--stage", stage,
                               "--preset", "demo", *sets, "--run-dir", str(d), *extra],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for d in run_dirs]
    for proc in procs:
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out


def _same_run(a, b):
    pa, pb = (np.load(d / PREDICTIONS_FILE) for d in (a, b))
    assert np.array_equal(pa["y_true"], pb["y_true"]) and np.array_equal(pa["probs"], pb["probs"])
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    for key in ("best_val_accuracy", "best_epoch", "final_accuracy", "final_val_loss",
                "test_accuracy", "test_top5", "test_loss"):
        assert ma[key] == mb[key], key
    pd.testing.assert_frame_equal(pd.read_csv(a / "history.csv"), pd.read_csv(b / "history.csv"))


@pytest.mark.slow
@pytest.mark.parametrize("augment_on", ["pipeline", "device"])
def test_the_same_fine_tuning_command_twice_gives_the_same_run(tmp_path, augment_on):
    """Slow: it trains a tiny transfer run, then fine-tunes it twice in fresh processes: a fresh
    process is what differed (the model loaded from best.keras drew its Dropout seed from an
    unseeded Python `random`). The transfer run is trained here, in a process that has run
    other tests: `seed_run` makes its history irrelevant. With RandAugment in each place
    (`augment_on`): in the tf.data map and inside the training step."""
    from lab5_utils.config import LabConfig
    from lab5_utils.train.training import run_stage

    placed = {"augmentations": "flip,crop,randaugment", "augment_on": augment_on}
    transfer = tmp_path / "transfer"
    run_stage(LabConfig.preset("demo", run_root=str(tmp_path), **SETTINGS, **placed), "transfer",
              run_dir=transfer, verbose=0)
    finetune = [tmp_path / "finetune_a", tmp_path / "finetune_b"]
    _train_twice("finetune", finetune, "--transfer-dir", str(transfer),
                 *[f"--set={k}={v}" for k, v in placed.items()])
    _same_run(*finetune)


def test_seed_run_seeds_what_a_loaded_model_draws_and_sets_op_determinism(tmp_path):
    import random

    import keras
    from tensorflow.python.framework import config as tf_config

    from lab5_utils.seeding import op_determinism_enabled, seed_run

    before = op_determinism_enabled()
    cfg = tiny_config(tmp_path)
    try:
        seeds = []
        for _ in range(2):
            assert seed_run(cfg) is True and op_determinism_enabled()
            seeds.append(int(keras.layers.Dropout(0.5).seed_generator.state.numpy()[0]))
            random.random()  # whatever ran in between
        assert seeds[0] == seeds[1]  # a Dropout built or loaded after seed_run: the same seed
        assert seed_run(cfg.replace(deterministic=False)) is False  # traded back in-process
        assert not op_determinism_enabled()
    finally:
        (tf_config.enable_op_determinism if before else tf_config.disable_op_determinism)()


def test_deterministic_false_lets_training_batches_come_out_of_order(tmp_path):
    from lab5_utils.data.splits import load_splits

    for deterministic in (True, False):
        splits = load_splits(tiny_config(tmp_path, deterministic=deterministic))
        assert splits.train.options().deterministic is deterministic
        assert splits.validation.options().deterministic and splits.test.options().deterministic
