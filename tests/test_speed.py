"""The training-step speed tools: the XLA probe's choice, steps_per_execution, the timing itself
and `lab5 bench --train-step`."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from lab5_utils.cost.speed import (
    StepTiming,
    choose_jit,
    jit_message,
    resolve_steps_per_execution,
    time_train_step,
)


@pytest.mark.parametrize("faster", [False, True])
def test_the_probe_keeps_the_faster_variant_and_records_both(faster):
    rates = {False: 100.0, True: 100.0 * (1.9 if faster else 0.4)}
    asked = []

    def measure(jit):
        asked.append(jit)
        return StepTiming(jit, 1, rates[jit], 1.0, 10)

    chosen, record = choose_jit(measure)
    assert chosen is faster and asked == [False, True]
    assert record["measured"]["jit_false"]["images_per_s"] == 100.0
    assert record["measured"]["jit_true"]["images_per_s"] == rates[True]
    text = jit_message(record)
    assert f"{rates[True]:.0f} with it" in text and f"jit_compile={str(faster).lower()}" in text


def test_steps_per_execution_auto_is_one_on_cpu_and_larger_on_accelerators():
    assert resolve_steps_per_execution("auto", accelerator=False, steps_per_epoch=1000) == 1
    assert resolve_steps_per_execution("auto", accelerator=True, steps_per_epoch=1000) == 32
    assert resolve_steps_per_execution("auto", accelerator=True, steps_per_epoch=5) == 5
    assert resolve_steps_per_execution(4, accelerator=False, steps_per_epoch=1000) == 4


def test_timing_the_step_leaves_the_weights_as_they_were():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    before = [w.copy() for w in model.get_weights()]
    data = tf.data.Dataset.from_tensors((np.ones((8, 4), np.float32), np.zeros(8, np.int32)))
    timing = time_train_step(model, data, batch_size=8, steps=4, jit_compile=False,
                             steps_per_execution=2)
    assert timing.images_per_s > 0 and timing.steps == 4 and timing.steps_per_execution == 2
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_bench_train_step_reports_frozen_and_unfrozen_and_the_pipeline_ratio(capsys, monkeypatch):
    """The benchmark's table from stand-in step timings (the timing itself is tested above on a
    small model; the real EfficientNet figures are in the README)."""
    from lab5_utils.cli import main
    from lab5_utils.cost import bench_step, speed

    calls = []

    def stand_in(model, batches, batch_size, steps, jit_compile, steps_per_execution, cfg=None):
        frozen = len(model.trainable_weights) == 2  # only the head's kernel and bias
        in_memory = int(batches.cardinality()) == 1
        calls.append((frozen, jit_compile, in_memory))
        rate = (400.0 if frozen else 100.0) * (0.5 if jit_compile else 1.0) * (1 if in_memory else 0.8)
        return StepTiming(jit_compile, steps_per_execution, rate, 1.0, steps)

    monkeypatch.setattr(speed, "time_train_step", stand_in)
    assert main(["bench", "--train-step", "--step-sizes", "32", "--batch-size", "4",
                 "--steps", "2", "--images", "16", "--jit", "both", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert calls == [(True, False, True), (True, True, True), (True, False, False),
                     (True, False, True),  # frozen, with full's RandAugment in the step
                     (False, False, True), (False, True, True), (False, False, False)]
    assert result["sizes"]["32"] == {
        "frozen_jit_false": 400.0, "frozen_jit_true": 200.0, "frozen_pipeline_fed": 320.0,
        "frozen_pipeline_fed_vs_in_memory": 0.8, "frozen_device_augment": 400.0,
        "frozen_device_augment_vs_in_memory": 1.0, "unfrozen_jit_false": 100.0,
        "unfrozen_jit_true": 50.0, "unfrozen_pipeline_fed": 80.0,
        "unfrozen_pipeline_fed_vs_in_memory": 0.8}
    assert result["settings"] == {"batch_size": 4, "steps": 2, "image_sizes": [32],
                                  "pipeline_images": 16, "jit": "both",
                                  "defaults": "cpu", "defaulted": []}  # every size was given
    assert result["errors"] == {}
    assert len(result["machine"]["load_average_end"]) == 3
    monkeypatch.setattr(bench_step, "bench_train_step", lambda *a, **k: result)
    assert main(["bench", "--train-step", "--step-sizes", "32"]) == 0
    text = capsys.readouterr().out
    assert "frozen   in memory: XLA false: 400.0 images/s; XLA true: 200.0 images/s" in text
    assert "(x0.80 of in-memory)" in text


# In a child process: once XLA has compiled in a process, TensorFlow traces everything after it
# more slowly there (measured: a tiny plain training took 15 s, 28 s after an XLA one), and the
# test worker goes on with other files.
_XLA_STAGES = """
import sys
from lab5_utils.config import LabConfig
from lab5_utils.train.training import run_stage
cfg = LabConfig.from_json(sys.argv[1])
for stage in ("transfer", "finetune"):
    run_stage(cfg, stage, verbose=0)
