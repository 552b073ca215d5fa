"""The fine-tuning recipe: each part does what its setting says (label smoothing, AdamW's
exclusions, EMA, TTA and the test size, RandAugment, mixup/cutmix) and bad values stop early."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from lab5_utils import config
from lab5_utils.config import LabConfig
from lab5_utils.data import pipeline, splits
from lab5_utils.evaluate import scoring
from lab5_utils.model import network, recipe
from lab5_utils.train.training import run_stage
from tests.conftest import tiny_config


def _small_model(num_classes: int = 3, size: int = 8) -> keras.Model:
    """Conv -> trainable BatchNorm -> pooling -> dense -> softmax head: a few hundred weights,
    and not mirror-symmetric (the kernel is random)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)  # pixels arrive as 0..255
    x = keras.layers.Conv2D(4, 3, name="conv")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(6, name="hidden")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs)


def _png_dataset(values: list[int], size: int = 32) -> tf.data.Dataset:
    """One flat grey PNG per value (label i for values[i]): decoding and resizing keep it flat."""
    images = [tf.io.encode_png(np.full((size, size, 3), v, np.uint8)).numpy() for v in values]
    labels = np.arange(len(values), dtype=np.int32)
    return tf.data.Dataset.from_tensor_slices((images, labels))


# --- label smoothing: one-hot labels and the categorical loss ------------------------------
def test_smoothed_targets_sum_to_one_and_favour_the_true_class(tmp_path):
    """The targets the real loss uses, read back from its gradient: with p = softmax(z),
    d loss / d z = p - t, so t = p - gradient (at z = 0, p = 1/C)."""
    eps = 0.1
    cfg = tiny_config(tmp_path, label_smoothing=eps)
    _, val, test, info = splits.load_splits(cfg)
    images, labels = next(iter(val))
    classes = info.num_classes
    assert labels.shape == (len(images), classes) and labels.dtype == tf.float32
    logits = tf.zeros((len(images), classes))
    with tf.GradientTape() as tape:
        tape.watch(logits)
        loss = recipe.make_loss(cfg)(labels, tf.nn.softmax(logits))
    targets = 1 / classes - tape.gradient(loss, logits).numpy() * len(images)
    true = labels.numpy().argmax(axis=1)
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(targets[np.arange(len(true)), true], 1 - eps + eps / classes,
                               atol=1e-5)
    others = np.ones_like(targets, bool)
    others[np.arange(len(true)), true] = False
    np.testing.assert_allclose(targets[others], eps / classes, atol=1e-5)
    assert next(iter(test))[1].dtype == tf.int32  # the test split keeps integer labels


def test_accuracy_and_top5_are_the_same_with_one_hot_labels():
    rng = np.random.default_rng(1)
    classes, n = 8, 200
    probs = rng.dirichlet(np.ones(classes), n).astype(np.float32)
    y = rng.integers(0, classes, n)
    expected = scoring.evaluate_predictions(y, probs, [str(c) for c in range(classes)])
    for cfg, labels in ((LabConfig(), y), (LabConfig(label_smoothing=0.1),
                                           np.eye(classes, dtype=np.float32)[y])):
        metrics = recipe.make_metrics(cfg, classes)
        assert [m.name for m in metrics] == ["accuracy", "top5"]  # history.csv's columns
        for metric in metrics:
            metric.update_state(labels, probs)
        top1, top5 = (float(m.result()) for m in metrics)
        assert top1 == pytest.approx(expected.top1) and top5 == pytest.approx(expected.top5)


