"""`lab5 bench`: input-pipeline images/s against a plain pipeline, `fit` against in-memory data,
and quick's training input in each augmentation placement (`bench_augment`).

Everything runs on generated Food-101-like JPEGs (512 px on the long side, 40-80 KB) in a
temporary folder, so the numbers need no download and are comparable from machine to machine.
Throughput figures are medians over `--repeats` rounds that run every variant back to back in one
process; ratios are medians of each round's ratio, so a slow spell of a shared machine mostly
cancels out. The load average and CPU time per image are reported with them.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from lab5_utils.cost.bench_timing import (
    Timing,
    full_pass,
    interleaved,
    paired_ratio,
    rate_line,
    steady_pass,
    summary,
    timed,
)
from lab5_utils.data.benchdata import machine_info, write_food_like_folder

TARGETS = {"train_vs_plain": 2.5, "train_images_per_s": 1500.0, "validation_vs_plain": 2.0,
           "fit_vs_in_memory": 0.95, "quick_cpu_vs_flip_crop": 0.9}


# --- input pipelines -----------------------------------------------------------------------
def plain_pipeline(files: list[tuple[str, int]], image_size: int, batch_size: int):
    """The reference: read file -> decode the whole JPEG -> resize -> flip -> batch (parallel map)."""
    import tensorflow as tf

    def load(path, label):
        image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
        image = tf.image.resize(image, [image_size, image_size])
        return tf.image.random_flip_left_right(image), label

    paths, labels = zip(*files)
    ds = tf.data.Dataset.from_tensor_slices((list(paths), np.array(labels, np.int32)))
    return ds.map(load, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(
        tf.data.AUTOTUNE)


def bench_pipelines(root: Path, image_size: int, batch_size: int, repeats: int) -> dict[str, Any]:
    """images/s of the plain pipeline and of `make_pipeline` with preset full's defaults (the
    training cache, "auto", holds these few hundred images in memory; validation has no cache),
    plus each split with the other cache setting, and the cache-filling first training epoch.
    Training augments with flip and crop only: the decoding path is what this measures (quick's
    and full's augmentations, in each placement: `bench_augment`)."""
    from lab5_utils.config import LabConfig
    from lab5_utils.data.pipeline import make_pipeline
    from lab5_utils.data.splits import list_images, load_encoded

    cfg = LabConfig.preset("full", dataset=f"folder:{root}", image_size=image_size,
                           batch_size=batch_size, augmentations=["flip", "crop"])
    train, val, _, info = load_encoded(cfg)
    variants = {
        "train": (train, cfg, True),
        "train_uncached": (train, cfg.replace(cache_train=""), True),
        "validation": (val, cfg, False),
        "validation_cached": (val, cfg.replace(cache_validation="memory"), False),
    }
    pipelines = {"plain": plain_pipeline(list_images(root / "train")[1], image_size, batch_size)}
    for name, (ds, config, training) in variants.items():
        count = info.num_train if training else info.num_val
        pipelines[name] = make_pipeline(ds, config, training=training, num_examples=count)
    runs = interleaved({k: (lambda ds=ds: steady_pass(ds)) for k, ds in pipelines.items()},
                       repeats)
    # A new pipeline each time, timed from its start: the shuffle buffer after the cache waits
    # for the decoding, shrinking and storing of the images before the first batch
    runs["train_first_epoch"] = [full_pass(make_pipeline(train, cfg, True, info.num_train))
                                 for _ in range(repeats)]
    return {"augmentations": cfg.augmentations, "cache_train": cfg.cache_train,
            **{name: summary(values) for name, values in runs.items()},
            "ratios": {f"{name}_vs_plain": paired_ratio(runs[name], runs["plain"])
                       for name in ("train", "train_uncached", "validation", "validation_cached")}}


# --- fit against in-memory tensors ---------------------------------------------------------
def measure_fit(model, pipeline, in_memory, images: int, repeats: int) -> dict[str, Any]:
    """images/s of `model.fit` for one epoch (`images` examples) on `pipeline` and on `in_memory`
    (both batched), interleaved; the first epoch of each (tracing, warm-up) is not counted."""

    def run(ds) -> Timing:
        def epoch() -> int:
            with warnings.catch_warnings():  # the folder pipeline has no known length
                warnings.filterwarnings("ignore", message="Your input ran out of data")
                model.fit(ds, epochs=1, verbose=0, shuffle=False)
            return images

        return timed(epoch)

    runs = interleaved({"in_memory": lambda: run(in_memory), "pipeline": lambda: run(pipeline)},
                       repeats)
    result = {name: summary(values) for name, values in runs.items()}
    result["ratio"] = paired_ratio(runs["pipeline"], runs["in_memory"])
    return result


def bench_fit(root: Path, image_size: int, batch_size: int, repeats: int) -> dict[str, Any]:
    """Demo-size EfficientNet-B0 (frozen base, weights=None) trained from `make_pipeline` on the
    JPEG folder vs from the same batches held in memory."""
    import tensorflow as tf

    from lab5_utils.config import LabConfig
    from lab5_utils.data.pipeline import make_pipeline
    from lab5_utils.data.splits import load_encoded
    from lab5_utils.model.network import build_model, compile_model, freeze_base

    cfg = LabConfig.preset("demo", dataset=f"folder:{root}", weights=None, image_size=image_size,
                           batch_size=batch_size)
    train, _, _, info = load_encoded(cfg)
    pipeline = make_pipeline(train, cfg, training=True, num_examples=info.num_train)
    images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in pipeline])
    in_memory = tf.data.Dataset.from_tensor_slices(
        (np.concatenate(images), np.concatenate(labels))).batch(batch_size).cache()
    model = build_model(cfg, info.num_classes)
    compile_model(freeze_base(model), 1e-3)
    return {"image_size": image_size, "batch_size": batch_size, "model": "EfficientNet-B0, frozen",
            **measure_fit(model, pipeline, in_memory, info.num_train, repeats)}


