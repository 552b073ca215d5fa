"""Speed of the real training step: timing it, choosing XLA and steps_per_execution by
measurement, and `lab5 bench --train-step`.

A timing is one `fit` epoch of `steps` batches after a first, untimed epoch that traces (and,
with XLA, compiles) the step: images/s of what training really runs, callbacks and all.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

# Keras calls back into Python after every execution: on a fast device a step of a few ms
# would pay that overhead each time, so `auto` runs this many steps per call there.
ACCELERATOR_STEPS_PER_EXECUTION = 32


@dataclass
class StepTiming:
    """images/s of the training step with one setting."""

    jit_compile: bool
    steps_per_execution: int
    images_per_s: float
    seconds: float  # the timed epoch
    steps: int


def time_train_step(model: Any, batches: Any, batch_size: int, steps: int, jit_compile: bool,
                    steps_per_execution: int, learning_rate: float = 1e-4) -> StepTiming:
    """Compile `model` (Adam, the lab's loss and metrics) with the given settings and time one
    epoch of `steps` batches of `batches` (repeated) after an untimed tracing epoch. The
    weights are put back afterwards: the probe trains nothing that stays."""
    import keras

    from lab5_utils.model import compile_model

    weights = model.get_weights()
    compile_model(model, learning_rate, jit_compile=jit_compile,
                  steps_per_execution=steps_per_execution)
    seconds: list[float] = []

    class _Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            seconds.append(time.perf_counter() - self.start)

    model.fit(batches.repeat(), steps_per_epoch=steps, epochs=2, verbose=0, shuffle=False,
              callbacks=[_Clock()])
    model.set_weights(weights)
    wall = seconds[-1]
    return StepTiming(jit_compile, steps_per_execution, steps * batch_size / wall, wall, steps)


def choose_jit(measure: Callable[[bool], StepTiming]) -> tuple[bool, dict[str, Any]]:
    """Time the step without and with XLA (`measure(jit_compile)`) and keep the faster; the
    record holds both timings and the choice, for metrics.json and the message."""
    timings = {jit: measure(jit) for jit in (False, True)}
    chosen = max(timings, key=lambda jit: timings[jit].images_per_s)
    record = {"chosen": chosen, "measured": {f"jit_{str(j).lower()}": asdict(t)
                                             for j, t in timings.items()}}
    return chosen, record


def jit_message(record: dict[str, Any]) -> str:
    """One line saying what the XLA probe measured and kept."""
    off, on = (record["measured"][k]["images_per_s"] for k in ("jit_false", "jit_true"))
    return (f"[lab5] jit_compile=auto: the training step ran at {off:.0f} images/s without XLA "
            f"and {on:.0f} with it; training uses jit_compile={str(record['chosen']).lower()}")


def accelerator_present() -> bool:
    """A GPU or a TPU is attached."""
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU") or tf.config.list_logical_devices("TPU"))


def resolve_steps_per_execution(setting: int | str, accelerator: bool, steps_per_epoch: int) -> int:
    """`auto`: 1 on a CPU (a step takes long there), else up to ACCELERATOR_STEPS_PER_EXECUTION
    (never more than an epoch's steps); a number is used as given."""
    if setting != "auto":
        return int(setting)
    return min(ACCELERATOR_STEPS_PER_EXECUTION, max(1, steps_per_epoch)) if accelerator else 1


# --- lab5 bench --train-step ---------------------------------------------------------------
def bench_train_step(image_sizes: tuple[int, ...] = (224,), batch_size: int = 64, steps: int = 10,
                     jit: tuple[bool, ...] = (False, True), pipeline_images: int = 256,
                     workdir: str | None = None) -> dict[str, Any]:
    """images/s of the real training step (frozen base and fully unfrozen, XLA off/on) on
    in-memory batches, and the same step fed by the real input pipeline (generated Food-101-like
    JPEGs, XLA off), at each image size: whether the device or the input pipeline is the limit."""
    import tempfile
    from pathlib import Path

    import tensorflow as tf

    from lab5_utils.bench import machine_info, write_food_like_folder
    from lab5_utils.config import LabConfig
    from lab5_utils.data import load_encoded
    from lab5_utils.model import build_model, freeze_base, gpu_available, unfreeze
    from lab5_utils.pipeline import make_pipeline

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
            fed = make_pipeline(train, cfg, training=True, num_examples=info.num_train)
            rng = np.random.default_rng(0)
            in_memory = tf.data.Dataset.from_tensors((
                rng.integers(0, 256, (batch_size, size, size, 3), dtype=np.uint8),
                rng.integers(0, info.num_classes, batch_size).astype(np.int32))).cache()
            model = build_model(cfg, info.num_classes)
            rows: dict[str, Any] = {}
            for part, mode in (("frozen", "none"), ("unfrozen", "all")):
                unfreeze(model, mode) if mode != "none" else freeze_base(model)
                for on in jit:
                    timing = time_train_step(model, in_memory, batch_size, steps, on, 1)
                    rows[f"{part}_jit_{str(on).lower()}"] = round(timing.images_per_s, 1)
                fed_timing = time_train_step(model, fed, batch_size, steps, False, 1)
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
