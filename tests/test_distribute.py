"""tf.distribute: the `distribution` setting, the global batch, refusals that say why, and the
demo's two stages trained under MirroredStrategy with 2 replicas on this CPU.

MirroredStrategy needs 2 devices. A CPU becomes 2 logical devices only before TensorFlow
initialises its devices, and this pytest process has done so, so the mirrored runs are
subprocesses started with the test-only `LAB5_TEST_CPU_REPLICAS=2` (see lab5_utils.model.distribute).
"""

import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from lab5_utils import cli
from lab5_utils.config import LabConfig
from lab5_utils.data.splits import load_splits
from lab5_utils.model import distribute
from lab5_utils.train.epoch_logs import load_history, read_tensorboard
from lab5_utils.train.training import run_stage
from tests.conftest import tiny_config


def test_distribution_is_validated_with_the_allowed_values():
    with pytest.raises(ValueError, match="distribution='foo' is not valid: expected one of "
                                         "auto, none, mirrored, tpu, multiworker"):
        LabConfig.preset("demo").with_settings(["distribution=foo"])
    assert LabConfig.preset("demo").distribution == "auto"


def test_a_global_batch_that_does_not_split_is_refused_before_the_run_folder(tmp_path, monkeypatch):
    distribute.check_batch_size(16, 2)
    distribute.check_batch_size(15, 1)
    monkeypatch.setattr(distribute, "replicas", lambda chosen=None: 2)  # as on 2 GPUs
    with pytest.raises(ValueError, match=r"batch_size=15 does not split evenly over the 2 "
                                         r"replicas.*batch_size=14 or --set batch_size=16\."):
        run_stage(tiny_config(tmp_path, batch_size=15), "transfer", verbose=0)
    assert not (tmp_path / "runs").exists()
    with pytest.raises(ValueError, match=r"over the 8 replicas.*--set batch_size=8\.$"):
        distribute.check_batch_size(3, 8)  # no 0 among the suggestions


def test_multiworker_stops_before_any_work_and_says_why_and_what_instead(tmp_path, capsys):
    code = cli.main(["train", "--set", "distribution=multiworker", "--set", f"run_root={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1  # one message
    assert "Keras 3's Model.fit fails with tf.distribute.MultiWorkerMirroredStrategy" in err
    assert "keras-team/keras#20585" in err and "tensorflow/tensorflow#72388" in err
    assert "--set distribution=mirrored" in err
    assert not any(tmp_path.iterdir())


def test_tpu_without_a_tpu_is_a_clear_error(monkeypatch):
    for name in ("TPU_NAME", "COLAB_TPU_ADDR", "TPU_ACCELERATOR_TYPE"):
        monkeypatch.delenv(name, raising=False)
    if distribute._tpu_attached():
        pytest.skip("this machine has a TPU")
    with pytest.raises(ValueError, match="distribution='tpu' but no TPU is attached"):
        distribute.strategy(LabConfig.preset("demo", distribution="tpu"))
    monkeypatch.setenv("TPU_NAME", "local")  # what the detection looks for, without a TPU
    assert distribute._tpu_attached()


def test_mixed_precision_is_bfloat16_on_a_tpu_and_float16_on_gpus(monkeypatch):
    demo = LabConfig.preset("demo")
    assert distribute.precision_policy(demo) == (
        "mixed_float16" if tf.config.list_physical_devices("GPU") else "float32")
    assert distribute.precision_policy(demo.replace(mixed_precision="on")) == "mixed_float16"
    monkeypatch.setattr(distribute, "is_tpu", lambda chosen=None: True)
    assert distribute.precision_policy(demo) == "mixed_bfloat16"
    assert distribute.precision_policy(demo.replace(mixed_precision="off")) == "float32"


def test_every_pipeline_shards_by_data(tmp_path):
    policy = tf.data.experimental.AutoShardPolicy.DATA
    train, val, test, _ = load_splits(tiny_config(tmp_path))
    assert {ds.options().experimental_distribute.auto_shard_policy for ds in (train, val, test)} == {
        policy}


# Both stages in one process (one TensorFlow start-up fewer): a killed run and its resume.
_BOTH_STAGES = """
import sys
from lab5_utils.config import LabConfig
from lab5_utils.train.training import run_stage
cfg = LabConfig.from_json(sys.argv[1])
for stage in ("transfer", "finetune"):
    run_stage(cfg, stage, verbose=2, reuse=True)
"""


@pytest.mark.slow
def test_both_stages_train_on_two_replicas_and_a_killed_run_resumes(tmp_path, trained_lab):
    """Slow: two processes (one killed) train both stages under MirroredStrategy, which traces
    every step once per replica."""
    single = trained_lab[1].metrics  # the same tiny transfer stage on one device
    # Validation and test sets of whole batches: a short last batch would trace every
    # replica's step again (the training set, as on one device, is 5 batches of 16). 32 px:
    # the steps are counted, not the accuracy
    cfg = tiny_config(tmp_path, transfer_epochs=2, synthetic_val_per_class=16,
                      synthetic_test_per_class=16, image_size=32, calibration_images=16)
    (tmp_path / "cfg.json").write_text(cfg.to_json())
    cmd = [sys.executable, "-c", _BOTH_STAGES, str(tmp_path / "cfg.json")]
    env = {**os.environ, distribute.TEST_CPU_REPLICAS: "2"}
    transfer, finetune = tmp_path / "runs" / "transfer", tmp_path / "runs" / "finetune_lr=1e-04"

    # Killed in epoch 2 of the transfer stage, once epoch 1 is backed up
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, backed_up = time.time() + 240, None
    while time.time() < deadline and proc.poll() is None:
        if backed_up is None and (transfer / "backup" / "training_metadata.json").is_file():
            backed_up = time.time()
        if backed_up is not None and time.time() - backed_up > 0.3:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert backed_up is not None and not (transfer / "metrics.json").exists()

    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "distribution: MirroredStrategy, 2 replicas (CPU:0, CPU:1)" in done.stdout
    assert "resuming after epoch 1" in done.stdout
    assert list(load_history(transfer)["epoch"]) == [1, 2]  # every epoch once
    assert list(read_tensorboard(transfer / "tb")["epoch"]) == [1, 2]
    assert list(load_history(finetune)["epoch"]) == [3]
    for run in (transfer, finetune):
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["distribution"] == "MirroredStrategy" and metrics["replicas"] == 2
        # the global batch: as many steps as on one device
        assert metrics["steps_per_epoch"] == single["steps_per_epoch"] == math.ceil(
            cfg.num_classes * cfg.synthetic_train_per_class / cfg.batch_size)
        assert json.loads((run / "config.json").read_text())["distribution"] == "auto"
        with np.load(run / "test_predictions.npz") as saved:  # both replicas' parts, in order
            n = cfg.num_classes * cfg.synthetic_test_per_class
            np.testing.assert_array_equal(saved["y_true"], np.arange(n) % cfg.num_classes)
            np.testing.assert_allclose(saved["probs"].sum(axis=1), 1.0, atol=1e-4)
    assert single["distribution"] == "default" and single["replicas"] == 1
