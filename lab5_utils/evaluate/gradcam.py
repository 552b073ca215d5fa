"""Grad-CAM: where in an image the model found its evidence for a class.

The method of keras-io's Grad-CAM example (Selvaraju et al., 2017): the gradient of the class
score (the logit, before the softmax, which saturates) with respect to the last convolutional
block's activations (`top_activation` of the EfficientNet base), averaged over the grid, weights
each channel; the weighted sum of channels, positive part, scaled to 0..1, is the heatmap. The
grid is image_size / 32 cells a side (7 x 7 at 224 px), so heatmaps are coarse by nature.
Used by `lab5 predict --explain` and notebook 04.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from lab5_utils.data.pipeline import decode
from lab5_utils.model.network import BASE_NAME, base_of

LAST_CONV = "top_activation"


def gradcam(model: keras.Model, images: np.ndarray, classes: Sequence[int] | None = None) -> np.ndarray:
    """Heatmaps float32 [N, g, g] in 0..1 for uint8 images [N, size, size, 3] (as the model sees
    them) and the evidence for `classes` (default: each image's predicted class)."""
    conv_model, head = _conv_and_head(model)
    x = tf.cast(tf.convert_to_tensor(images), tf.float32)
    with tf.GradientTape() as tape:
        conv = tf.cast(conv_model(x, training=False), tf.float32)  # float32 also under mixed precision
        tape.watch(conv)
        logits = _logits(head, conv)
        chosen = tf.argmax(logits, axis=1) if classes is None else tf.constant(classes, tf.int64)
        score = tf.gather(logits, chosen, axis=1, batch_dims=1)
    grads = tape.gradient(score, conv)  # images are independent: d(sum)/d(conv_i) = d(score_i)/d(conv_i)
    weights = tf.reduce_mean(grads, axis=(1, 2))  # [N, channels]
    cam = tf.nn.relu(tf.einsum("nhwc,nc->nhw", conv, weights))
    peak = tf.reduce_max(cam, axis=(1, 2), keepdims=True)
    return np.asarray(tf.math.divide_no_nan(cam, peak), np.float32)


def _conv_and_head(model: keras.Model) -> tuple[keras.Model, list[keras.layers.Layer]]:
    """The base up to its last conv block, and the layers after the base (pool, dropout, Dense)."""
    try:
        base = base_of(model)
        last_conv = base.get_layer(LAST_CONV)
    except ValueError:
        raise ValueError(
            f"model {model.name!r}: Grad-CAM needs a lab5 model (build_model: a base layer "
            f"{BASE_NAME!r} with a {LAST_CONV!r} layer); its layers are "
            f"{[layer.name for layer in model.layers]}."
        ) from None
    conv_model = base if base.layers[-1] is last_conv else keras.Model(base.inputs, last_conv.output)
    return conv_model, model.layers[model.layers.index(base) + 1 :]


def _logits(head: list[keras.layers.Layer], x: tf.Tensor) -> tf.Tensor:
    """Run the head on the conv activations; the final softmax Dense layer without its softmax."""
    *rest, last = head
    for layer in rest:
        x = layer(x, training=False)
    if isinstance(last, keras.layers.Dense) and last.activation is keras.activations.softmax:
        return tf.cast(x, tf.float32) @ tf.cast(last.kernel, tf.float32) + tf.cast(last.bias, tf.float32)
    return tf.cast(last(x, training=False), tf.float32)


def overlay(photo: np.ndarray, heatmap: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """The heatmap, resized to the photo and coloured (matplotlib's "jet": red = most evidence),
    blended onto the uint8 photo [H, W, 3]: alpha x heatmap + (1 - alpha) x photo."""
    from matplotlib import colormaps

    h, w = photo.shape[:2]
    resized = tf.image.resize(np.asarray(heatmap, np.float32)[..., None], [h, w])[..., 0]
    colour = colormaps["jet"](np.clip(resized.numpy(), 0, 1))[..., :3] * 255
    return np.clip(alpha * colour + (1 - alpha) * photo, 0, 255).round().astype(np.uint8)


def explain(
    model: keras.Model, images: np.ndarray, photos: Sequence[np.ndarray] | None = None,
    classes: Sequence[int] | None = None, alpha: float = 0.4,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Grad-CAM heatmaps of uint8 `images` [N, size, size, 3] and overlays drawn on `photos`
    (e.g. the originals, any sizes) or, without them, on the images themselves."""
    heatmaps = gradcam(model, images, classes)
    backgrounds = list(images) if photos is None else list(photos)
    if len(backgrounds) != len(heatmaps):
        raise ValueError(
            f"photos: expected {len(heatmaps)} photos (one per image), got {len(backgrounds)}")
    return heatmaps, [overlay(np.asarray(p), m, alpha) for p, m in zip(backgrounds, heatmaps)]


def displayed_photo(encoded: tf.Tensor, orientation: int = 1, max_side: int = 1024) -> np.ndarray:
    """A photo as a viewer shows it (EXIF orientation applied, its own proportions), uint8,
    the longer side at most `max_side` (JPEGs are decoded at a reduced scale when possible)."""
    image = decode(encoded, max_side // 2, orientation=orientation)
    h, w = (int(v) for v in image.shape[:2])
    if max(h, w) > max_side:
        scale = max_side / max(h, w)
        image = tf.image.resize(image, [max(1, round(h * scale)), max(1, round(w * scale))],
                                antialias=True)
    return np.clip(np.asarray(image).round(), 0, 255).astype(np.uint8)


def save_png(image: np.ndarray, path: str | Path) -> Path:
    """Write a uint8 image as PNG (atomically: a kill leaves no half-written file)."""
    from PIL import Image

    from lab5_utils.files import atomic_path

    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
    return Path(path)
