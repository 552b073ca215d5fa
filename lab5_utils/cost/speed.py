"""Speed of the real training step: timing it, and choosing XLA and steps_per_execution for a
run by measurement (`choose_speed`, called by `training.run_stage`).

A timing is one `fit` epoch of `steps` batches after a first, untimed epoch that traces (and,
with XLA, compiles) the step: images/s of what training really runs, callbacks and all.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from lab5_utils.config import LEGACY_VALUES, LabConfig

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
                    steps_per_execution: int, learning_rate: float = 1e-4,
                    cfg: LabConfig | None = None) -> StepTiming:
    """Compile `model` (the recipe of `cfg`: optimizer, loss and metrics; None: Adam on integer
    labels) with the given settings and time one epoch of `steps` batches of `batches`
    (repeated) after an untimed tracing epoch. The weights are put back afterwards: the probe
    trains nothing that stays."""
    import keras

    from lab5_utils.model.network import compile_model

    weights = model.get_weights()
    compile_model(model, learning_rate, jit_compile=jit_compile,
                  steps_per_execution=steps_per_execution, cfg=cfg)
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


def tpu_present() -> bool:
    """A TPU is attached."""
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("TPU"))


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


PROBE_BATCHES, PROBE_STEPS = 4, 30  # jit_compile=auto: a few dozen steps on cached batches


def choose_speed(cfg: LabConfig, model: Any, train_ds: Any, num_train: int) -> dict:
    """XLA on or off (`jit_compile=auto`: the faster of both, timed on the stage's real step on
    a GPU/TPU; off on a CPU), steps per execution, and the steps of an epoch (whole batches
    only when XLA is on)."""
    accelerator = accelerator_present()
    steps = math.ceil(num_train / cfg.batch_size)
    spe = resolve_steps_per_execution(cfg.steps_per_execution, accelerator, steps)
    probe: dict = {"setting": cfg.jit_compile}
    if cfg.jit_compile != "auto":
        jit = cfg.jit_compile == "true"
    elif not accelerator:
        jit, probe["reason"] = False, "no GPU or TPU: XLA stays off on a CPU"
    elif cfg.deterministic:  # Keras itself turns XLA off under op determinism (keras#20315)
        jit, probe["reason"] = False, "deterministic=true: Keras trains without XLA"
    elif "train_step" in vars(model):  # `augment.attach`: no XLA kernel for their transforms
        jit, probe["reason"] = False, ("augment_on=device: XLA cannot compile the step's image "
                                       "transforms (rotation, zoom, RandAugment)")
    else:
        sample = train_ds.take(PROBE_BATCHES).cache()
        jit, record = choose_jit(lambda on: time_train_step(
            model, sample, cfg.batch_size, PROBE_STEPS, on, spe, cfg=cfg))
        probe |= record
        print(jit_message(record), flush=True)
    drop = jit and num_train >= cfg.batch_size
    return {"jit_compile": jit, "jit_probe": probe, "steps_per_execution": spe,
            "drop_remainder": drop, "steps_per_epoch": num_train // cfg.batch_size if drop else steps}


def speed_metrics(choice: dict, batch_size: int, num_train: int, metrics: dict) -> dict:
    """The speed settings a run used and the training images/s they gave."""
    images = choice["steps_per_epoch"] * batch_size if choice["drop_remainder"] else num_train
    seconds = metrics.get("seconds_per_epoch")
    return {k: choice[k] for k in ("jit_compile", "jit_probe", "steps_per_execution")} | {
        "train_images_per_s": images / seconds if seconds else None}


# --- where the heavy augmentations run (augment_on) ----------------------------------------
PLACEMENT_PROBE_BATCHES = 3  # timed batches per placement, after one untimed batch


def input_rates(cfg: LabConfig, placements: tuple[str, ...] = ("pipeline", "device"),
                batches: int = PLACEMENT_PROBE_BATCHES) -> dict[str, float]:
    """images/s that `cfg`'s training input delivers with each placement, on generated
    Food-101-like JPEGs at `cfg.image_size` (decoded every time, as without a cache): the
    real `make_pipeline`, followed, for "device", by the training step's augmentation stage
    (`augment.DeviceAugment`) run on this machine's device. Not the model's step."""
    import numpy as np
    import tensorflow as tf

    from lab5_utils.data.augment import DeviceAugment
    from lab5_utils.data.benchdata import SHAPES, food_like_jpeg
    from lab5_utils.data.pipeline import make_pipeline
    from lab5_utils.model.recipe import one_hot

    rng = np.random.default_rng(cfg.seed)
    pool = [food_like_jpeg(rng, *SHAPES[i % len(SHAPES)]) for i in range(8)]
    count = (batches + 1) * cfg.batch_size
    encoded = tf.data.Dataset.from_tensor_slices((pool * -(-count // len(pool)))[:count])
    ds = encoded.map(lambda e: (e, tf.constant(0, tf.int32)))
    depth = 2 if one_hot(cfg) else None
    rates = {}
    for where in placements:
        run_cfg = cfg.replace(augment_on=where, cache_train="", shuffle_buffer=1)
        stage = DeviceAugment(run_cfg) if where == "device" else None
        step = tf.function(stage) if stage is not None else None
        seed = tf.constant([cfg.seed, 0], tf.int64)
        iterator = iter(make_pipeline(ds, run_cfg, True, count, one_hot_depth=depth))
        start = None
        for i, (images, labels) in enumerate(iterator):
            if step is not None:
                images, labels = step(images, labels, seed)
            images.numpy()  # waits for the device
            start = time.perf_counter() if i == 0 else start
        rates[where] = batches * cfg.batch_size / (time.perf_counter() - start)
    return rates


def choose_augment_on(cfg: LabConfig, recorded: dict | None = None,
                      measure: Callable[[LabConfig], dict[str, float]] = input_rates
                      ) -> tuple[LabConfig, dict[str, Any]]:
    """`cfg` with `augment_on` resolved to "pipeline" or "device", and a record of why: the
    run folder's placement when it holds one (`recorded`, its config.json: a resume keeps the
    placement; a file without the field ran in the pipeline); "pipeline" when no heavy
    augmentation is on (nothing to move: any placement gives the same batches, so a run
    folder's value is kept as it is); the setting when it is not "auto"; "pipeline" with
    jit_compile=true or on a TPU (XLA has no kernel for their image transforms; "device" is
    refused there); "device" with a GPU; on a CPU, whichever `measure` finds faster."""
    from lab5_utils.data.augment import heavy

    record: dict[str, Any] = {"setting": cfg.augment_on}
    if not heavy(cfg.augmentations):  # every placement gives the same batches: keep the run's
        chosen = "pipeline" if recorded is None else recorded.get("augment_on", "pipeline")
        record["reason"] = "no augmentation to move: flip and crop stay in the pipeline"
    elif cfg.augment_on == "device" and tpu_present():
        raise ValueError("augment_on='device' is not valid on a TPU: expected 'pipeline' or "
                         "'auto' (a TPU compiles the whole training step with XLA, which has no "
                         "kernel for the image transforms of rotation, zoom and RandAugment).")
    elif cfg.augment_on != "auto":
        chosen, record["reason"] = cfg.augment_on, "as set"
    elif recorded is not None:
        chosen = recorded.get("augment_on", LEGACY_VALUES["augment_on"])
        record["reason"] = "the run folder's placement (a resume keeps it)"
    elif cfg.jit_compile == "true":
        chosen, record["reason"] = "pipeline", "jit_compile=true: XLA cannot compile them"
    elif tpu_present():
        chosen = "pipeline"
        record["reason"] = "a TPU compiles the whole step with XLA, which cannot compile them"
    elif accelerator_present():
        chosen, record["reason"] = "device", "a GPU augments faster than the CPU"
    else:
        record["measured_images_per_s"] = {k: round(v, 1) for k, v in measure(cfg).items()}
        chosen = max(record["measured_images_per_s"], key=record["measured_images_per_s"].get)
        record["reason"] = "measured faster on this CPU"
    record["chosen"] = chosen
    return cfg.replace(augment_on=chosen), record


def augment_on_message(record: dict[str, Any]) -> str:
    """One line: where the heavy augmentations run, and why."""
    rates = record.get("measured_images_per_s")
    measured = (" (" + ", ".join(f"{k} {v:.0f} images/s" for k, v in rates.items()) + ")"
                if rates else "")
    where = ("inside the training step, on the device" if record["chosen"] == "device"
             else "in the tf.data map, on the CPU")
    return (f"[lab5] augment_on={record['setting']}: the training augmentations run {where}; "
            f"{record['reason']}{measured}")