# --- the whole benchmark -------------------------------------------------------------------
def run_bench(images: int = 512, batch_size: int = 64, image_size: int = 224, repeats: int = 3,
              fit: bool = True, fit_image_size: int = 96, fit_batch_size: int = 32,
              workdir: str | None = None, step_steps: int | None = None) -> dict[str, Any]:
    """Generate the JPEGs, measure, and return everything as one JSON-serializable dict.
    `step_steps`: timed steps of the model per stage for the input-/step-bound verdicts
    (`bench_augment`; None: not measured)."""
    from lab5_utils.cost.bench_augment import bench_placements

    if images < 2 * max(batch_size, fit_batch_size if fit else 1):
        raise ValueError("--images must be at least twice the batch size: the first batch of "
                         "every pass is not timed.")
    result: dict[str, Any] = {"machine": machine_info(),
                              "settings": {"images": images, "batch_size": batch_size,
                                           "image_size": image_size, "repeats": repeats}}
    with tempfile.TemporaryDirectory(prefix="lab5-bench-", dir=workdir) as tmp:
        root = Path(tmp) / "food_like"
        result["data"] = write_food_like_folder(root, images)
        pipes = bench_pipelines(root, image_size, batch_size, repeats)
        result["ratios"] = pipes.pop("ratios")
        result["pipeline"] = pipes
        result["fit"] = bench_fit(root, fit_image_size, fit_batch_size, repeats) if fit else None
        # last: the step's measurement turns op determinism on, as quick trains
        result["augment"] = bench_placements(root, image_size, batch_size, repeats, step_steps)
    result["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    result["targets"] = _targets(result)
    return result


def _targets(result: dict[str, Any]) -> dict[str, bool | None]:
    fit = result["fit"]
    return {
        "train_vs_plain": result["ratios"]["train_vs_plain"] >= TARGETS["train_vs_plain"],
        "train_images_per_s": result["pipeline"]["train"]["median"] >= TARGETS["train_images_per_s"],
        "validation_vs_plain": (result["ratios"]["validation_vs_plain"]
                                >= TARGETS["validation_vs_plain"]),
        "fit_vs_in_memory": None if fit is None else fit["ratio"] >= TARGETS["fit_vs_in_memory"],
        "quick_cpu_vs_flip_crop": (result["augment"]["ratios"]["device_cpu_vs_flip_crop"]
                                   >= TARGETS["quick_cpu_vs_flip_crop"]),
    }


def format_report(result: dict[str, Any]) -> str:
    """The human-readable report printed by `lab5 bench`."""
    from lab5_utils.cost.bench_augment import format_placements

    m, s, d, p = result["machine"], result["settings"], result["data"], result["pipeline"]
    lines = [
        f"machine: {m['cores']} cores, {m['cpu_model']}, {m['gpus']} GPU(s); TensorFlow "
        f"{m['tensorflow']}, Keras {m['keras']}, {m['cpu_allocator']} CPU allocator; load "
        f"average {m['load_average']} at start, {m['load_average_end']} at end",
        f"data: {d['count']} generated JPEGs ({', '.join(d['shapes'])}), {d['kb_min']}-"
        f"{d['kb_max']} KB (median {d['kb_median']})",
        f"input pipeline: image_size {s['image_size']}, batch {s['batch_size']}, train "
        f"augmentations {'+'.join(p['augmentations'])}; median of {s['repeats']} passes (timed "
        "from each pass's 2nd batch); xN: median of each round's ratio to plain",
    ]
    ratios = {"plain": 1.0, **{k.removesuffix("_vs_plain"): v for k, v in result["ratios"].items()}}
    for name, label in (("plain", "plain (decode all -> resize -> flip)"),
                        ("train", "make_pipeline(training=True)"),
                        ("train_uncached", "  same, cache_train='' (off)"),
                        ("validation", "make_pipeline(training=False)"),
                        ("validation_cached", "  same, cache_validation=memory")):
        lines.append(f"  {label:38s} x{ratios[name]:.2f} {rate_line(p[name])}")
    lines.append(f"  {'  1st epoch, start-up included (fills cache)':44s} "
                 f"{rate_line(p['train_first_epoch'])}")
    fit = result["fit"]
    if fit is not None:
        lines.append(f"fit, {fit['model']}, image_size {fit['image_size']}, batch "
                     f"{fit['batch_size']} (first epoch of each excluded):")
        for name in ("in_memory", "pipeline"):
            lines.append(f"  {name:38s} {rate_line(fit[name])}")
        lines.append(f"  pipeline / in-memory (median of the rounds' ratios): {fit['ratio']:.1%}")
    lines += format_placements(result["augment"])
    marks = {True: "met", False: "NOT met", None: "not measured"}
    lines.append("targets: " + "; ".join(f"{k} >= {TARGETS[k]:g}: {marks[v]}"
                                         for k, v in result["targets"].items()))
    return "\n".join(lines)


# --- CLI -------------------------------------------------------------------------------------
def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not valid: expected an integer >= 1")
    return value


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `lab5 bench`."""
    parser.add_argument("--images", type=_positive,
                        help="JPEGs to generate (512; --train-step: for its pipeline-fed "
                             "measurement, 512 on a GPU/TPU, 64 on a CPU)")
    parser.add_argument("--batch-size", type=_positive,
                        help="batch size (64, preset full; --train-step on a CPU: 16)")
    parser.add_argument("--image-size", type=_positive, default=224,
                        help="image size of the input-pipeline measurements (224, preset full)")
    parser.add_argument("--repeats", type=_positive, default=3, help="timed passes (median)")
    parser.add_argument("--fit-image-size", type=_positive, default=96,
                        help="image size of the fit measurement (96, preset demo)")
    parser.add_argument("--fit-batch-size", type=_positive, default=32,
                        help="batch size of the fit measurement (32, preset demo)")
    parser.add_argument("--no-fit", action="store_true", help="skip the fit measurement")
    parser.add_argument("--no-step", action="store_true",
                        help="skip timing the model's step (the input-/step-bound verdicts of "
                             "quick's training input)")
    parser.add_argument("--train-step", action="store_true",
                        help="instead: images/s of the real training step (frozen and unfrozen, "
                             "XLA off/on) at --step-sizes, in memory and fed by the input "
                             "pipeline; one progress line per measurement (on stderr with --json)")
    parser.add_argument("--step-sizes", type=_positive, nargs="+", metavar="PX",
                        help="--train-step: image sizes to measure (224 on a GPU/TPU, 64 on a CPU)")
    parser.add_argument("--steps", type=_positive,
                        help="--train-step: timed steps per measurement (10)")
    parser.add_argument("--jit", choices=["off", "on", "both"],
                        help="--train-step: XLA for the in-memory measurements (both on a GPU/TPU, "
                             "off on a CPU, where training never uses it)")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")


def cmd_bench(args: argparse.Namespace) -> int:
    """Run the benchmark and print the report (or JSON); 1 when a --train-step measurement failed."""
    if args.image_size < 32 or args.fit_image_size < 32:
        raise ValueError("--image-size and --fit-image-size must be >= 32 (EfficientNet minimum).")
    if args.train_step:
        import sys

        from lab5_utils.cost.bench_step import bench_train_step, format_train_step

        def log(line: str) -> None:  # stdout stays valid JSON with --json
            print(line, file=sys.stderr if args.json else sys.stdout, flush=True)

        step = bench_train_step(args.step_sizes, args.batch_size, args.steps, args.jit,
                                pipeline_images=args.images, log=log)
        print(json.dumps(step, indent=2) if args.json else format_train_step(step), flush=True)
        return 1 if step["errors"] else 0
    images, batch_size = args.images or 512, args.batch_size or 64
    from lab5_utils.cost.speed import accelerator_present

    result = run_bench(images, batch_size, args.image_size, args.repeats,
                       fit=not args.no_fit, fit_image_size=args.fit_image_size,
                       fit_batch_size=args.fit_batch_size,
                       step_steps=None if args.no_step else 5 if accelerator_present() else 1)
    print(json.dumps(result, indent=2) if args.json else format_report(result))
    return 0