def test_a_compiled_model_keeps_its_history_columns_with_one_hot_labels():
    model = _small_model()
    network.compile_model(model, 1e-3, cfg=LabConfig(label_smoothing=0.2))
    x = np.random.default_rng(0).uniform(0, 255, (8, 8, 8, 3)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[np.arange(8) % 3]
    logs = model.fit(x, y, epochs=1, verbose=0, validation_data=(x, y)).history
    assert {"loss", "accuracy", "top5", "val_loss", "val_accuracy", "val_top5"} <= set(logs)


# --- AdamW: what is decayed ------------------------------------------------------------------
def _one_zero_gradient_step(cfg: LabConfig) -> tuple[dict, dict]:
    model = _small_model()
    for layer in model.layers:  # nonzero biases and beta, gamma != 1: decay would show
        if getattr(layer, "bias", None) is not None:
            layer.bias.assign(np.full(layer.bias.shape, 0.5, np.float32))
    model.get_layer("bn").gamma.assign(np.full(4, 2.0, np.float32))
    model.get_layer("bn").beta.assign(np.full(4, 0.5, np.float32))
    network.compile_model(model, 0.1, cfg=cfg)
    before = {w.path: w.numpy().copy() for w in model.trainable_weights}
    zeros = [tf.zeros_like(w) for w in model.trainable_weights]
    model.optimizer.apply_gradients(zip(zeros, model.trainable_weights))  # Adam moves nothing
    return before, {w.path: w.numpy() for w in model.trainable_weights}


@pytest.mark.parametrize("decay_head", [True, False])
def test_adamw_decays_kernels_but_not_batchnorm_biases_or_an_excluded_head(decay_head):
    cfg = LabConfig(optimizer="adamw", weight_decay=0.5, decay_head=decay_head)
    before, after = _one_zero_gradient_step(cfg)
    shrink = 1 - 0.5 * 0.1  # Keras: w -= w * weight_decay * learning_rate
    for path in before:
        decayed = path.endswith("kernel") and (decay_head or not path.startswith("predictions"))
        expected = before[path] * shrink if decayed else before[path]
        np.testing.assert_allclose(after[path], expected, rtol=1e-6, err_msg=path)
    assert any(p.startswith("bn/") for p in before)  # the BatchNorm really was trainable


def test_adam_without_decay_leaves_every_weight_alone():
    before, after = _one_zero_gradient_step(LabConfig())
    for path in before:
        np.testing.assert_array_equal(after[path], before[path])


# --- EMA: validated, checkpointed, resumed the right way ----------------------------------
class _Record(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seen = []

    def on_epoch_end(self, epoch, logs=None):
        self.seen.append([w.numpy().copy() for w in self.model.trainable_weights])


def _ema_data():
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 255, (32, 8, 8, 3)).astype(np.float32)
    return x, (np.arange(32) % 3).astype(np.int32)


def test_ema_weights_differ_from_the_raw_ones_and_are_validated_and_checkpointed(tmp_path):
    x, y = _ema_data()
    model = _small_model()
    network.compile_model(model, 0.05, cfg=LabConfig(ema=True, ema_momentum=0.9))
    raw, averaged = _Record(), _Record()
    best = tmp_path / "best.keras"
    # training.run_stage's order: ..., the EMA swap, ModelCheckpoint, BackupAndRestore
    callbacks = [raw, *recipe.ema_callbacks(LabConfig(ema=True), tmp_path / "backup"), averaged,
                 keras.callbacks.ModelCheckpoint(str(best), monitor="val_loss")]
    logs = model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False,
                     validation_data=(x, y), callbacks=callbacks).history
    for r, a in zip(raw.seen, averaged.seen):
        assert any(not np.allclose(p, q) for p, q in zip(r, a))  # 4 steps: averages lag
    saved = network.load_model(best)
    for w, a in zip(saved.trainable_weights, averaged.seen[-1]):
        np.testing.assert_array_equal(w.numpy(), a)
    network.compile_model(saved, 0.05)
    val_loss = saved.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)["loss"]
    assert val_loss == pytest.approx(logs["val_loss"][-1], rel=1e-5)  # what validation measured


