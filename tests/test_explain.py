"""Grad-CAM (`lab5_utils.evaluate.gradcam`): the heatmap points at the evidence, on the model's
structure."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from lab5_utils.evaluate.gradcam import displayed_photo, explain, gradcam, overlay
from lab5_utils.model.network import base_of, build_model
from tests.conftest import tiny_config
from tests.test_photos import save_with_orientation, upright_photo

SIZE, SIDE = 64, 16  # image size, side of the bright square


def squares(n: int, seed: int, always: bool = False):
    """Dark noisy images; every other one (or, `always`, each) has a bright square somewhere.
    Returns uint8 images, labels (1 = square) and the squares' (y, x) corners."""
    rng = np.random.default_rng(seed)
    images, labels, corners = [], [], []
    for i in range(n):
        image = rng.normal(50, 15, (SIZE, SIZE, 3))
        label = 1 if always else i % 2
        corner = tuple(int(v) for v in rng.integers(0, SIZE - SIDE, 2))
        if label:
            y, x = corner
            image[y : y + SIDE, x : x + SIDE] = rng.normal(220, 15, (SIDE, SIDE, 3))
        images.append(np.clip(image, 0, 255).astype(np.uint8))
        labels.append(label)
        corners.append(corner)
    return np.stack(images), np.array(labels, np.int32), corners


def small_cam_model() -> keras.Model:
    """build_model's structure (a nested base `efficientnetb0` ending in `top_activation`, then
    avg_pool, dropout and a softmax Dense) around a 3-layer conv base: an 8 x 8 grid of cells
    that see 15 px each. A random EfficientNet-B0 (no ImageNet weights offline) does not
    localize: its top cells each see the whole image, whatever Grad-CAM does."""
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    for filters in (8, 16, 16):
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same")(x)
        x = keras.layers.Activation("relu")(x)
    base = keras.Model(inputs, keras.layers.Activation("relu", name="top_activation")(x),
                       name="efficientnetb0")
    outer = keras.Input((SIZE, SIZE, 3))
    y = keras.layers.GlobalAveragePooling2D(name="avg_pool")(base(outer, training=False))
    y = keras.layers.Dropout(0.2, name="head_dropout")(y)
    outputs = keras.layers.Dense(2, activation="softmax", name="predictions")(y)
    return keras.Model(outer, outputs)


def test_the_heatmap_is_highest_where_the_evidence_is():
    keras.utils.set_random_seed(0)
    model = small_cam_model()
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    x, y, _ = squares(256, seed=0)
    history = model.fit(x, y, batch_size=32, epochs=8, verbose=0)
    assert history.history["accuracy"][-1] > 0.95
    held_out, _, corners = squares(30, seed=1, always=True)
    heatmaps = gradcam(model, held_out)
    assert heatmaps.shape == (30, 8, 8) and heatmaps.min() >= 0 and heatmaps.max() <= 1
    cell = SIZE // heatmaps.shape[1]
    hits = 0
    for heatmap, (y0, x0) in zip(heatmaps, corners):
        row, col = np.unravel_index(heatmap.argmax(), heatmap.shape)
        centre = (row + 0.5) * cell, (col + 0.5) * cell
        # inside the square, or in a cell that overlaps it
        hits += y0 - cell <= centre[0] <= y0 + SIDE + cell and x0 - cell <= centre[1] <= x0 + SIDE + cell
    assert hits >= 27  # 90 % (30 of 30 seen); by chance about 1 in 4, turned 180 degrees 1 or 2


def test_gradcam_on_lab5s_efficientnet_is_the_class_activation_map(tmp_path):
    """Behind a global-average pool and a Dense layer, Grad-CAM's channel weights are the Dense
    weights of the class: the heatmap must equal relu(activations . w_c), scaled to 1."""
    model = build_model(tiny_config(tmp_path, image_size=96, weights=None), num_classes=3)
    images = squares(4, seed=2, always=True)[0]
    images = np.stack([tf.image.resize(i, [96, 96]).numpy().astype(np.uint8) for i in images])
    classes = [0, 1, 2, 1]
    heatmaps = gradcam(model, images, classes)
    activations = base_of(model)(images.astype(np.float32), training=False).numpy()
    kernel = model.get_layer("predictions").kernel.numpy()
    assert heatmaps.shape == (4, 3, 3)
    for heatmap, a, c in zip(heatmaps, activations, classes):
        cam = np.maximum(a @ kernel[:, c], 0)
        np.testing.assert_allclose(heatmap, cam / cam.max(), atol=1e-4)


def test_explain_overlays_the_heatmap_on_the_photos_given():
    images = squares(2, seed=3, always=True)[0]
    model = small_cam_model()
    photos = [np.full((90, 160, 3), 128, np.uint8), np.full((200, 120, 3), 128, np.uint8)]
    heatmaps, overlays = explain(model, images, photos)
    assert [o.shape for o in overlays] == [(90, 160, 3), (200, 120, 3)]
    assert [o.shape for o in explain(model, images)[1]] == [(SIZE, SIZE, 3)] * 2
    with pytest.raises(ValueError, match="photos: expected 2 photos"):
        explain(model, images, photos[:1])
    hot = np.zeros((4, 4), np.float32)
    hot[0, 3] = 1.0  # top right
    blended = overlay(photos[0], hot).astype(int)
    assert blended[5, 150, 0] - blended[5, 150, 2] > 50  # red where the evidence is
    assert blended[85, 10, 2] - blended[85, 10, 0] > 50  # blue where there is none


def test_the_displayed_photo_is_upright_with_its_own_proportions(tmp_path):
    photo = upright_photo(96, 64)  # portrait, as the viewer sees it
    save_with_orientation(tmp_path / "p.jpg", photo, 6)  # stored 64 x 96, landscape
    encoded = tf.io.read_file(str(tmp_path / "p.jpg"))
    shown = displayed_photo(encoded, orientation=6)
    assert shown.shape == (96, 64, 3)
    assert np.abs(shown.astype(float) - photo).mean() < 3
    assert displayed_photo(encoded, orientation=6, max_side=48).shape == (48, 32, 3)


def test_a_model_without_lab5s_structure_is_refused_by_name():
    inputs = keras.Input((SIZE, SIZE, 3))
    other = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(inputs)), name="other")
    with pytest.raises(ValueError, match="model 'other': Grad-CAM needs a lab5 model"):
        gradcam(other, squares(1, seed=0)[0])
