"""What a run is about to cost, said before it starts: the hardware found, the seconds a training
and a validation step take (timed on a few batches after tracing, on the stage's model at the
run's image and batch size), the images/s the real training input pipeline delivers (a few
batches of generated Food-101-like JPEGs), and the time per epoch and per stage that follows
from the slower of the two.

`quick` and `full` on a machine without a GPU stop here with a warning that says how to switch
Colab's runtime type, unless `allow_cpu` is given: nothing starts a multi-day CPU run silently.
The step is timed on random uint8 batches (with the heavy augmentations inside it when
`augment_on` puts them there), the pipeline apart from it; Food-101's download is not timed
(the text says so).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field

from lab5_utils.config import LabConfig
from lab5_utils.i18n import N_, _, num

HEAVY_PRESETS = ("quick", "full")  # the presets that need a GPU
STAGES = ("transfer", "finetune")
FOOD101_TRAIN, FOOD101_CLASSES = 75_750, 101  # tfds `train`: 750 images a class
SWITCH_RUNTIME = N_("On Colab: Runtime > Change runtime type > Hardware accelerator: a GPU (T4 is "
                    "in the free tier) > Save, then Run all again (with drive_dir on, finished "
                    "runs and epochs are kept on Drive).")


class CPURunRefused(RuntimeError):
    """`quick`/`full` asked for on a machine without a GPU, without `allow_cpu`."""


@dataclass
class Hardware:
    gpus: list[str] = field(default_factory=list)
    cpu_cores: int = 1
    on_colab: bool = False

    @property
    def has_gpu(self) -> bool:
        return bool(self.gpus)

    def describe(self) -> str:
        where = " (Colab)" if self.on_colab else ""
        if self.gpus:
            return _("GPU: {gpus}{where}; {cores} CPU cores for the input pipeline").format(
                gpus=", ".join(self.gpus), where=where, cores=self.cpu_cores)
        return _("CPU only, {cores} cores, no GPU{where}").format(cores=self.cpu_cores, where=where)


@dataclass
class Timing:
    """Seconds a step takes, per stage, at `batch_size` (after tracing), and tracing time."""

    train_step: dict[str, float]
    val_step: float
    trace: dict[str, float]
    steps: int
    batch_size: int
    input_images_per_s: float | None = None  # the training input pipeline, None: not timed
    augment_on: str = "pipeline"  # where the heavy augmentations ran


@dataclass
class StageEstimate:
    stage: str
    epochs: int
    train_steps: int  # an epoch
    val_steps: int
    seconds_per_epoch: float
    seconds: float  # the stage: tracing + every epoch
    bound: str = "step"  # "step" or "input": which of the two sets an epoch's time


def detect_hardware() -> Hardware:
    import tensorflow as tf

    from lab5_utils.hosts.colab import on_colab

    names = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        names.append(details.get("device_name", gpu.name))
    return Hardware(names, os.cpu_count() or 1, on_colab())


def split_sizes(cfg: LabConfig) -> tuple[int, int, int]:
    """(training images, validation images, classes) of `cfg`'s data, without reading Food-101
    (its sizes follow from `validation_split` and `train_fraction`, as `splits.food101_splits`)."""
    if cfg.dataset == "food101" or cfg.dataset.startswith("tfds:"):
        width = min(50, max(1, round(100 * cfg.validation_split)))
        val = FOOD101_TRAIN * width // 100
        train = (FOOD101_CLASSES * max(1, round(cfg.train_fraction * 750))
                 if cfg.train_fraction < 1.0 else FOOD101_TRAIN - val)
        return train, val, FOOD101_CLASSES
    if cfg.dataset == "synthetic":
        return (cfg.num_classes * cfg.synthetic_train_per_class,
                cfg.num_classes * cfg.synthetic_val_per_class, cfg.num_classes)
    from lab5_utils.data.splits import load_encoded

    info = load_encoded(cfg).info
    return info.num_train, info.num_val, info.num_classes


# --- the arithmetic -----------------------------------------------------------------------------
def estimate_stage(cfg: LabConfig, stage: str, timing: Timing, num_train: int,
                   num_val: int) -> StageEstimate:
    """Steps of an epoch times the measured seconds a step, or the epoch's images at the input
    pipeline's images/s when that takes longer (`bound` says which), validation included; the
    stage adds its epochs and the tracing of its first step."""
    epochs = cfg.transfer_epochs if stage == "transfer" else cfg.finetune_epochs
    train_steps = math.ceil(num_train / cfg.batch_size)
    val_steps = math.ceil(num_val / cfg.batch_size)
    stepping = train_steps * timing.train_step[stage]
    feeding = num_train / timing.input_images_per_s if timing.input_images_per_s else 0.0
    per_epoch = max(stepping, feeding) + val_steps * timing.val_step
    return StageEstimate(stage, epochs, train_steps, val_steps, per_epoch,
                         timing.trace.get(stage, 0.0) + epochs * per_epoch,
                         "input" if feeding > stepping else "step")


def bound_text(input_images_per_s: float, step_seconds: float, batch_size: int) -> str:
    """Which side bounds an epoch: "input-bound: the CPU delivers N images/s, the step takes
    M" or "step-bound: ...", with both numbers."""
    step_rate = batch_size / step_seconds
    step = f"the step takes {step_seconds:.3g} s a batch of {batch_size} ({step_rate:.0f} images/s)"
    cpu = f"the CPU delivers {input_images_per_s:.0f} images/s"
    return f"input-bound: {cpu}, {step}" if input_images_per_s < step_rate else (
        f"step-bound: {step}, {cpu}")


