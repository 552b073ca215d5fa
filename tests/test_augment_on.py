"""`augment_on`: the heavy augmentations in the tf.data map ("pipeline") or inside the compiled
training step ("device"); where "auto" puts them; what resumes and saved models see."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from lab5_utils.cli import main
from lab5_utils.config import LabConfig
from lab5_utils.cost import speed
from lab5_utils.data import augment
from lab5_utils.data.pipeline import make_pipeline
from lab5_utils.train import rundir
from lab5_utils.train.rundir import RESULT_NEUTRAL_FIELDS
from tests.conftest import tiny_config

HEAVY = ["flip", "crop", "randaugment", "rotation", "mixup"]


def _batches(cfg, n=1):
    from lab5_utils.data.splits import load_encoded

    train, _, _, info = load_encoded(cfg)
    ds = make_pipeline(train, cfg, True, info.num_train, one_hot_depth=info.num_classes)
    return [x.numpy() for x, _ in ds.take(n)]


def test_an_unknown_placement_is_refused_by_name_before_a_run_folder_is_made(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"augment_on='gpu' is not valid: expected one of "
                                         r"auto, device, pipeline"):
        LabConfig.preset("demo", augment_on="gpu")
    assert main(["train", "--set", "augment_on=gpu", "--run-dir", str(tmp_path / "r")]) == 2
    assert "augment_on='gpu'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_on_the_device_the_pipeline_only_crops_and_flips_so_placements_are_not_neutral(tmp_path):
    """The test that says which: the two placements give different batches for the same seed,
    so augment_on is compared when a run folder is reused."""
    cfg = tiny_config(tmp_path, augmentations=HEAVY, cache_train="", image_size=32)
    device = _batches(cfg.replace(augment_on="device"))
    crop_flip = _batches(cfg.replace(augmentations=["flip", "crop"]))
    in_pipeline = _batches(cfg.replace(augment_on="pipeline"))
    assert all(np.array_equal(a, b) for a, b in zip(device, crop_flip))
    assert not any(np.array_equal(a, b) for a, b in zip(device, in_pipeline))
    assert "augment_on" not in RESULT_NEUTRAL_FIELDS


def test_randaugment_in_the_step_draws_per_image_and_repeats_for_a_seed():
    cfg = LabConfig.preset("demo", augmentations=["randaugment"], augment_on="device")
    stage = tf.function(augment.DeviceAugment(cfg))
    image = np.random.default_rng(0).integers(0, 256, (1, 48, 48, 3), dtype=np.uint8)
    batch, labels = np.repeat(image, 8, axis=0), np.zeros(8, np.int32)
    seed = tf.constant([3, 4], tf.int64)
    first = stage(batch, labels, seed)[0].numpy()
    assert np.array_equal(first, stage(batch, labels, seed)[0].numpy())
    assert not np.array_equal(first, stage(batch, labels, tf.constant([3, 5], tf.int64))[0].numpy())
    distinct = {first[i].tobytes() for i in range(8)}
    assert len(distinct) >= 6  # one image, eight draws: the ops are drawn per image
    assert first.min() >= 0 and first.max() <= 255


class ImageProbe(keras.Model):
    """Remembers the images its last call saw."""

    def __init__(self, batch: int, size: int) -> None:
        super().__init__()
        self.seen = tf.Variable(tf.zeros((batch, size, size, 3)), trainable=False)
        self.dense = keras.layers.Dense(2, activation="softmax")

    def call(self, images, training=False):
        self.seen.assign(tf.cast(images, tf.float32))
        return self.dense(tf.reduce_mean(tf.cast(images, tf.float32), axis=[1, 2]))


def test_the_training_step_augments_and_inference_does_not():
    cfg = LabConfig.preset("demo", augmentations=["flip", "randaugment", "mixup"],
                           augment_on="device")
    images = np.random.default_rng(1).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    labels = np.eye(2, dtype=np.float32)[[0, 1, 0, 1]]
    model = ImageProbe(4, 32)
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    assert augment.attach(model, cfg) is not None
    model.fit(images, labels, batch_size=4, epochs=1, verbose=0)
    assert not np.allclose(model.seen.numpy(), images)
    model.predict(images, batch_size=4, verbose=0)
    assert np.array_equal(model.seen.numpy(), images)
    model.evaluate(images, labels, batch_size=4, verbose=0)
    assert np.array_equal(model.seen.numpy(), images)
    # nothing to move: the step is left alone
    assert augment.attach(ImageProbe(4, 32), cfg.replace(augment_on="pipeline")) is None
    assert augment.attach(ImageProbe(4, 32), cfg.replace(augmentations=["flip", "crop"])) is None


def test_a_model_trained_with_device_augmentation_saves_and_loads_without_it(tmp_path):
    """best.keras is what ModelCheckpoint saves: the network, without the replaced step."""
    from lab5_utils.model.network import compile_model, load_model

    cfg = tiny_config(tmp_path, augmentations=HEAVY, augment_on="device")
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Rescaling(1 / 255),
                              keras.layers.Conv2D(4, 3), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(3, activation="softmax")])
    compile_model(model, 1e-3, cfg=cfg)
    augment.attach(model, cfg)
    x = np.random.default_rng(2).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    model.fit(x, np.eye(3, dtype=np.float32)[np.arange(8) % 3], batch_size=8, verbose=0)
    model.save(tmp_path / "best.keras")
    loaded = load_model(tmp_path / "best.keras")  # safe mode: nothing in the file runs as code
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-6)
    assert "train_step" not in vars(loaded)


def test_auto_keeps_the_run_folders_placement_and_measures_only_on_a_cpu(monkeypatch):
    cfg = LabConfig.preset("quick")  # RandAugment on, augment_on=auto
    measured = []

    def measure(c):
        measured.append(c)
        return {"pipeline": 120.0, "device": 450.0}

    assert speed.choose_augment_on(cfg, {"augment_on": "device"}, measure)[0].augment_on == "device"
    # a config.json written before the field: every augmentation ran in the pipeline
    assert speed.choose_augment_on(cfg, {"seed": 42}, measure)[0].augment_on == "pipeline"
    assert not measured
    monkeypatch.setattr(speed, "accelerator_present", lambda: True)
    assert speed.choose_augment_on(cfg, None, measure)[0].augment_on == "device" and not measured
    monkeypatch.setattr(speed, "accelerator_present", lambda: False)
    for rates, chosen in (({"pipeline": 120.0, "device": 450.0}, "device"),
                          ({"pipeline": 450.0, "device": 120.0}, "pipeline")):
        placed, record = speed.choose_augment_on(cfg, None, lambda c, r=rates: r)
        assert placed.augment_on == chosen and record["measured_images_per_s"] == rates
        assert f"run in the {'tf.data map' if chosen == 'pipeline' else 'training step'}" in (
            speed.augment_on_message(record).replace("inside the training", "in the training"))
    demo = LabConfig.preset("demo")  # flip and crop only: nothing to move, nothing measured
    assert speed.choose_augment_on(demo, None, measure)[0].augment_on == "pipeline"
    assert not measured


def test_a_resume_with_another_placement_is_refused_naming_the_field(tmp_path):
    cfg = tiny_config(tmp_path, augmentations=HEAVY, augment_on="device")
    run_dir = tmp_path / "run"
    rundir.prepare_run_dir(run_dir, cfg, force=False)
    with pytest.raises(rundir.RunError, match="augment_on: 'device' in the run, 'pipeline' now"):
        rundir.prepare_run_dir(run_dir, cfg.replace(augment_on="pipeline"), force=False)
    recorded = json.loads((run_dir / "config.json").read_text())
    resumed, _ = speed.choose_augment_on(cfg.replace(augment_on="auto"), recorded)
    rundir.prepare_run_dir(run_dir, resumed, force=False)  # auto resumes with the device


def test_xla_and_the_step_augmentation_do_not_meet(monkeypatch):
    """XLA has no kernel for ImageProjectiveTransformV3 (rotation, zoom, RandAugment's shear):
    a step with them inside cannot be compiled, so neither is chosen with the other."""
    with pytest.raises(ValueError, match=r"augment_on='device' is not valid: expected 'pipeline' "
                                         r"or 'auto' with jit_compile=true"):
        LabConfig.preset("quick", augment_on="device", jit_compile="true", deterministic=False)
    cfg = LabConfig.preset("quick", jit_compile="true", deterministic=False)
    assert speed.choose_augment_on(cfg, None)[0].augment_on == "pipeline"
    monkeypatch.setattr(speed, "accelerator_present", lambda: True)  # where XLA is measured
    model, auto = ImageProbe(4, 32), cfg.replace(augment_on="device", jit_compile="auto")
    augment.attach(model, auto)
    choice = speed.choose_speed(auto, model, None, 64)  # no probe: nothing to time
    assert choice["jit_compile"] is False
    assert choice["jit_probe"]["reason"].startswith("augment_on=device: XLA cannot compile")


def test_on_a_tpu_auto_augments_in_the_pipeline_and_device_is_refused(monkeypatch):
    """A TPU compiles the whole step with XLA (no kernel for the image transforms)."""
    monkeypatch.setattr(speed, "tpu_present", lambda: True)
    monkeypatch.setattr(speed, "accelerator_present", lambda: True)
    cfg = LabConfig.preset("quick")
    assert speed.choose_augment_on(cfg, None)[0].augment_on == "pipeline"
    with pytest.raises(ValueError, match="augment_on='device' is not valid on a TPU"):
        speed.choose_augment_on(cfg.replace(augment_on="device"), None)
