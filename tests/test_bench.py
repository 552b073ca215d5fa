import argparse
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from lab5_utils.cost import bench, bench_step
from lab5_utils.data import benchdata


def _args(*argv):
    parser = argparse.ArgumentParser()
    bench.add_bench_arguments(parser)
    return parser.parse_args(list(argv))


def test_bench_json_has_every_field_with_its_type(capsys):
    args = _args("--images", "8", "--batch-size", "4", "--image-size", "32", "--repeats", "2",
                 "--no-fit", "--no-step", "--json")
    assert bench.cmd_bench(args) == 0
    result = json.loads(capsys.readouterr().out)
    machine = result["machine"]
    assert isinstance(machine["cores"], int) and machine["cores"] >= 1
    assert isinstance(machine["cpu_model"], str) and machine["tensorflow"] == tf.__version__
    assert len(machine["load_average"]) == 3 and len(machine["load_average_end"]) == 3
    assert result["settings"] == {"images": 8, "batch_size": 4, "image_size": 32, "repeats": 2}
    assert result["data"]["count"] == 8 and 0 < result["data"]["kb_min"] <= result["data"]["kb_max"]
    pipeline = result["pipeline"]
    assert pipeline["augmentations"] == ["flip", "crop"]
    for name in ("plain", "train", "train_uncached", "validation", "validation_cached",
                 "train_first_epoch"):
        assert isinstance(pipeline[name]["median"], float) and pipeline[name]["median"] > 0
        assert len(pipeline[name]["runs"]) == 2 and pipeline[name]["cpu_ms_per_image"] > 0
    assert machine["cpu_allocator"] in ("default", "bfc")
    assert pipeline["cache_train"] == "auto"
    assert set(result["ratios"]) == {"train_vs_plain", "train_uncached_vs_plain",
                                     "validation_vs_plain", "validation_cached_vs_plain"}
    assert all(isinstance(v, float) for v in result["ratios"].values())
    assert result["fit"] is None
    augment = result["augment"]  # quick's training input, each placement, against flip + crop
    assert augment["augmentations"] == ["flip", "crop", "randaugment"]
    for name in ("flip_crop", "pipeline", "device_cpu", "device_with_stage", "device_stage"):
        assert augment[name]["median"] > 0 and len(augment[name]["runs"]) == 2
    assert set(augment["ratios"]) == {"pipeline_vs_flip_crop", "device_cpu_vs_flip_crop",
                                      "device_with_stage_vs_flip_crop"}
    assert "bounds" not in augment  # --no-step
    assert set(result["targets"]) == set(bench.TARGETS) and result["targets"]["fit_vs_in_memory"] is None


def test_generated_jpegs_look_like_food101(tmp_path):
    stats = benchdata.write_food_like_folder(tmp_path / "food", 6)
    files = sorted((tmp_path / "food" / "train").rglob("*.jpg"))
    assert len(files) == 6 == len(list((tmp_path / "food" / "validation").rglob("*.jpg")))
    assert 35 <= stats["kb_min"] and stats["kb_max"] <= 90  # Food-101: ~40-80 KB a photo
    shape = tf.io.extract_jpeg_shape(files[0].read_bytes()).numpy()
    assert max(shape[:2]) == 512
    benchdata.write_food_like_folder(tmp_path / "again", 6)  # deterministic: same seed, same bytes
    assert [f.read_bytes() for f in sorted((tmp_path / "again" / "train").rglob("*.jpg"))] == [
        f.read_bytes() for f in files]


def test_measure_fit_reports_both_throughputs_and_their_ratio():
    model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(4, 3),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = np.random.default_rng(0).uniform(0, 255, (32, 16, 16, 3)).astype("float32"), np.zeros(32)
    memory = tf.data.Dataset.from_tensor_slices((x, y)).batch(8).cache()
    pipeline = tf.data.Dataset.from_tensor_slices((x, y)).map(lambda a, b: (a * 1.0, b)).batch(8)
    result = bench.measure_fit(model, pipeline, memory, images=32, repeats=2)
    assert result["in_memory"]["median"] > 0 and len(result["pipeline"]["runs"]) == 2
    pairs = zip(result["pipeline"]["runs"], result["in_memory"]["runs"])  # same round, paired
    assert result["ratio"] == pytest.approx(np.median([p / m for p, m in pairs]), rel=0.02)


def test_report_text_names_the_measurements_and_targets(capsys):
    """The figures of the JSON test's kind of run, as `lab5 bench` prints them."""
    assert bench.cmd_bench(_args("--images", "8", "--batch-size", "4", "--image-size", "32",
                                 "--repeats", "1", "--no-fit", "--no-step")) == 0
    text = capsys.readouterr().out
    for needle in ("cores", "TensorFlow", "plain", "make_pipeline(training=True)",
                   "make_pipeline(training=False)", "images/s", "targets:",
                   "augment_on=device, the CPU's part", "quick_cpu_vs_flip_crop >= 0.9"):
        assert needle in text