def duration(seconds: float) -> str:
    """`40 s`, `12 min`, `3.4 h`, `2.1 days`."""
    if seconds < 90:
        return _("{n} s").format(n=num(seconds, ".0f"))
    if seconds < 90 * 60:
        return _("{n} min").format(n=num(seconds / 60, ".0f"))
    if seconds < 48 * 3600:
        return _("{n} h").format(n=num(seconds / 3600, ".1f"))
    return _("{n} days").format(n=num(seconds / 86400, ".1f"))


def estimate_text(cfg: LabConfig, hardware: Hardware, timing: Timing,
                  estimates: Sequence[StageEstimate], finetune_runs: int = 1) -> str:
    """The lines printed before training: hardware, the measurement, each stage's estimate and,
    for more than one stage, the total (`finetune_runs` fine-tuning runs, e.g. a sweep)."""
    lines = [f"[lab5] hardware: {hardware.describe()}",
             f"[lab5] timed {timing.steps} batch{'es' * (timing.steps != 1)} of "
             f"{timing.batch_size} at {cfg.image_size} px "
             f"after tracing: " + ", ".join(
                 [f"{s} {timing.train_step[s]:.3f} s a training step" for s in timing.train_step]
                 + [f"validation {timing.val_step:.3f} s a step"])]
    rate = timing.input_images_per_s
    if rate:
        lines.append(f"[lab5] the training input pipeline (augment_on={timing.augment_on}) "
                     f"delivers {rate:.0f} images/s on this machine's CPU")
    for e in estimates:
        what = "frozen base" if e.stage == "transfer" else f"unfreeze={cfg.unfreeze}"
        bound = f" ({bound_text(rate, timing.train_step[e.stage], timing.batch_size)})" if (
            rate) else ""
        lines.append(f"[lab5] {e.stage} ({what}): {e.train_steps} training + {e.val_steps} "
                     f"validation steps = about {duration(e.seconds_per_epoch)} an epoch"
                     f"{bound}; {e.epochs} epochs = about {duration(e.seconds)}")
    stages = {e.stage for e in estimates}
    if len(estimates) > 1 or ("finetune" in stages and finetune_runs > 1):
        parts = ["transfer"] * ("transfer" in stages) + [
            f"{finetune_runs} fine-tuning run{'s' * (finetune_runs != 1)}"] * ("finetune" in stages)
        lines.append(f"[lab5] in all ({' + '.join(parts)}): about "
                     f"{duration(total_seconds(estimates, finetune_runs))}")
    lines.append("[lab5] not timed: Food-101's download (about 5 GB, once per runtime unless "
                 "kept on Drive)" + ("" if rate else " and the input pipeline"))
    return "\n".join(lines)


def total_seconds(estimates: Sequence[StageEstimate], finetune_runs: int = 1) -> float:
    return sum(e.seconds * (finetune_runs if e.stage == "finetune" else 1) for e in estimates)


