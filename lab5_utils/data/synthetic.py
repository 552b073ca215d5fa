"""The demo's generated images: deterministic, learnable JPEGs in which the class sets hue,
shape and texture and noise varies the rest, so the whole lab runs offline in minutes."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

_SHAPES = ("disc", "square", "stripes", "ring")


def synthetic_class_names(num_classes: int) -> list[str]:
    """The generated classes' names: `class_00_disc`, `class_01_square`, ..."""
    return [f"class_{i:02d}_{_SHAPES[i % len(_SHAPES)]}" for i in range(num_classes)]


def synthetic_images(num_classes: int, per_class: int, seed: int) -> tuple[list[bytes], np.ndarray]:
    """Deterministic, learnable JPEGs: the class sets hue, shape and texture; noise varies the rest."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for i in range(num_classes * per_class):
        label = i % num_classes
        h, w = (int(v) for v in rng.integers(72, 129, size=2))
        yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
        cy, cx, r = rng.uniform(0.4, 0.6), rng.uniform(0.4, 0.6), rng.uniform(0.25, 0.38)
        shape = _SHAPES[label % len(_SHAPES)]
        if shape == "disc":
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
        elif shape == "square":
            mask = (abs(yy - cy) < r) & (abs(xx - cx) < r)
        elif shape == "stripes":
            mask = np.sin((xx + yy * (label % 3)) * (10 + label) + rng.uniform(0, 6)) > 0
        else:
            d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
            mask = (d < r) & (d > r * 0.55)
        hue = label / num_classes
        colour = 255 * np.array([_hue_channel(hue + k / 3) for k in range(3)])
        background = rng.uniform(10, 60, size=3)
        img = np.where(mask[..., None], colour, background) + rng.normal(0, 18, size=(h, w, 3))
        images.append(tf.io.encode_jpeg(np.clip(img, 0, 255).astype(np.uint8), quality=90).numpy())
        labels.append(label)
    return images, np.array(labels, np.int32)


def _hue_channel(x: float) -> float:
    return float(np.clip(abs((x % 1.0) * 6 - 3) - 1, 0, 1))