def _fit_with_backup(x, y, backup, init, epochs=4, stop_at=None):
    model = _small_model()
    model.set_weights(init)
    network.compile_model(model, 0.05, cfg=LabConfig(ema=True, ema_momentum=0.8))

    class Kill(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == stop_at:
                raise KeyboardInterrupt

    callbacks = [*recipe.ema_callbacks(LabConfig(ema=True), backup),
                 keras.callbacks.BackupAndRestore(str(backup)), Kill()]
    model.fit(x, y, batch_size=8, epochs=epochs, verbose=0, shuffle=False, callbacks=callbacks)
    return model


def test_a_killed_ema_run_resumes_exactly_as_an_uninterrupted_one(tmp_path):
    x, y = _ema_data()
    init = _small_model().get_weights()
    whole = _fit_with_backup(x, y, tmp_path / "a", init)
    with pytest.raises(KeyboardInterrupt):
        _fit_with_backup(x, y, tmp_path / "b", init, stop_at=2)  # backup after epoch 2 kept
    assert (tmp_path / "b" / recipe.BACKUP_WEIGHTS).is_file()
    resumed = _fit_with_backup(x, y, tmp_path / "b", init)
    for a, b in zip(whole.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(whole.optimizer.variables, resumed.optimizer.variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6, err_msg=a.path)


# --- test time: flip TTA and the test size -------------------------------------------------
def test_flip_tta_is_the_mean_of_the_image_and_its_mirror():
    model = _small_model()
    x = np.random.default_rng(2).integers(0, 256, (6, 8, 8, 3)).astype(np.uint8)
    plain, mirror = (model.predict(v.astype(np.float32), verbose=0) for v in (x, x[:, :, ::-1]))
    assert not np.allclose(plain, mirror)  # the model is not symmetric: the test can fail
    tested = recipe.test_time_model(model, LabConfig(tta="flip"))
    batches = tf.data.Dataset.from_tensor_slices((x, np.zeros(6, np.int32))).batch(4)
    got = scoring.collect_predictions(tested, batches, keep_images=0).probs
    np.testing.assert_allclose(got, (plain + mirror) / 2, rtol=1e-5, atol=1e-6)
    assert recipe.test_time_model(model, LabConfig()) is model


def test_test_image_size_rebuilds_the_model_with_the_same_weights(tmp_path):
    cfg = tiny_config(tmp_path, test_image_size=96, weights=None)
    model = network.build_model(cfg, 5)
    resized = network.with_input_size(model, cfg, recipe.test_image_size(cfg))
    assert resized.input_shape == (None, 96, 96, 3) and model.input_shape == (None, 64, 64, 3)
    pairs = list(zip(network.base_of(model).layers, network.base_of(resized).layers))
    assert len(pairs) == len(network.base_of(model).layers) > 200
    for old, new in pairs:  # layer by layer: the same layer, the same values, nothing misplaced
        assert type(old) is type(new) and len(old.weights) == len(new.weights)
        for a, b in zip(old.weights, new.weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    for a, b in zip(model.get_layer("predictions").weights,
                    resized.get_layer("predictions").weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    images, labels = next(iter(splits.load_splits(cfg).test))
    assert images.shape[1:] == (96, 96, 3) and labels.dtype == tf.int32


# --- augmentations: RandAugment per image, mixup/cutmix per batch ------------------------------
def _first_batch(cfg: LabConfig, ds: tf.data.Dataset, n: int, depth: int | None = None):
    batches = pipeline.make_pipeline(ds, cfg.replace(batch_size=n), True, n, one_hot_depth=depth)
    return [t.numpy() for t in next(iter(batches))]


def test_randaugment_differs_between_the_images_of_a_batch_and_repeats_from_the_seed(tmp_path):
    cfg = tiny_config(tmp_path, augmentations=["randaugment"], randaugment_factor=0.5)
    encoded = splits.load_encoded(cfg).train.take(1).repeat(8)  # one image, 8 times
    images, _ = _first_batch(cfg, encoded, 8)
    plain, _ = _first_batch(cfg.replace(augmentations=[]), encoded, 8)
    assert (plain == plain[0]).all()  # without it the 8 are identical
    distinct = {images[i].tobytes() for i in range(8)}
    assert len(distinct) >= 6 and images.dtype == np.uint8
    again, _ = _first_batch(cfg, encoded, 8)
    np.testing.assert_array_equal(again, images)  # a new pipeline, the same batch
    other, _ = _first_batch(cfg.replace(seed=7), encoded, 8)
    assert not np.array_equal(other, images)


@pytest.mark.parametrize("kind", ["mixup", "cutmix"])
def test_mixing_yields_labels_that_sum_to_one_and_mix_two_images(tmp_path, kind):
    values = [0, 60, 120, 180, 240]  # one flat image per class
    cfg = tiny_config(tmp_path, augmentations=[kind], image_size=32)
    images, labels = _first_batch(cfg, _png_dataset(values), 5, depth=5)
    np.testing.assert_allclose(labels.sum(axis=1), 1.0, atol=1e-5)
    assert ((labels > 1e-3).sum(axis=1) <= 2).all() and ((labels > 1e-3).sum(axis=1) == 2).any()
    for image, label in zip(images.astype(float), labels):
        if kind == "mixup":  # every pixel is the labels' blend of the two greys
            np.testing.assert_allclose(image, label @ np.array(values, float), atol=1.0)
        else:  # every pixel is one of the two greys, in the labels' proportions
            share = [(np.abs(image - v) < 1).mean() for v in values]
            assert sum(share) == pytest.approx(1.0)
            np.testing.assert_allclose(share, label, atol=0.1)
    again = _first_batch(cfg, _png_dataset(values), 5, depth=5)
    np.testing.assert_array_equal(again[0], images)
    np.testing.assert_array_equal(again[1], labels)


def test_validation_is_never_augmented(tmp_path):
    cfg = tiny_config(tmp_path, augmentations=["flip", "crop", "randaugment", "mixup"],
                      label_smoothing=0.1)
    plain = tiny_config(tmp_path)
    a, b = (next(iter(splits.load_splits(c).validation)) for c in (cfg, plain))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1].numpy().argmax(axis=1), b[1])
    assert set(np.unique(a[1])) == {0.0, 1.0}  # one-hot, not mixed


# --- what a run records, and bad values ------------------------------------------------------
def test_the_recipe_table_and_record_cover_every_part():
    cfg = LabConfig.preset("demo", label_smoothing=0.1, optimizer="adamw", weight_decay=0.05,
                           ema=True, augmentations=["flip", "crop", "randaugment"], tta="flip",
                           test_image_size=256)
    table = recipe.recipe_table(cfg, "finetune")
    assert list(table.columns) == ["part", "setting", "what it does"]
    text = table.to_string()
    for shown in ("label_smoothing=0.1", "AdamW", "weight_decay=0.05", "EMA, momentum 0.99",
                  "randaugment (2 ops", "flip TTA at 256 px", "35%-100%"):
        assert shown in text, shown
    record = recipe.recipe_dict(cfg)
    assert record["labels"] == "one-hot" and record["mixup_alpha"] is None
    assert json.loads(json.dumps(record)) == record
    assert all(isinstance(v, (bool, int, float, str)) for v in recipe.hparams(cfg).values())
    demo = recipe.recipe_dict(LabConfig.preset("demo"))
    assert (demo["labels"], demo["optimizer"], demo["ema"], demo["tta"]) == (
        "integer", "adam", False, "none")
    assert demo["test_image_size"] == 96


def test_new_defaults_reproduce_the_lab_before_the_recipe():
    cfg = LabConfig()
    assert not recipe.one_hot(cfg)
    assert isinstance(recipe.make_loss(cfg), keras.losses.SparseCategoricalCrossentropy)
    optimizer = recipe.make_optimizer(cfg, 1e-3, _small_model())
    assert type(optimizer) is keras.optimizers.Adam and not optimizer.use_ema
    assert optimizer.weight_decay is None
    assert tuple(cfg.crop_scale) == pipeline.CROP_SCALE and cfg.tta == "none"
    assert recipe.test_image_size(cfg) == cfg.image_size


@pytest.mark.parametrize("setting, expected", [
    ("optimizer=sgd", "optimizer='sgd' is not valid: expected one of adam, adamw"),
    ("weight_decay=-0.1", "weight_decay=-0.1 is not valid"),
    ("weight_decay=0.05", "set optimizer=adamw"),
    ("label_smoothing=-0.1", "label_smoothing=-0.1 is not valid"),
    ("label_smoothing=1", "label_smoothing=1.0 is not valid: expected a number >= 0 and < 1"),
    ("tta=multi", "tta='multi' is not valid: expected one of none, flip"),
    ("ema_momentum=1", "ema_momentum=1.0 is not valid"),
    ("crop_scale=0.9,0.2", "crop_scale=[0.9, 0.2] is not valid"),
    ("test_image_size=16", "test_image_size=16 is not valid"),
    ("randaugment_factor=2", "randaugment_factor=2.0 is not valid"),
    ("mixup_alpha=0", "mixup_alpha=0.0 is not valid"),
    ("augmentations=flip,blur", "randaugment, mixup, cutmix"),
])
def test_bad_recipe_values_stop_before_any_run_folder(tmp_path, setting, expected):
    with pytest.raises(ValueError) as err:
        config.lab_config("demo", [setting], run_root=str(tmp_path / "runs"))
    assert expected in str(err.value) and setting.split("=")[0] in str(err.value)
    assert not (tmp_path / "runs").exists()


def test_mixing_needs_two_images_a_batch(tmp_path):
    with pytest.raises(ValueError, match=r"batch_size=1 .*augmentations=cutmix"):
        config.lab_config("demo", ["augmentations=flip,cutmix", "batch_size=1"],
                          run_root=str(tmp_path / "runs"))


def test_run_stage_checks_a_changed_config_before_making_its_folder(tmp_path):
    cfg = tiny_config(tmp_path)
    cfg.optimizer = "sgd"  # a dataclass field changed in place, past LabConfig's checks
    with pytest.raises(ValueError, match="optimizer='sgd'"):
        run_stage(cfg, "transfer", verbose=0)
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_a_recipe_run_records_it_and_keeps_the_validated_averaged_weights(tmp_path):
    """Slow (one tiny EfficientNet transfer run, ~1 min): only run_stage shows that its own
    callback order checkpoints the averaged weights and its test pass, and its validation pass
    after training, use TTA at the test size."""
    cfg = tiny_config(tmp_path, transfer_epochs=2, ema=True, ema_momentum=0.9,
                      label_smoothing=0.1, optimizer="adamw", weight_decay=0.05,
                      augmentations=["flip", "crop", "randaugment"], tta="flip",
                      test_image_size=96)
    result = run_stage(cfg, "transfer", verbose=0)
    m = result.metrics
    assert m["recipe"] == json.loads(json.dumps(recipe.recipe_dict(cfg)))
    assert m["ema_state_mb"] == pytest.approx(m["trainable_params"] * 4 / 2**20)
    best = network.load_model(result.run_dir / "best.keras")
    network.compile_model(best, 1e-3, cfg=cfg)
    _, val, test, _ = splits.load_splits(cfg)
    logged = result.history.set_index("epoch").loc[m["best_epoch"], "val_loss"]
    assert best.evaluate(val, verbose=0, return_dict=True)["loss"] == pytest.approx(logged,
                                                                                    rel=1e-4)
    tested = recipe.test_time_model(network.with_input_size(best, cfg, 96), cfg)
    expected = scoring.collect_predictions(tested, test, keep_images=0)
    saved = scoring.load_predictions(result.run_dir)
    np.testing.assert_allclose(saved.probs, expected.probs, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(saved.y_true, expected.y_true)
    validation = splits.test_time_validation(cfg, splits.load_encoded(cfg))
    seen = scoring.collect_predictions(network.at_test_time(best, cfg), validation, keep_images=0)
    assert m["test_time_val_accuracy"] == pytest.approx(seen.correct.mean())
    assert m["test_time"] == "flip TTA at 96 px" and m["image_size"] == cfg.image_size
    assert m["split_of"]["test_time_val_accuracy"] == "validation"


def test_quick_and_full_use_the_recipe_and_demo_keeps_the_old_defaults():
    demo = LabConfig.preset("demo")
    for name in ("label_smoothing", "optimizer", "weight_decay", "ema", "tta",
                 "test_image_size", "crop_scale"):
        assert getattr(demo, name) == getattr(LabConfig(), name), name
    assert demo.augmentations == ["flip", "crop"]
    for name in ("quick", "full"):
        cfg = LabConfig.preset(name)
        assert cfg.label_smoothing > 0 and cfg.optimizer == "adamw" and cfg.weight_decay > 0
        assert cfg.ema and cfg.tta == "flip" and cfg.test_image_size > cfg.image_size
        assert "randaugment" in cfg.augmentations
        assert not {"mixup", "cutmix"} & set(cfg.augmentations)  # short schedules: see README
    # EMA's horizon, 1/(1 - momentum) steps, is about one epoch in both
    for name, images in (("quick", 7575), ("full", 71960)):
        cfg = LabConfig.preset(name)
        horizon, epoch = 1 / (1 - cfg.ema_momentum), images / cfg.batch_size
        assert 0.5 < horizon / epoch < 1.5


def test_the_augmentation_preview_shows_randaugment_and_mixing(tmp_path):
    from lab5_utils.data import views

    cfg = tiny_config(tmp_path, augmentations=["randaugment"], randaugment_factor=0.5)
    train = splits.load_encoded(cfg).train
    original, versions = views.augmentation_examples(cfg, train, n=4)
    assert len({v.tobytes() for v in versions}) == 4 and original.shape == versions[0].shape
    mixed_cfg = cfg.replace(augmentations=["mixup"])
    _, mixed = views.augmentation_examples(mixed_cfg, train, n=4)
    plain, _ = _first_batch(cfg.replace(augmentations=[]), train.take(4), 4)
    assert len(mixed) == 4 and not np.array_equal(np.stack(mixed), plain)  # blended