def cpu_warning(cfg: LabConfig, hardware: Hardware, seconds: float | None) -> str:
    """The warning for `quick`/`full` without a GPU: what it would cost, how to get a GPU, how
    to go on anyway."""
    cost = (_("the `{preset}` preset would take about {time} here").format(
        preset=cfg.preset_name, time=duration(seconds)) if seconds is not None else
        _("the `{preset}` preset would take days here").format(preset=cfg.preset_name))
    return _("WARNING:") + " " + (
        _("no GPU found on this Colab runtime ({cores} CPU cores): {cost}.") if hardware.on_colab
        else _("no GPU found ({cores} CPU cores): {cost}.")).format(
        cores=hardware.cpu_cores, cost=cost) + " " + _(SWITCH_RUNTIME) + " " + _(
        "To train on this CPU anyway, set allow_cpu = True in the notebook's parameters cell "
        "(lab5 train / lab5 report: --allow-cpu).")


# --- the measurement ------------------------------------------------------------------------
def measure(cfg: LabConfig, stages: Iterable[str] = STAGES, steps: int = 5,
            num_classes: int | None = None) -> Timing:
    """Time `steps` training steps of each stage's model (transfer: base frozen; finetune:
    unfrozen as `cfg.unfreeze` says) after one traced step, and `steps` validation steps, on
    random batches of the run's shape. Random weights: the compute does not depend on them,
    and nothing is downloaded."""
    import keras
    import numpy as np
    import tensorflow as tf

    from lab5_utils.cost.speed import input_rates
    from lab5_utils.data.augment import attach, placement
    from lab5_utils.model import network
    from lab5_utils.model.recipe import one_hot
    from lab5_utils.seeding import seed_run

    seed_run(cfg)  # op determinism as the run will have it: on a GPU it changes the speed
    classes = num_classes or split_sizes(cfg)[2]
    size, batch = cfg.image_size, cfg.batch_size
    rng = np.random.default_rng(cfg.seed)
    x = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    y = (np.arange(batch) % classes).astype(np.int32)
    if one_hot(cfg):
        y = np.eye(classes, dtype=np.float32)[y]
    data = tf.data.Dataset.from_tensors((x, y)).repeat()
    train, trace, val = {}, {}, None
    for stage in stages:
        net = network.build_model(cfg.replace(weights=None), classes)
        net = network.freeze_base(net) if stage == "transfer" else network.unfreeze(net, cfg.unfreeze)
        # the heavy augmentations, when they run in the step: XLA cannot compile them
        augmented = attach(net, cfg) is not None
        # a bool for true/false (the string 'false' would switch XLA on); 'auto': Keras decides
        network.compile_model(net, 1e-6, jit_compile=False if augmented else {
            "true": True, "false": False}.get(cfg.jit_compile, "auto"), cfg=cfg)
        clock = _step_clock("train")
        net.fit(data, steps_per_epoch=steps + 1, epochs=1, verbose=0, callbacks=[clock])
        trace[stage], train[stage] = clock.first, clock.per_step
        if val is None:
            clock = _step_clock("test")
            net.evaluate(data, steps=steps + 1, verbose=0, callbacks=[clock])
            val = clock.per_step
        del net
        keras.backend.clear_session()
    where = placement(cfg)
    rate = input_rates(cfg, (where,), batches=max(2, steps))[where]
    return Timing(train, val or 0.0, trace, steps, batch, round(rate, 1), where)


