import keras
import numpy as np
import pytest
import tensorflow as tf

from lab5_utils.model.schedules import find_lr, make_schedule, schedule_callbacks


def _lr_at(schedule, step):
    return float(schedule(step))


def test_cosine_warms_up_linearly_then_decays():
    s = make_schedule("cosine", 1e-3, steps_per_epoch=10, epochs=10, warmup_fraction=0.1)
    assert _lr_at(s, 0) == pytest.approx(1e-4)
    assert _lr_at(s, 5) == pytest.approx(5.5e-4, rel=1e-3)
    assert _lr_at(s, 10) == pytest.approx(1e-3, rel=1e-3)
    assert _lr_at(s, 55) < _lr_at(s, 20) < 1e-3
    assert _lr_at(s, 100) == pytest.approx(1e-5, rel=1e-2)


def test_exponential_reaches_a_tenth_by_the_end_and_constant_is_a_float():
    s = make_schedule("exponential", 1e-2, steps_per_epoch=4, epochs=5)
    assert _lr_at(s, 20) == pytest.approx(1e-3, rel=1e-4)
    assert make_schedule("constant", 3e-4, 4, 5) == 3e-4
    with pytest.raises(ValueError, match="learning_rate"):
        make_schedule("constant", 0, 4, 5)


def test_plateau_uses_reduce_lr_on_plateau():
    (cb,) = schedule_callbacks("plateau", 1e-3)
    assert isinstance(cb, keras.callbacks.ReduceLROnPlateau) and cb.monitor == "val_loss"
    assert schedule_callbacks("cosine", 1e-3) == []


def test_find_lr_leaves_the_model_unchanged_and_suggests_a_rate_in_range():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(3, activation="softmax")])
    model.layers[0].trainable = False
    before = [w.copy() for w in model.get_weights()]
    x = np.random.default_rng(0).normal(size=(256, 8)).astype("float32")
    y = (x[:, 0] > 0).astype("int32") + (x[:, 1] > 0).astype("int32")
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    result = find_lr(model, ds, start_lr=1e-5, end_lr=10.0, steps=60)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert model.layers[0].trainable is False
    curve = result.curve
    assert list(curve.columns) == ["lr", "loss", "smoothed_loss"] and len(curve) >= 10
    assert np.all(np.diff(curve["lr"]) > 0)
    assert curve["lr"].min() <= result.suggestion <= curve["lr"].max()