def test_sizes_the_benchmark_cannot_use_are_refused():
    with pytest.raises(ValueError, match="--image-size"):
        bench.cmd_bench(_args("--image-size", "16", "--no-fit"))
    with pytest.raises(ValueError, match="twice the batch size"):
        bench.cmd_bench(_args("--images", "8", "--batch-size", "8", "--no-fit"))


# --- lab5 bench --train-step ---------------------------------------------------------------
def _train_step_json(capsys, *argv):
    from lab5_utils.cli import main

    code = main(["bench", "--train-step", *argv, "--json"])
    captured = capsys.readouterr()
    return code, json.loads(captured.out), captured.err.splitlines()  # stdout: only the JSON


def test_a_failing_measurement_still_ends_with_the_json_and_its_error(capsys, monkeypatch):
    """Stand-in timings (the real ones: the slow test below); the XLA measurements raise, as a
    device out of memory would: their errors are in the JSON, the others are there, exit 1."""
    from lab5_utils.cost import speed

    def xla_fails(model, batches, batch_size, steps, jit_compile, steps_per_execution, cfg=None):
        if jit_compile:
            raise RuntimeError("ResourceExhausted: out of memory\nsecond line")
        return speed.StepTiming(False, 1, 100.0 if int(batches.cardinality()) == 1 else 50.0,
                                1.0, steps)

    monkeypatch.setattr(speed, "time_train_step", xla_fails)
    code, result, progress = _train_step_json(capsys, "--step-sizes", "32", "--batch-size", "4",
                                              "--steps", "1", "--images", "8", "--jit", "both")
    assert code == 1
    assert result["sizes"]["32"] == {
        "frozen_jit_false": 100.0, "frozen_jit_true": None, "frozen_pipeline_fed": 50.0,
        "frozen_pipeline_fed_vs_in_memory": 0.5, "frozen_device_augment": 100.0,
        "frozen_device_augment_vs_in_memory": 1.0, "unfrozen_jit_false": 100.0,
        "unfrozen_jit_true": None, "unfrozen_pipeline_fed": 50.0,
        "unfrozen_pipeline_fed_vs_in_memory": 0.5}
    assert result["errors"] == {  # the first line of each error
        "32/frozen_jit_true": "RuntimeError: ResourceExhausted: out of memory",
        "32/unfrozen_jit_true": "RuntimeError: ResourceExhausted: out of memory"}
    # one line per measurement, as it finishes, after the line that states the settings
    assert progress[0] == "[bench] training step: 32 px, batch 4, 1 timed steps, XLA off and on"
    measured = [line for line in progress if line.startswith("[bench ")]
    assert len(measured) == 7 and all(" px, " in line for line in measured)
    assert sum("FAILED: RuntimeError: ResourceExhausted" in line for line in measured) == 2
    text = bench_step.format_train_step(result)
    assert "XLA true: FAILED" in text and "FAILED 32/frozen_jit_true: RuntimeError" in text


def test_train_step_sizes_default_to_the_hardware_and_explicit_options_win():
    cpu = bench_step.train_step_settings(False)
    assert (cpu["image_sizes"], cpu["batch_size"], cpu["steps"]) == (
        list(bench_step.CPU_DEFAULTS["image_sizes"]), bench_step.CPU_DEFAULTS["batch_size"],
        bench_step.CPU_DEFAULTS["steps"])
    assert cpu["jit"] == "off"  # a CPU never trains with XLA, and compiles it for minutes
    gpu = bench_step.train_step_settings(True)
    assert (gpu["image_sizes"], gpu["batch_size"], gpu["steps"], gpu["jit"]) == (
        [224], 64, 10, "both")  # the real step, XLA off and on
    mixed = bench_step.train_step_settings(False, (96, 96, 128), batch_size=8, jit="both")
    assert (mixed["image_sizes"], mixed["batch_size"], mixed["jit"]) == ([96, 128], 8, "both")
    assert mixed["defaulted"] == ["pipeline_images", "steps"]
    assert mixed["pipeline_images"] == max(bench_step.CPU_DEFAULTS["pipeline_images"], 16)
    said = bench_step.settings_text(cpu)
    assert "no GPU/TPU found: CPU-sized defaults" in said and "224 px, batch 64" in said
    assert "CPU-sized" not in bench_step.settings_text(gpu)
    with pytest.raises(ValueError, match=r"--step-sizes 16 is not valid: expected image sizes >= 32"):
        bench_step.train_step_settings(False, (64, 16))
    with pytest.raises(ValueError, match=r"--jit 'maybe' is not valid: expected one of off, on, both"):
        bench_step.train_step_settings(False, jit="maybe")