def _step_clock(mode: str):
    """A Keras callback for `mode` "train" or "test": `.first`, the time to the end of the first
    (traced) batch, and `.per_step`, the seconds a batch after it. Reading the loss waits for
    the device, so each time is the step's, not only its dispatch's."""
    import keras

    class StepClock(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.start, self.ends = 0.0, []

        def begin(self, batch, logs=None) -> None:
            if batch == 0:
                self.start = time.perf_counter()

        def end(self, batch, logs=None) -> None:
            float((logs or {}).get("loss", 0.0))
            self.ends.append(time.perf_counter())

        @property
        def first(self) -> float:
            return self.ends[0] - self.start

        @property
        def per_step(self) -> float:
            return (self.ends[-1] - self.ends[0]) / max(1, len(self.ends) - 1)

    clock = StepClock()
    setattr(clock, f"on_{mode}_batch_begin", clock.begin)
    setattr(clock, f"on_{mode}_batch_end", clock.end)
    return clock


def measure_in_subprocess(cfg: LabConfig, settings: Sequence[str], stages: Iterable[str] = STAGES,
                          steps: int = 5) -> tuple[Hardware, Timing]:
    """`detect_hardware` and `measure` in a child process (`lab5 report`: the sweep's kernels
    then get the whole GPU; TensorFlow keeps GPU memory until its process ends)."""
    command = [sys.executable, "-m", "lab5_utils.cost.estimate", "--preset", cfg.preset_name,
               "--steps", str(steps), "--stages", *stages]
    command += [arg for setting in settings for arg in ("--set", setting)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    sys.stderr.write(done.stderr)  # `lab5` sorts it: TensorFlow's log lines go to the log file
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"the time estimate failed: {tail}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return Hardware(**result["hardware"]), Timing(**result["timing"])


# --- before training --------------------------------------------------------------------------
def preflight(cfg: LabConfig, stages: str | Sequence[str] = STAGES, allow_cpu: bool = False,
              steps: int = 5, finetune_runs: int = 1, settings: Sequence[str] | None = None,
              measure_fn: Callable[..., tuple[Hardware, Timing]] | None = None,
              hardware: Hardware | None = None, echo: Callable[[str], None] | None = None,
              ) -> list[StageEstimate]:
    """Before training `quick` or `full`: print the hardware, time `steps` batches per stage
    and print the estimate per epoch and per stage; without a GPU print the warning and raise
    `CPURunRefused` unless `allow_cpu`. `steps=0` skips the timing (hardware and GPU check
    only). `settings` given: measure in a child process (see `measure_in_subprocess`).
    Other presets (the demo) return at once."""
    if cfg.preset_name not in HEAVY_PRESETS:
        return []
    echo = echo or (lambda text: print(text, flush=True))
    stages = [stages] if isinstance(stages, str) else list(stages)
    estimates: list[StageEstimate] = []
    if steps > 0:
        if measure_fn is None:
            if settings is not None:
                measure_fn = lambda c, s, n: measure_in_subprocess(c, settings, s, n)  # noqa: E731
            else:
                measure_fn = _measure_here
        echo(f"[lab5] estimating the time of {', '.join(stages)}: timing a few batches per "
             "stage after tracing (tracing takes a while)")
        hardware, timing = measure_fn(cfg, stages, steps)
        num_train, num_val, _num_test = split_sizes(cfg)
        estimates = [estimate_stage(cfg, s, timing, num_train, num_val) for s in stages]
        echo(estimate_text(cfg, hardware, timing, estimates, finetune_runs))
    else:
        hardware = hardware or detect_hardware()
        echo(f"[lab5] hardware: {hardware.describe()}")
    if not hardware.has_gpu:
        warning = cpu_warning(cfg, hardware, total_seconds(estimates, finetune_runs)
                              if estimates else None)
        echo(warning)
        if not allow_cpu:
            raise CPURunRefused(warning.removeprefix(_("WARNING:") + " ") + " "
                                + _("Nothing was started."))
        echo("[lab5] " + _("allow_cpu is set: training on the CPU as asked"))
    return estimates


def _measure_here(cfg: LabConfig, stages: Sequence[str], steps: int) -> tuple[Hardware, Timing]:
    hardware = detect_hardware()
    return hardware, measure(cfg, stages, steps if hardware.has_gpu else min(steps, 2))


def main(argv: list[str] | None = None) -> int:
    """The child process of `measure_in_subprocess`: one JSON line {hardware, timing}."""
    import argparse

    from lab5_utils.config import add_settings_arguments

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = argparse.ArgumentParser(prog="python -m lab5_utils.cost.estimate")
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    add_settings_arguments(parser)
    args = parser.parse_args(argv)
    cfg = LabConfig.preset(args.preset).with_settings(args.settings)
    hardware = detect_hardware()
    timing = measure(cfg, args.stages, args.steps if hardware.has_gpu else min(args.steps, 2))
    print(json.dumps({"hardware": asdict(hardware), "timing": asdict(timing)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
