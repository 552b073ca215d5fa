import warnings

import keras
import numpy as np
import pytest

from lab5_utils.model import network
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    cfg = tiny_config(tmp_path_factory.mktemp("m"), image_size=32, weights=None)
    return cfg, network.build_model(cfg, 5)


def _bns(model):
    return [layer for layer in network.base_of(model).layers
            if isinstance(layer, keras.layers.BatchNormalization)]


def test_structure_and_float32_head(small_model):
    _, model = small_model
    assert model.get_layer("efficientnetb0") is network.base_of(model)
    assert model.output_shape == (None, 5)
    assert model.get_layer("predictions").dtype_policy.compute_dtype == "float32"


def test_freeze_base_leaves_only_the_head_trainable(small_model):
    _, model = small_model
    network.freeze_base(model)
    head = model.get_layer("predictions")
    assert {id(w) for w in model.trainable_weights} == {id(w) for w in head.trainable_weights}
    assert network.trainable_summary(model)["trainable"] == 1280 * 5 + 5


def test_unfreeze_all_trains_every_non_bn_layer_and_no_bn(small_model):
    _, model = small_model
    network.unfreeze(model, "all")
    for layer in network.base_of(model).layers:
        is_bn = isinstance(layer, keras.layers.BatchNormalization)
        assert layer.trainable is not is_bn, layer.name
    network.freeze_base(model)


def test_unfreeze_top_n_counts_non_bn_layers_from_the_end(small_model):
    _, model = small_model
    network.unfreeze(model, "top:20")
    layers = network.base_of(model).layers
    trainable = [layer for layer in layers if layer.trainable]
    non_bn = [layer for layer in layers if not isinstance(layer, keras.layers.BatchNormalization)]
    assert trainable == non_bn[-20:]
    network.freeze_base(model)


def test_frozen_bn_statistics_are_bit_identical_after_fine_tune_fit(small_model):
    _, model = small_model
    network.unfreeze(model, "all")
    network.compile_model(model, 1e-3)
    before = [w.numpy().copy() for bn in _bns(model) for w in bn.non_trainable_weights]
    kernel = model.get_layer("efficientnetb0").get_layer("stem_conv").kernel.numpy().copy()
    x = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    model.fit(x, np.arange(8) % 5, batch_size=4, epochs=1, verbose=0)
    after = [w.numpy() for bn in _bns(model) for w in bn.non_trainable_weights]
    assert len(before) == 4 * len(_bns(model)) > 0  # gamma, beta, moving mean and variance
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    assert not np.array_equal(kernel, model.get_layer("efficientnetb0").get_layer("stem_conv").kernel)
    network.freeze_base(model)


def test_weights_file_round_trip_and_clear_errors(small_model, tmp_path):
    cfg, model = small_model
    path = tmp_path / "base.weights.h5"
    network.base_of(model).save_weights(str(path))
    loaded = network.build_model(cfg.replace(weights=str(path)), 5)
    for a, b in zip(network.base_of(model).weights, network.base_of(loaded).weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    with pytest.raises(FileNotFoundError, match="missing.weights.h5"):
        network.build_model(cfg.replace(weights=str(tmp_path / "missing.weights.h5")), 5)
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    other.save_weights(str(tmp_path / "other.weights.h5"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match="other.weights.h5"):
            network.build_model(cfg.replace(weights=str(tmp_path / "other.weights.h5")), 5)
    assert not [w for w in caught if "no matching group" in str(w.message)]  # one error, no flood


def test_calibration_moves_bn_statistics_to_the_data(small_model):
    import tensorflow as tf

    cfg, _ = small_model
    model = network.build_model(cfg, 5)
    x = tf.random.uniform((16, 32, 32, 3), 0, 255, seed=1)
    ds = tf.data.Dataset.from_tensor_slices((x, tf.zeros(16, tf.int32))).batch(8)
    base = network.base_of(model)
    stem = base.get_layer("stem_bn")
    assert np.allclose(stem.moving_variance.numpy(), 1.0)
    assert network.calibrate_batchnorm(model, ds, 16) == 16
    # the moving statistics are the mean of the two batches' statistics of the stem conv output
    conv = keras.Model(base.inputs, base.get_layer("stem_conv").output)
    outputs = [conv(x[i : i + 8]).numpy() for i in (0, 8)]
    np.testing.assert_allclose(stem.moving_mean.numpy(),
                               np.mean([o.mean(axis=(0, 1, 2)) for o in outputs], axis=0),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stem.moving_variance.numpy(),
                               np.mean([o.var(axis=(0, 1, 2)) for o in outputs], axis=0),
                               rtol=1e-3, atol=1e-5)
    assert stem.momentum == 0.99  # restored


def test_mixed_precision_follows_the_config():
    from lab5_utils.config import LabConfig

    assert network.use_mixed_precision(LabConfig.preset("demo", mixed_precision="on"))
    assert not network.use_mixed_precision(LabConfig.preset("demo", mixed_precision="off"))
    assert network.use_mixed_precision(LabConfig.preset("demo")) == network.gpu_available()
