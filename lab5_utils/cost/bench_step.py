"""`lab5 bench --train-step`: images/s of the real training step (frozen and unfrozen, XLA off and
on) in memory and fed by the input pipeline: whether the device or the pipeline is the limit;
the frozen step with full's heavy augmentations inside it (`augment_on=device`: what they cost
there); and, on a GPU/TPU, each part's step with op determinism on (what `deterministic` costs).

On a GPU/TPU the defaults are the real step (224 px, batch 64), XLA off and on. A CPU runs that
step at a few images/s and compiles it with XLA for minutes (training never uses XLA there:
`jit_compile=auto` keeps it off), so without an accelerator the defaults shrink to sizes that
finish in about a minute on 2 cores, XLA left out (`CPU_DEFAULTS`); explicit options always win.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from lab5_utils import seeding
from lab5_utils.cost import speed
from lab5_utils.data.benchdata import machine_info, write_food_like_folder
from lab5_utils.tables import clock

# The real step of presets quick and full.
ACCELERATOR_DEFAULTS = {"image_sizes": (224,), "batch_size": 64, "steps": 10, "pipeline_images": 512,
                        "jit": "both"}
# Chosen by measuring on 2 cores (README, Performance): 224 px / batch 64 with XLA ran for more
# than 13 minutes; at 64 px XLA's two compilations alone took 1-1.5 minutes.
CPU_DEFAULTS = {"image_sizes": (64,), "batch_size": 16, "steps": 10, "pipeline_images": 64,
                "jit": "off"}
JIT_CHOICES = {"off": (False,), "on": (True,), "both": (False, True)}
PARTS = (("frozen", "none"), ("unfrozen", "all"))


def train_step_settings(accelerator: bool, image_sizes: tuple[int, ...] | None = None,
                        batch_size: int | None = None, steps: int | None = None,
                        pipeline_images: int | None = None, jit: str | None = None
                        ) -> dict[str, Any]:
    """The sizes to measure: those given, the others from the defaults of this hardware
    (`ACCELERATOR_DEFAULTS` with a GPU/TPU, `CPU_DEFAULTS` without)."""
    small = [size for size in image_sizes or () if size < 32]
    if small:
        raise ValueError(f"--step-sizes {small[0]} is not valid: expected image sizes >= 32 "
                         "(EfficientNet's minimum).")
    if jit is not None and jit not in JIT_CHOICES:
        raise ValueError(f"--jit {jit!r} is not valid: expected one of {', '.join(JIT_CHOICES)}.")
    defaults = ACCELERATOR_DEFAULTS if accelerator else CPU_DEFAULTS
    given = {"image_sizes": tuple(dict.fromkeys(image_sizes)) if image_sizes else None,
             "batch_size": batch_size, "steps": steps, "pipeline_images": pipeline_images,
             "jit": jit}
    settings = {k: defaults[k] if v is None else v for k, v in given.items()}
    settings["image_sizes"] = list(settings["image_sizes"])
    settings["pipeline_images"] = max(settings["pipeline_images"], 2 * settings["batch_size"])
    settings["defaults"] = "accelerator" if accelerator else "cpu"
    settings["defaulted"] = sorted(k for k, v in given.items() if v is None)
    return settings


def settings_text(settings: dict[str, Any]) -> str:
    """One sentence: the sizes measured and where they come from."""
    sizes = " and ".join(f"{s} px" for s in settings["image_sizes"])
    xla = {"off": "XLA off", "on": "XLA on", "both": "XLA off and on"}[settings["jit"]]
    text = f"{sizes}, batch {settings['batch_size']}, {settings['steps']} timed steps, {xla}"
    if settings["defaults"] == "cpu" and settings["defaulted"]:
        real = ACCELERATOR_DEFAULTS
        text += (f" (no GPU/TPU found: CPU-sized defaults for {', '.join(settings['defaulted'])}; "
                 f"on a GPU/TPU the defaults are the real step, {real['image_sizes'][0]} px, batch "
                 f"{real['batch_size']}, {real['steps']} steps, XLA off and on; --step-sizes, "
                 "--batch-size, --steps and --jit override them)")
    return text


def bench_train_step(image_sizes: tuple[int, ...] | None = None, batch_size: int | None = None,
                     steps: int | None = None, jit: str | None = None,
                     pipeline_images: int | None = None, workdir: str | None = None,
                     log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """images/s of the real training step (frozen base and fully unfrozen; XLA off, on or both
    as `jit` says) on in-memory batches, and the same step fed by the real input pipeline
    (generated Food-101-like JPEGs, XLA off), at each image size. `None` settings take this
    hardware's defaults (`train_step_settings`). `log` gets one line per measurement as it
    finishes (default: stderr). A measurement that raises is recorded in `errors` (its figure
    None) and the others go on."""
    import tempfile
    from pathlib import Path

    from lab5_utils.config import LabConfig

    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    accelerator = speed.accelerator_present()
    settings = train_step_settings(accelerator, image_sizes, batch_size, steps, pipeline_images,
                                   jit)
    # full's recipe; deterministic=False: Keras trains without XLA under op determinism
    configs = {size: LabConfig.preset("full", weights=None, image_size=size, cache_train="",
                                      batch_size=settings["batch_size"], deterministic=False)
               for size in settings["image_sizes"]}  # a bad size stops here, before any work
    seeding.seed_run(configs[settings["image_sizes"][0]])  # op determinism off, if a run set it
    result: dict[str, Any] = {"machine": machine_info(), "accelerator": accelerator,
                              "settings": settings, "sizes": {}, "errors": {}}
    start = time.perf_counter()
    log(f"[bench] training step: {settings_text(settings)}")
    with tempfile.TemporaryDirectory(prefix="lab5-stepbench-", dir=workdir) as tmp:
        root = Path(tmp) / "food_like"
        write_food_like_folder(root, settings["pipeline_images"])
        for size, cfg in configs.items():
            rows = _measure_size(cfg.replace(dataset=f"folder:{root}"), settings["steps"],
                                 JIT_CHOICES[settings["jit"]],
                                 result["errors"], lambda text: log(
                                     f"[bench {clock(time.perf_counter() - start)}] {text}"))
            result["sizes"][str(size)] = rows
    result["seconds"] = round(time.perf_counter() - start, 1)
    result["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    return result


def _measure_size(cfg, steps: int, jit: tuple[bool, ...], errors: dict[str, str],
                  log: Callable[[str], None]) -> dict[str, Any]:
    """Every measurement at one image size; failures go to `errors`, keyed `<size>/<variant>`."""
    import tensorflow as tf

    from lab5_utils.data.pipeline import make_pipeline
    from lab5_utils.data.splits import load_encoded
    from lab5_utils.model.network import build_model, freeze_base, unfreeze
    from lab5_utils.model.recipe import one_hot

    size, batch = cfg.image_size, cfg.batch_size
    # (part, unfreeze mode, XLA, in memory, kind): kind "" plain, "augment": with the heavy
    # augmentations in the step, "deterministic": with op determinism (on a GPU/TPU only)
    accelerator = speed.accelerator_present()
    variants = [v for part, mode in PARTS for v in
                [(part, mode, on, True, "") for on in jit] + [(part, mode, False, False, "")]
                + [(part, mode, False, True, "deterministic")] * accelerator]
    variants.insert(len(jit) + 1, ("frozen", "none", False, True, "augment"))
    names = [_variant_name(part, on, in_memory, kind) for part, _, on, in_memory, kind in variants]
    rows: dict[str, Any] = dict.fromkeys(names)
    try:
        train, _, _, info = load_encoded(cfg)
        depth = info.num_classes if one_hot(cfg) else None  # the recipe's labels, alike in both
        fed = make_pipeline(train, cfg, training=True, num_examples=info.num_train,
                            one_hot_depth=depth)
        rng = np.random.default_rng(0)
        labels = rng.integers(0, info.num_classes, batch).astype(np.int32)
        in_memory = tf.data.Dataset.from_tensors((
            rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8),
            np.eye(depth, dtype=np.float32)[labels] if depth else labels)).cache()
        model = build_model(cfg, info.num_classes)
    except Exception as err:  # every measurement of this size fails the same way
        for name in names:
            errors[f"{size}/{name}"] = _error(err)
        log(f"{size} px: FAILED before any measurement: {_error(err)}")
        return _with_ratios(rows)
    for (part, mode, on, memory, kind), name in zip(variants, names):
        label = (f"{size} px, {part} base, XLA {'on' if on else 'off'}, "
                 f"{'in memory' if memory else 'fed by the input pipeline'}"
                 + {"": "", "augment": ", RandAugment in the step",
                    "deterministic": ", op determinism on"}[kind])
        began = time.perf_counter()
        try:
            freeze_base(model) if mode == "none" else unfreeze(model, mode)
            with _variant(model, cfg, kind):
                timing = speed.time_train_step(model, in_memory if memory else fed, batch, steps,
                                               on, 1, cfg=cfg)
            rows[name] = round(timing.images_per_s, 1)
            log(f"{label}: {rows[name]:.1f} images/s ({time.perf_counter() - began:.0f} s with "
                "tracing)")
        except Exception as err:  # noted; the other measurements go on
            errors[f"{size}/{name}"] = _error(err)
            log(f"{label}: FAILED: {_error(err)}")
    return _with_ratios(rows)


def _variant_name(part: str, jit: bool, in_memory: bool, kind: str = "") -> str:
    if kind:
        return f"{part}_{'device_augment' if kind == 'augment' else kind}"
    return f"{part}_jit_{str(jit).lower()}" if in_memory else f"{part}_pipeline_fed"


@contextlib.contextmanager
def _variant(model, cfg, kind: str):
    """The step as `kind` says: with the heavy augmentations attached, or op determinism on;
    put back afterwards."""
    from tensorflow.python.framework import config as tf_config

    from lab5_utils.data.augment import attach, detach
    from lab5_utils.seeding import op_determinism_enabled

    was = op_determinism_enabled()
    if kind == "augment":
        attach(model, cfg.replace(augment_on="device"))
    elif kind == "deterministic":
        tf_config.enable_op_determinism()
    try:
        yield
    finally:
        detach(model)
        (tf_config.enable_op_determinism if was else tf_config.disable_op_determinism)()


def _with_ratios(rows: dict[str, Any]) -> dict[str, Any]:
    """Each part's pipeline-fed, augmented and deterministic rates over its in-memory rate (XLA
    off), where both were measured."""
    out: dict[str, Any] = {}
    for part, _ in PARTS:
        memory = rows.get(f"{part}_jit_false")
        out |= {k: v for k, v in rows.items() if k.startswith(f"{part}_")}
        for name in ("pipeline_fed", "device_augment", "deterministic"):
            if f"{part}_{name}" in rows:
                other = rows[f"{part}_{name}"]
                out[f"{part}_{name}_vs_in_memory"] = (round(other / memory, 3) if other and memory
                                                      else None)
    return out


def _error(err: BaseException) -> str:
    message = str(err).strip().splitlines()
    return f"{type(err).__name__}: {message[0] if message else ''}".rstrip(": ")


def format_train_step(result: dict[str, Any]) -> str:
    """The human-readable table of `lab5 bench --train-step`."""
    m, s = result["machine"], result["settings"]
    device = f"{m['gpus']} GPU(s)" if m["gpus"] else f"CPU only ({m['cores']} cores, {m['cpu_model']})"
    lines = [f"lab5 bench --train-step: EfficientNet-B0 training step, {settings_text(s)}, each "
             f"after an untimed tracing epoch; {device}; TensorFlow {m['tensorflow']}, Keras "
             f"{m['keras']}"]

    def rate(value: float | None) -> str:
        return "FAILED" if value is None else f"{value:.1f} images/s"

    for size, rows in result["sizes"].items():
        lines.append(f"  {size} px:")
        for part, _ in PARTS:
            jit = "; ".join(f"XLA {k.rsplit('_', 1)[1]}: {rate(v)}"
                            for k, v in rows.items() if k.startswith(f"{part}_jit_"))
            ratio = rows[f"{part}_pipeline_fed_vs_in_memory"]
            lines.append(f"    {part:8s} in memory: {jit}; fed by the input pipeline (XLA off): "
                         f"{rate(rows[f'{part}_pipeline_fed'])}"
                         + (f" (x{ratio:.2f} of in-memory)" if ratio is not None else ""))
            for name, label in (("device_augment", "with full's RandAugment in the step"),
                                ("deterministic", "with op determinism on")):
                if f"{part}_{name}" in rows:
                    ratio = rows[f"{part}_{name}_vs_in_memory"]
                    lines.append(f"    {'':8s} in memory, XLA off, {label}: "
                                 f"{rate(rows[f'{part}_{name}'])}"
                                 + (f" (x{ratio:.2f} of without)" if ratio is not None else ""))
    for name, error in result.get("errors", {}).items():
        lines.append(f"  FAILED {name}: {error}")
    return "\n".join(lines)