"""


@pytest.mark.slow
def test_xla_on_the_cpu_trains_both_demo_stages_with_whole_batches(tmp_path):
    """Slow: XLA compiles EfficientNet-B0's training and validation steps for both stages on a
    CPU. Validation holds whole batches (80 images) so that each step compiles once."""
    import subprocess
    import sys

    from lab5_utils.train.epoch_logs import load_history
    from tests.conftest import tiny_config

    cfg = tiny_config(tmp_path, image_size=32, transfer_epochs=2, jit_compile="true",
                      deterministic=False,  # Keras trains without XLA under op determinism
                      unfreeze="top:2", synthetic_train_per_class=7,  # 35 images: 2 whole batches
                      synthetic_val_per_class=16, calibration_images=16)
    (tmp_path / "cfg.json").write_text(cfg.to_json())
    done = subprocess.run([sys.executable, "-c", _XLA_STAGES, str(tmp_path / "cfg.json")],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    for run, epochs in (("transfer", [1, 2]), ("finetune_lr=1e-04", [3])):
        m = json.loads((tmp_path / "runs" / run / "metrics.json").read_text())
        assert list(load_history(tmp_path / "runs" / run)["epoch"]) == epochs
        assert m["jit_compile"] is True and m["jit_probe"] == {"setting": "true"}
        assert m["steps_per_epoch"] == 35 // cfg.batch_size == 2  # the short batch is dropped
        assert m["train_images_per_s"] > 0 and 0 <= m["test_accuracy"] <= 1


@pytest.mark.slow
@pytest.mark.parametrize("faster", [False])  # True would compile XLA for the whole run on a CPU
def test_jit_auto_on_an_accelerator_keeps_what_the_probe_measured_faster(tmp_path, monkeypatch,
                                                                         capsys, faster):
    """Slow: trains the transfer stage (the probe's timings are stand-ins)."""
    from lab5_utils.cost import speed
    from lab5_utils.train.training import run_stage
    from tests.conftest import tiny_config

    probed = []

    def stand_in(model, batches, batch_size, steps, jit_compile, steps_per_execution, cfg=None):
        probed.append((jit_compile, steps_per_execution))
        return StepTiming(jit_compile, steps_per_execution,
                          200.0 if jit_compile == faster else 100.0, 1.0, steps)

    monkeypatch.setattr(speed, "accelerator_present", lambda: True)
    monkeypatch.setattr(speed, "time_train_step", stand_in)
    cfg = tiny_config(tmp_path, image_size=32, transfer_epochs=1, jit_compile="auto",
                      steps_per_execution="auto", calibration_images=16, deterministic=False)
    m = run_stage(cfg, "transfer", verbose=0).metrics
    steps = -(-cfg.num_classes * cfg.synthetic_train_per_class // cfg.batch_size)
    assert probed == [(False, steps), (True, steps)]  # auto: an epoch's steps per call, at most 32
    assert m["jit_compile"] is faster and m["steps_per_execution"] == steps
    assert m["jit_probe"]["measured"]["jit_true"]["images_per_s"] == (200.0 if faster else 100.0)
    assert "training uses jit_compile=false" in capsys.readouterr().out


def test_jit_auto_is_off_without_a_probe_when_the_run_is_deterministic(tmp_path, monkeypatch):
    """Keras trains without XLA while op determinism is on, so timing XLA would mislead."""
    from lab5_utils.cost import speed
    from tests.conftest import tiny_config

    monkeypatch.setattr(speed, "accelerator_present", lambda: True)
    monkeypatch.setattr(speed, "time_train_step", lambda *a, **k: pytest.fail("probed"))
    cfg = tiny_config(tmp_path, jit_compile="auto")
    choice = speed.choose_speed(cfg, model=None, train_ds=None, num_train=80)
    assert choice["jit_compile"] is False and not choice["drop_remainder"]
    assert choice["jit_probe"] == {"setting": "auto",
                                   "reason": "deterministic=true: Keras trains without XLA"}
