import argparse
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from lab5_utils import bench, benchdata


def _args(*argv):
    parser = argparse.ArgumentParser()
    bench.add_bench_arguments(parser)
    return parser.parse_args(list(argv))


def test_bench_json_has_every_field_with_its_type(capsys):
    args = _args("--images", "8", "--batch-size", "4", "--image-size", "32", "--repeats", "2",
                 "--no-fit", "--json")
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


def test_report_text_names_the_measurements_and_targets():
    result = bench.run_bench(images=8, batch_size=4, image_size=32, repeats=1, fit=False)
    text = bench.format_report(result)
    for needle in ("cores", "TensorFlow", "plain", "make_pipeline(training=True)",
                   "make_pipeline(training=False)", "images/s", "targets:"):
        assert needle in text


def test_sizes_the_benchmark_cannot_use_are_refused():
    with pytest.raises(ValueError, match="--image-size"):
        bench.cmd_bench(_args("--image-size", "16", "--no-fit"))
    with pytest.raises(ValueError, match="twice the batch size"):
        bench.cmd_bench(_args("--images", "8", "--batch-size", "8", "--no-fit"))
