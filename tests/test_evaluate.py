"""Tests for lab5_utils.evaluate.scoring, each checked against an independent computation."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from lab5_utils.evaluate.scoring import (
    best_and_worst,
    collect_predictions,
    evaluate_model,
    evaluate_predictions,
    top_losses,
)


def random_probs(rng: np.random.Generator, n: int, c: int) -> np.ndarray:
    logits = rng.normal(size=(n, c))
    e = np.exp(logits)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def loop_topk(y_true, probs, k) -> float:
    hits = 0
    for label, row in zip(y_true, probs, strict=True):
        ranked = sorted(range(len(row)), key=lambda j: -row[j])
        hits += label in ranked[:k]
    return hits / len(y_true)


@pytest.mark.parametrize("num_classes", [3, 5, 12])
def test_top1_top5_match_loop(num_classes):
    rng = np.random.default_rng(num_classes)
    probs = random_probs(rng, 200, num_classes)
    y = rng.integers(0, num_classes, size=200)
    ev = evaluate_predictions(y, probs, [f"c{i}" for i in range(num_classes)])
    assert ev.num_examples == 200
    assert ev.top1 == pytest.approx(loop_topk(y, probs, 1))
    assert ev.top5 == pytest.approx(loop_topk(y, probs, min(5, num_classes)))
    if num_classes < 5:
        assert ev.top5 == 1.0  # k = C: the true class is always among all classes


def test_per_class_and_confusion_match_manual_count():
    rng = np.random.default_rng(1)
    names = ["apple", "bread", "curry", "donut"]
    probs = random_probs(rng, 60, 4)
    y = rng.choice([0, 1, 3], size=60)  # "curry" never appears
    ev = evaluate_predictions(y, probs, names)
    pred = [max(range(4), key=lambda j: row[j]) for row in probs]
    for i, name in enumerate(names):
        row = ev.per_class.loc[ev.per_class["class"] == name].iloc[0]
        idx = [t for t in range(60) if y[t] == i]
        assert row["support"] == len(idx)
        assert row["correct"] == sum(pred[t] == i for t in idx)
        if idx:
            assert row["accuracy"] == pytest.approx(row["correct"] / len(idx))
            expected = [sum(pred[t] == j for t in idx) / len(idx) for j in range(4)]
            np.testing.assert_allclose(ev.confusion[i], expected)
            assert ev.confusion[i].sum() == pytest.approx(1.0)
        else:
            assert math.isnan(row["accuracy"])
            assert not ev.confusion[i].any()
    assert list(ev.per_class.columns) == ["class", "accuracy", "support", "correct"]
    assert ev.confusion.shape == (4, 4)


def one_hot_probs(pred, c):
    probs = np.full((len(pred), c), 0.1 / (c - 1), np.float32)
    probs[np.arange(len(pred)), pred] = 0.9
    return probs


def test_confused_pairs_exact_order():
    names = ["a", "b", "c", "d"]
    # (true, predicted, times): 3 x b->c, 2 x a->b, 2 x a->d, 1 x d->a, plus correct ones.
    spec = [(1, 2, 3), (0, 1, 2), (0, 3, 2), (3, 0, 1), (0, 0, 4), (1, 1, 1), (2, 2, 5)]
    y = np.array([t for t, _, n in spec for _ in range(n)])
    pred = np.array([p for _, p, n in spec for _ in range(n)])
    ev = evaluate_predictions(y, one_hot_probs(pred, 4), names)
    pairs = ev.confused_pairs
    assert list(pairs.columns) == ["true", "predicted", "count", "share_of_true"]
    assert list(zip(pairs["true"], pairs["predicted"], pairs["count"], strict=True)) == [
        ("b", "c", 3),
        ("a", "b", 2),
        ("a", "d", 2),
        ("d", "a", 1),
    ]
    np.testing.assert_allclose(pairs["share_of_true"], [3 / 4, 2 / 8, 2 / 8, 1 / 1])
    top2 = evaluate_predictions(y, one_hot_probs(pred, 4), names, top_pairs=2).confused_pairs
    pd.testing.assert_frame_equal(top2, pairs.head(2))


def test_confused_pairs_default_keeps_ten():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 8, size=300)
    ev = evaluate_predictions(y, random_probs(rng, 300, 8), [f"k{i}" for i in range(8)])
    assert len(ev.confused_pairs) == 10
    counts = list(ev.confused_pairs["count"])
    assert counts == sorted(counts, reverse=True) and min(counts) > 0
    assert all(ev.confused_pairs["true"] != ev.confused_pairs["predicted"])


def test_best_and_worst_ignores_nan_and_breaks_ties_by_name():
    per_class = pd.DataFrame(
        {
            "class": ["e", "d", "c", "b", "a"],
            "accuracy": [0.5, np.nan, 0.9, 0.5, 0.1],
            "support": [2, 0, 10, 2, 10],
            "correct": [1, 0, 9, 1, 1],
        }
    )
    best, worst = best_and_worst(per_class, n=3)
    assert list(best["class"]) == ["c", "b", "e"]
    assert list(worst["class"]) == ["a", "b", "e"]


@pytest.mark.parametrize(
    "y, probs, names, argument",
    [
        ([0, 1, 2], np.full((2, 3), 1 / 3), ["a", "b", "c"], "y_true"),
        ([0, 3], np.full((2, 3), 1 / 3), ["a", "b", "c"], "y_true"),
        ([0, -1], np.full((2, 3), 1 / 3), ["a", "b", "c"], "y_true"),
        ([0, 1], np.full(3, 1 / 3), ["a", "b", "c"], "probs"),
        ([0, 1], np.full((2, 3), 1 / 3), ["a", "b"], "class_names"),
    ],
)
def test_bad_inputs_raise_value_error_naming_argument(y, probs, names, argument):
    with pytest.raises(ValueError, match=argument):
        evaluate_predictions(np.array(y), probs, names)


@pytest.fixture(scope="module")
def tiny_model_and_data():
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    model.compile(
        loss="sparse_categorical_crossentropy",
        metrics=[keras.metrics.SparseCategoricalAccuracy()],
    )
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, size=(40, 8, 8, 3)).astype(np.float32)
    labels = rng.integers(0, 3, size=40).astype(np.int32)
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(6)  # last batch has 4
    return model, ds, images, labels


def test_collect_predictions_keeps_order_and_images(tiny_model_and_data):
    model, ds, images, labels = tiny_model_and_data
    preds = collect_predictions(model, ds, keep_images=10)
    np.testing.assert_array_equal(preds.y_true, labels)
    assert preds.probs.shape == (40, 3) and preds.probs.dtype == np.float32
    np.testing.assert_allclose(preds.probs.sum(axis=1), 1.0, atol=1e-5)
    assert preds.images.dtype == np.uint8 and preds.images.shape == (10, 8, 8, 3)
    np.testing.assert_array_equal(preds.images, np.rint(images[:10]).astype(np.uint8))
    np.testing.assert_array_equal(preds.y_pred, preds.probs.argmax(axis=1))

    short = collect_predictions(model, ds, keep_images=0, max_batches=2)
    np.testing.assert_array_equal(short.y_true, labels[:12])
    assert short.images.shape == (0, 8, 8, 3)


def test_evaluate_model_top1_matches_keras_evaluate(tiny_model_and_data):
    model, ds, _, labels = tiny_model_and_data
    ev, preds = evaluate_model(model, ds, ["x", "y", "z"])
    keras_acc = model.evaluate(ds, verbose=0, return_dict=True)["sparse_categorical_accuracy"]
    assert ev.top1 == pytest.approx(keras_acc, abs=1e-6)
    assert ev.top5 == 1.0  # 3 classes -> k = 3
    assert ev.num_examples == len(preds.y_true) == len(labels)


def test_top_losses_are_the_most_confidently_wrong_in_order():
    y_true = np.array([0, 1, 2, 0, 1, 2])
    probs = np.array([
        [0.9, 0.05, 0.05],  # right
        [0.7, 0.2, 0.1],    # wrong, 70 % on class 0
        [0.05, 0.9, 0.05],  # wrong, 90 %: the worst
        [0.3, 0.6, 0.1],    # wrong, 60 %
        [0.1, 0.8, 0.1],    # right, very sure
        [0.2, 0.1, 0.7],    # right
    ])
    top = top_losses(y_true, probs, n=2)
    assert list(top["index"]) == [2, 1] and list(top["predicted"]) == [1, 0]
    assert list(top["true"]) == [2, 1]
    np.testing.assert_allclose(top["probability"], [0.9, 0.7])
    np.testing.assert_allclose(top["true_probability"], [0.05, 0.2])
    assert list(top_losses(y_true, probs, n=10)["index"]) == [2, 1, 3]  # only the wrong ones
    assert top_losses(np.array([0]), np.array([[1.0, 0.0]])).empty


@pytest.mark.slow
def test_saved_test_predictions_match_a_fresh_evaluation_of_best_keras(trained_lab):
    """Slow: evaluates the shared tiny training's models (`trained_lab`) again."""
    from lab5_utils.data.splits import load_splits
    from lab5_utils.evaluate.scoring import load_predictions
    from lab5_utils.model.network import load_model
    from lab5_utils.report import analysis
    from lab5_utils.train.sweep import sweep_runs

    cfg, transfer, finetune = trained_lab
    test = load_splits(cfg).test
    for run in (transfer, finetune):
        saved = load_predictions(run.run_dir)
        names = json.loads((run.run_dir / "class_names.json").read_text())
        again = collect_predictions(load_model(run.run_dir / "best.keras"), test)
        fresh = evaluate_predictions(again.y_true, again.probs, names)
        np.testing.assert_array_equal(saved.y_true, again.y_true)
        np.testing.assert_allclose(saved.probs, again.probs, atol=1e-5)
        assert saved.probs.shape == (cfg.num_classes * cfg.synthetic_test_per_class, cfg.num_classes)
        assert run.metrics["test_accuracy"] == pytest.approx(fresh.top1)
        assert run.metrics["test_top5"] == pytest.approx(fresh.top5)
        assert run.metrics["test_loss"] == pytest.approx(fresh.loss, rel=1e-4)
        assert run.metrics["num_test"] == fresh.num_examples
    table = analysis.results_table(cfg, sweep_runs([cfg.finetune_learning_rate]))
    result = analysis.evaluate_models(cfg, table, sample=4, worst=3)
    assert list(result.summary["test images"]) == [f"{fresh.num_examples:,}"] * 2
    chosen = transfer if result.best_name == "transfer" else finetune
    assert 100 * result.evaluation.top1 == pytest.approx(100 * chosen.metrics["test_accuracy"])
    # the images shown are the test images at those indices, as the test pipeline yields them
    batch = np.concatenate([np.asarray(x) for x, _ in test])
    np.testing.assert_array_equal(result.predictions.images, batch[:4])
    np.testing.assert_array_equal(result.top_loss_images, batch[result.top_losses["index"]])
