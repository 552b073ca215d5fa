"""What every benchmark starts from: a description of the machine and generated Food-101-like
JPEGs (512 px on the long side, 40-80 KB), so numbers need no download and compare across machines."""

from __future__ import annotations

import os
import platform
import statistics
from pathlib import Path
from typing import Any

import numpy as np

# Food-101 images have 512 px on the long side; most are landscape 4:3.
SHAPES = ((384, 512), (384, 512), (384, 512), (512, 384), (512, 512), (341, 512))
NUM_CLASSES = 4


# --- machine and data ----------------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    """Cores, CPU model, TensorFlow/Keras versions and the current load average."""
    import keras
    import tensorflow as tf

    model = platform.processor() or "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines()
                 if ln.startswith("model name")]
        model = names[0] if names else model
    return {
        "cpu_model": model,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "gpus": len(tf.config.list_physical_devices("GPU")),
        # TF_CPU_ALLOCATOR_USE_BFC=true (set before TensorFlow starts) pools CPU memory
        "cpu_allocator": "bfc" if os.environ.get("TF_CPU_ALLOCATOR_USE_BFC", "").lower()
        in ("1", "true") else "default",
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def food_like_jpeg(rng: np.random.Generator, height: int, width: int) -> bytes:
    """A photo-like JPEG: a smooth colour field, mid-scale blobs, an oriented texture and noise."""
    import tensorflow as tf

    def upsampled(shape: tuple[int, ...], spread: float, method: str) -> np.ndarray:
        small = rng.normal(0, spread, size=(1, *shape, 3)).astype(np.float32)
        return tf.image.resize(small, [height, width], method=method)[0].numpy()

    image = 128 + upsampled((4, 5), 60, "bicubic") + upsampled((height // 16, width // 16), 28,
                                                               "bilinear")
    fy, fx = rng.uniform(0.05, 0.35, size=2)
    stripes = np.outer(np.sin(fy * np.arange(height)), np.sin(fx * np.arange(width) + rng.uniform(0, 6)))
    image += (14 * stripes)[..., None] * rng.uniform(0.3, 1.0, size=3).astype(np.float32)
    image += rng.standard_normal((height, width, 3), dtype=np.float32) * 5.5
    pixels = np.clip(image, 0, 255).astype(np.uint8)
    return tf.io.encode_jpeg(pixels, quality=90).numpy()


def write_food_like_folder(root: Path, count: int, seed: int = 0) -> dict[str, Any]:
    """`root/train/<class>/*.jpg` with `count` images, and `root/validation` and `root/test` ->
    the same files, so every split of a `folder:` dataset holds all of them (a benchmark
    measures speed, not accuracy). Returns file size statistics."""
    rng = np.random.default_rng(seed)
    sizes = []
    for i in range(count):
        folder = root / "train" / f"class_{i % NUM_CLASSES}"
        folder.mkdir(parents=True, exist_ok=True)
        data = food_like_jpeg(rng, *SHAPES[i % len(SHAPES)])
        (folder / f"{i:05d}.jpg").write_bytes(data)
        sizes.append(len(data) / 1024)
    for split in ("validation", "test"):
        (root / split).symlink_to("train", target_is_directory=True)
    return {"count": count, "kb_min": round(min(sizes), 1),
            "kb_median": round(statistics.median(sizes), 1), "kb_max": round(max(sizes), 1),
            "shapes": sorted({f"{w}x{h}" for h, w in SHAPES})}