@pytest.mark.slow
def test_train_step_with_its_cpu_defaults_finishes_and_reports_every_measurement(capsys):
    """`lab5 bench --train-step --json` exactly as a user runs it here, without a GPU: slow
    because it traces and times EfficientNet-B0's real training step five times (about 60 s;
    the target is under 3 minutes on 2 cores)."""
    code, result, progress = _train_step_json(capsys)
    assert code == 0 and result["errors"] == {} and result["accelerator"] is False
    settings = result["settings"]
    assert settings["defaults"] == "cpu" and settings["image_sizes"] == [64]
    assert (settings["batch_size"], settings["steps"], settings["jit"]) == (16, 10, "off")
    rows = result["sizes"]["64"]
    assert set(rows) == {f"{part}_{name}" for part in ("frozen", "unfrozen") for name in
                         ("jit_false", "pipeline_fed", "pipeline_fed_vs_in_memory")} | {
        "frozen_device_augment", "frozen_device_augment_vs_in_memory"}
    assert all(v > 0 for v in rows.values())
    assert "no GPU/TPU found: CPU-sized defaults" in progress[0]
    assert len([line for line in progress if line.startswith("[bench ")]) == 5
    assert result["seconds"] < 300  # 3 minutes when idle; room for a shared machine's load


@pytest.mark.parametrize("step_seconds, bound", [(0.05, "input"), (2.0, "step")])
def test_the_bench_says_which_side_bounds_an_epoch_in_each_placement(step_seconds, bound):
    """batch 64: a 0.05 s step takes 1280 images/s, more than the CPU's 300 (input-bound);
    a 2 s step 32 images/s, fewer than even the heavy pipeline's 100 (step-bound)."""
    from lab5_utils.cost import bench_augment
    from lab5_utils.cost.estimate import Timing

    measured = {"pipeline": {"median": 100.0}, "device_cpu": {"median": 300.0},
                "device_stage": {"median": 640.0}}  # 0.1 s to augment a batch of 64
    cfg = bench_augment.recipe_config(benchdata.Path("/nowhere"), 224, 64)
    timing = Timing({"transfer": step_seconds, "finetune": step_seconds}, 0.1, {}, 1, 64)
    out = bench_augment.bounds(measured, cfg, 1, lambda *a, **k: timing)
    assert out["device_stage_seconds"] == 0.1
    for where, cpu in (("pipeline", 100), ("device", 300)):
        step = step_seconds + (0.1 if where == "device" else 0.0)
        verdict = out["bounds"][where]["transfer"]
        assert verdict["bound"] == bound
        assert f"the CPU delivers {cpu} images/s" in verdict["text"]
        assert f"the step takes {step:.3g} s a batch of 64" in verdict["text"]
        assert verdict["text"].startswith(f"{bound}-bound: ")


def test_train_step_on_an_accelerator_also_times_each_part_with_op_determinism(capsys,
                                                                                monkeypatch):
    """A stand-in for the GPU and the timing: the deterministic variants run with op determinism
    on, every other one as the bench found it, and that state is put back."""
    from lab5_utils.cost import speed
    from lab5_utils.seeding import op_determinism_enabled

    seen = []

    def timed(model, batches, batch_size, steps, jit_compile, steps_per_execution, cfg=None):
        seen.append((op_determinism_enabled(), "train_step" in vars(model)))
        return speed.StepTiming(False, 1, 80.0 if op_determinism_enabled() else 100.0, 1.0, steps)

    monkeypatch.setattr(speed, "accelerator_present", lambda: True)
    monkeypatch.setattr(speed, "time_train_step", timed)
    code, result, _ = _train_step_json(capsys, "--step-sizes", "32", "--batch-size", "4",
                                       "--steps", "1", "--images", "8", "--jit", "off")
    rows = result["sizes"]["32"]
    assert code == 0 and result["accelerator"] is True
    assert rows["frozen_deterministic"] == rows["unfrozen_deterministic"] == 80.0
    assert rows["frozen_deterministic_vs_in_memory"] == 0.8 and rows["frozen_jit_false"] == 100.0
    assert seen.count((True, False)) == 2 and seen.count((False, True)) == 1  # one augmented
    assert not op_determinism_enabled()
    text = bench_step.format_train_step(result)
    assert "with op determinism on: 80.0 images/s (x0.80 of without)" in text
    assert "with full's RandAugment in the step: 100.0 images/s" in text
