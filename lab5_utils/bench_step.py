"""`lab5 bench --train-step`: images/s of the real training step (frozen and unfrozen, XLA off and
on) in memory and fed by the input pipeline: whether the device or the pipeline is the limit."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from lab5_utils import speed
from lab5_utils.benchdata import machine_info, write_food_like_folder


def bench_train_step(image_sizes: tuple[int, ...] = (224,), batch_size: int = 64, steps: int = 10,
                     jit: tuple[bool, ...] = (False, True), pipeline_images: int = 256,
                     workdir: str | None = None) -> dict[str, Any]:
    """images/s of the real training step (frozen base and fully unfrozen, XLA off/on) on
    in-memory batches, and the same step fed by the real input pipeline (generated Food-101-like
    JPEGs, XLA off), at each image size: whether the device or the input pipeline is the limit."""
    import tempfile
    from pathlib import Path

    import tensorflow as tf

    from lab5_utils.config import LabConfig
    from lab5_utils.data import load_encoded
    from lab5_utils.model import build_model, freeze_base, gpu_available, unfreeze
    from lab5_utils.pipeline import make_pipeline
    from lab5_utils.recipe import one_hot

    result: dict[str, Any] = {"machine": machine_info(), "accelerator": gpu_available(),
                              "settings": {"batch_size": batch_size, "steps": steps,
                                           "image_sizes": list(image_sizes)}, "sizes": {}}
    with tempfile.TemporaryDirectory(prefix="lab5-stepbench-", dir=workdir) as tmp:
        root = Path(tmp) / "food_like"
        write_food_like_folder(root, pipeline_images)
        for size in image_sizes:
            cfg = LabConfig.preset("full", dataset=f"folder:{root}", weights=None,
                                   image_size=size, batch_size=batch_size, cache_train="")
            train, _, _, info = load_encoded(cfg)
            depth = info.num_classes if one_hot(cfg) else None  # full's recipe, labels alike
            fed = make_pipeline(train, cfg, training=True, num_examples=info.num_train,
                                one_hot_depth=depth)
            rng = np.random.default_rng(0)
            labels = rng.integers(0, info.num_classes, batch_size).astype(np.int32)
            in_memory = tf.data.Dataset.from_tensors((
                rng.integers(0, 256, (batch_size, size, size, 3), dtype=np.uint8),
                np.eye(depth, dtype=np.float32)[labels] if depth else labels)).cache()
            model = build_model(cfg, info.num_classes)
            rows: dict[str, Any] = {}
            for part, mode in (("frozen", "none"), ("unfrozen", "all")):
                unfreeze(model, mode) if mode != "none" else freeze_base(model)
                for on in jit:
                    timing = speed.time_train_step(model, in_memory, batch_size, steps, on, 1,
                                                   cfg=cfg)
                    rows[f"{part}_jit_{str(on).lower()}"] = round(timing.images_per_s, 1)
                fed_timing = speed.time_train_step(model, fed, batch_size, steps, False, 1,
                                                   cfg=cfg)
                rows[f"{part}_pipeline_fed"] = round(fed_timing.images_per_s, 1)
                rows[f"{part}_pipeline_fed_vs_in_memory"] = round(
                    fed_timing.images_per_s / rows[f"{part}_jit_false"], 3)
            result["sizes"][str(size)] = rows
    result["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    return result


def format_train_step(result: dict[str, Any]) -> str:
    """The human-readable table of `lab5 bench --train-step`."""
    m, s = result["machine"], result["settings"]
    device = f"{m['gpus']} GPU(s)" if m["gpus"] else f"CPU only ({m['cores']} cores, {m['cpu_model']})"
    lines = [f"lab5 bench --train-step: EfficientNet-B0 training step, batch {s['batch_size']}, "
             f"{s['steps']} timed steps after an untimed tracing epoch; {device}; "
             f"TensorFlow {m['tensorflow']}, Keras {m['keras']}"]
    for size, rows in result["sizes"].items():
        lines.append(f"  {size} px:")
        for part in ("frozen", "unfrozen"):
            jit = "; ".join(f"XLA {k.rsplit('_', 1)[1]}: {v:.1f} images/s"
                            for k, v in rows.items() if k.startswith(f"{part}_jit_"))
            lines.append(f"    {part:8s} in memory: {jit}; fed by the input pipeline (XLA off): "
                         f"{rows[f'{part}_pipeline_fed']:.1f} images/s "
                         f"(x{rows[f'{part}_pipeline_fed_vs_in_memory']:.2f} of in-memory)")
    return "\n".join(lines)
