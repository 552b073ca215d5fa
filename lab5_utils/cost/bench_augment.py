"""`lab5 bench`: the training input of presets `quick` and `full` (one recipe: flip, crop and
RandAugment) with its real augmentations, in each placement (`augment_on`), against the same
pipeline with flip and crop only; and, per training stage, whether an epoch is input-bound or
step-bound on this machine.

Every pipeline is `splits.load_splits(cfg).train`, the one training reads. "device" is measured
twice: what the CPU still does (the tf.data map: decode the crop, resize, flip) and that plus the
training step's augmentation stage (`augment.DeviceAugment`) run on this machine's device; on a
machine without a GPU that device is the same CPU, so the second figure is what both cost there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lab5_utils.cost import bench_timing

RECIPE_FIELDS = ("augmentations", "randaugment_ops", "randaugment_factor", "crop_scale",
                 "mixup_alpha", "cutmix_alpha", "image_size", "batch_size")
STAGE_REPEATS = 5  # batches the augmentation stage alone is timed on, per round


def recipe_config(root: Path, image_size: int, batch_size: int):
    """Preset quick on the generated JPEGs (full augments alike: `RECIPE_FIELDS` are equal), at
    the bench's size, every epoch decoding its crops (cache_train off, as Food-101's 75,750
    images are on a 12 GB runtime)."""
    from lab5_utils.config import LabConfig

    quick, full = (LabConfig.preset(name).to_dict() for name in ("quick", "full"))
    assert all(quick[k] == full[k] for k in RECIPE_FIELDS), "quick and full augment differently"
    return LabConfig.preset("quick", dataset=f"folder:{root}", image_size=image_size,
                            batch_size=batch_size, cache_train="", weights=None)


def bench_placements(root: Path, image_size: int, batch_size: int, repeats: int,
                     step_steps: int | None = 2, measure=None) -> dict[str, Any]:
    """images/s of the training input with flip + crop only, with quick's augmentations in the
    pipeline, and on the device (the CPU part; with the device stage), interleaved; ratios to
    flip + crop; the step time of each stage (`estimate.measure`, `step_steps` steps, None:
    not measured) and which side bounds an epoch."""
    import tensorflow as tf

    from lab5_utils.data.augment import DeviceAugment
    from lab5_utils.data.splits import load_splits

    cfg = recipe_config(root, image_size, batch_size)
    # flip + crop and the device's CPU part back to back: the pair the target compares
    configs = {"flip_crop": cfg.replace(augmentations=["flip", "crop"]),
               "device_cpu": cfg.replace(augment_on="device"),
               "pipeline": cfg.replace(augment_on="pipeline")}
    pipelines = {name: load_splits(c).train for name, c in configs.items()}
    stage = tf.function(DeviceAugment(configs["device_cpu"]))
    seed = tf.constant([cfg.seed, 0], tf.int64)
    batch = next(iter(pipelines["device_cpu"]))

    def through_stage(ds):
        for images, labels in ds:
            images, labels = stage(images, labels, seed)
            yield images.numpy(), labels

    def stage_alone() -> bench_timing.Timing:
        return bench_timing.timed(lambda: sum(stage(*batch, seed)[0].numpy().shape[0]
                                       for _ in range(STAGE_REPEATS)))

    runs = {name: (lambda ds=ds: bench_timing.steady_pass(ds)) for name, ds in pipelines.items()}
    runs["device_with_stage"] = lambda: bench_timing.steady_pass(through_stage(pipelines["device_cpu"]))
    runs["device_stage"] = stage_alone
    timings = bench_timing.interleaved(runs, repeats)
    result: dict[str, Any] = {
        "preset": "quick (full augments alike)", "augmentations": cfg.augmentations,
        "cache_train": cfg.cache_train, **{k: bench_timing.summary(v) for k, v in timings.items()},
        "ratios": {f"{k}_vs_flip_crop": bench_timing.paired_ratio(timings[k], timings["flip_crop"])
                   for k in ("pipeline", "device_cpu", "device_with_stage")}}
    if step_steps:
        result |= bounds(result, cfg, step_steps, measure)
    return result


def bounds(result: dict[str, Any], cfg, steps: int, measure=None) -> dict[str, Any]:
    """The model's step per stage (the estimate's `measure`, at the bench's size; the device
    placement adds the stage's time a batch) and, per placement and stage, the bound."""
    from lab5_utils.cost import estimate

    measure = measure or estimate.measure
    step_timing = measure(cfg.replace(augment_on="pipeline"), estimate.STAGES, steps,
                          num_classes=estimate.FOOD101_CLASSES)
    batch = cfg.batch_size
    augmenting = batch / result["device_stage"]["median"]  # seconds a batch
    out: dict[str, Any] = {"step_seconds": {s: round(t, 4) for s, t in
                                            step_timing.train_step.items()},
                           "device_stage_seconds": round(augmenting, 4), "bounds": {}}
    for where, cpu in (("pipeline", "pipeline"), ("device", "device_cpu")):
        rate = result[cpu]["median"]
        out["bounds"][where] = {}
        for stage, seconds in step_timing.train_step.items():
            step = seconds + (augmenting if where == "device" else 0.0)
            text = estimate.bound_text(rate, step, batch)
            out["bounds"][where][stage] = {"bound": text.split("-", 1)[0], "text": text}
    return out


def format_placements(result: dict[str, Any]) -> list[str]:
    """The lines of `lab5 bench`'s report for `bench_placements`."""
    r = result["ratios"]
    lines = [f"training input of {result['preset']}: {'+'.join(result['augmentations'])}, "
             f"cache_train off; xN: median of each round's ratio to flip + crop"]
    for name, label, ratio in (
            ("flip_crop", "flip + crop only", 1.0),
            ("pipeline", "augment_on=pipeline (all in tf.data)", r["pipeline_vs_flip_crop"]),
            ("device_cpu", "augment_on=device, the CPU's part", r["device_cpu_vs_flip_crop"]),
            ("device_with_stage", "  same + the step's augmentation",
             r["device_with_stage_vs_flip_crop"])):
        lines.append(f"  {label:38s} x{ratio:.2f} {bench_timing.rate_line(result[name])}")
    alone = bench_timing.rate_line(result["device_stage"])
    lines.append(f"  {'the step augmentation alone':38s}       {alone}")
    for where, stages in result.get("bounds", {}).items():
        for stage, bound in stages.items():
            lines.append(f"  augment_on={where}, {stage}: {bound['text']}")
    return lines
