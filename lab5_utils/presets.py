"""The three presets' values: `demo` (offline, a 2-core CPU, minutes), `quick` and `full`
(Food-101 with ImageNet weights on a GPU, with the fine-tuning recipe). `LabConfig.preset` applies
them over the dataclass defaults, which reproduce the lab before each field existed."""

from __future__ import annotations

from typing import Any

# quick and full: the fine-tuning recipe of README "The fine-tuning recipe" (mixup and cutmix
# stay off: short schedules). EMA's momentum is set per preset: its horizon, 1/(1-momentum)
# steps, is about one epoch (quick ~119 steps an epoch, full ~1,125).
_RECIPE: dict[str, Any] = dict(
    augmentations=["flip", "crop", "randaugment"], randaugment_ops=2, randaugment_factor=0.2,
    label_smoothing=0.1, optimizer="adamw", weight_decay=0.05, ema=True, tta="flip",
    test_image_size=256)

PRESET_VALUES: dict[str, dict[str, Any]] = {
    "demo": dict(dataset="synthetic", weights="calibrated", image_size=96, batch_size=32,
                 transfer_epochs=4, finetune_epochs=2, learning_rate=1e-2,
                 finetune_learning_rate=1e-4, schedule="cosine", augmentations=["flip", "crop"],
                 unfreeze="top:20",
                 num_classes=10, synthetic_train_per_class=30, synthetic_val_per_class=10,
                 synthetic_test_per_class=20,
                 calibration_images=128, cache_validation="auto", run_root="runs/demo"),
    "quick": dict(dataset="food101", weights="imagenet", image_size=224, batch_size=64,
                  transfer_epochs=5, finetune_epochs=5, learning_rate=1e-3,
                  finetune_learning_rate=1e-5, train_fraction=0.1, cache_validation="auto",
                  validation_split=0.05, jit_compile="auto", steps_per_execution="auto",
                  run_root="runs/quick", **_RECIPE, ema_momentum=0.99),
    "full": dict(dataset="food101", weights="imagenet", image_size=224, batch_size=64,
                 transfer_epochs=10, finetune_epochs=10, learning_rate=1e-3,
                 finetune_learning_rate=1e-5, validation_split=0.05, jit_compile="auto",
                 steps_per_execution="auto", run_root="runs/full", **_RECIPE,
                 ema_momentum=0.999),
}
