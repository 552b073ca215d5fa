"""`LabConfig`: every parameter of the lab in one validated, JSON-serializable dataclass."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab5_utils.files import project_root
from lab5_utils.hosts import kaggle
from lab5_utils.presets import PRESET_VALUES

DATASETS = ("food101", "synthetic", "folder:PATH", "archive:PATH", "tfds:PATH")
PATH_SOURCES = ("folder:", "archive:", "tfds:")  # README "Food-101 without downloading it"
SCHEDULES = ("constant", "cosine", "exponential", "plateau")
AUGMENTATIONS = ("flip", "crop", "rotation", "zoom", "contrast", "randaugment", "mixup", "cutmix")
HEAVY_AUGMENTATIONS = ("rotation", "zoom", "contrast", "randaugment", "mixup", "cutmix")
AUGMENT_ON = ("auto", "device", "pipeline")  # where the heavy ones run (lab5_utils.data.augment)
MIXING = ("mixup", "cutmix")  # augmentations that mix two images and their (one-hot) labels
OPTIMIZERS = ("adam", "adamw")
TTA = ("none", "flip")
UNFREEZE_MODES = ("all", "top:N", "none")
MIXED_PRECISION = ("auto", "on", "off")
JIT_COMPILE = ("auto", "true", "false")
DISTRIBUTIONS = ("auto", "none", "mirrored", "tpu", "multiworker")
PRESETS = ("demo", "quick", "full")

TEST_TIME_FIELDS = ("tta", "test_image_size")  # act after training only: runs differing in them
# alone train alike (`rundir.share_training`)


@dataclass
class LabConfig:
    """All settings of one run. Build it with `LabConfig.preset(name, **overrides)`."""

    preset_name: str = "full"
    dataset: str = "food101"
    image_size: int = 224
    batch_size: int = 32
    transfer_epochs: int = 10
    finetune_epochs: int = 10
    learning_rate: float = 1e-3
    finetune_learning_rate: float = 1e-5
    schedule: str = "cosine"
    warmup_fraction: float = 0.05
    augmentations: list[str] = field(default_factory=lambda: ["flip", "crop"])
    augment_on: str = "auto"  # "device" (in the training step), "pipeline" (tf.data), "auto"
    # The fine-tuning recipe (lab5_utils.model.recipe); each default is the lab before it existed
    crop_scale: list[float] = field(default_factory=lambda: [0.35, 1.0])  # crop's area range
    randaugment_ops: int = 2  # operations per image (augmentations=...,randaugment)
    randaugment_factor: float = 0.2  # their strength, Keras' factor 0..1
    mixup_alpha: float = 0.2  # Beta(alpha, alpha) mixing weights (augmentations=...,mixup)
    cutmix_alpha: float = 1.0  # the same for the pasted area (augmentations=...,cutmix)
    label_smoothing: float = 0.0  # 0 = off (integer labels, sparse cross-entropy)
    optimizer: str = "adam"  # or "adamw" (decoupled weight decay)
    weight_decay: float = 0.0  # adamw only; BatchNorm and biases are never decayed
    decay_head: bool = True  # False: the classification head is not decayed either
    ema: bool = False  # evaluate and keep the exponential moving average of the weights
    ema_momentum: float = 0.99
    tta: str = "none"  # test-time augmentation: "none" or "flip" (image and mirror averaged)
    test_image_size: int | None = None  # the test split's input size; None = image_size
    unfreeze: str = "all"
    weights: str | None = "imagenet"
    dropout: float = 0.2
    seed: int = 42
    mixed_precision: str = "auto"
    jit_compile: str = "false"  # "auto" (measure both on a GPU/TPU), "true", "false"
    steps_per_execution: int | str = 1  # or "auto": 1 on a CPU, more on a GPU/TPU
    distribution: str = "auto"  # tf.distribute strategy: see lab5_utils.model.distribute
    progress_seconds: float = 60.0  # a line inside long epochs (not with a progress bar); 0: off
    train_fraction: float = 1.0
    validation_split: float = 0.1
    test_split: float = 0.1
    shuffle_buffer: int = 2048
    cache_train: str = "auto"
    cache_validation: str = ""
    num_classes: int = 10
    synthetic_train_per_class: int = 40
    synthetic_val_per_class: int = 12
    synthetic_test_per_class: int = 12
    calibration_images: int = 256
    deterministic: bool = True
    strict_data: bool = False
    data_cache: str = ""  # where archive:PATH is extracted; "" = ~/.cache/lab5 (a local disk)
    run_root: str = "runs/full"

    def __post_init__(self) -> None:
        if isinstance(self.augmentations, str):
            self.augmentations = [a for a in self.augmentations.split(",") if a.strip()]
        self.augmentations = [a.strip() for a in self.augmentations]
        if isinstance(self.crop_scale, str):  # "0.35,1.0"
            self.crop_scale = [a.strip() for a in self.crop_scale.split(",") if a.strip()]
        if isinstance(self.crop_scale, (list, tuple)):
            self.crop_scale = [_number(v) for v in self.crop_scale]
        if isinstance(self.jit_compile, (bool, str)):  # bool: configs written before "auto"
            self.jit_compile = str(self.jit_compile).lower()
        if isinstance(self.steps_per_execution, str) and self.steps_per_execution.isdigit():
            self.steps_per_execution = int(self.steps_per_execution)
        self.validate()

    # --- validation -------------------------------------------------------------------
    def validate(self) -> None:
        """Raise one `ValueError` naming the first bad field, its value and what is allowed."""
        for name in ("learning_rate", "finetune_learning_rate"):
            check_learning_rate(getattr(self, name), name)
        _check_int(self, "image_size", 32)
        for name in ("batch_size", "transfer_epochs", "finetune_epochs", "num_classes",
                     "synthetic_train_per_class", "synthetic_val_per_class", "synthetic_test_per_class",
                     "calibration_images", "shuffle_buffer"):
            _check_int(self, name, 1)
        if self.num_classes < 2:
            _fail("num_classes", self.num_classes, "an integer >= 2")
        _check_choice("preset_name", self.preset_name, PRESETS)
        if not (self.dataset in ("food101", "synthetic") or self.dataset.startswith(PATH_SOURCES)):
            _fail("dataset", self.dataset, f"one of {', '.join(DATASETS)}")
        if self.dataset in PATH_SOURCES:
            _fail("dataset", self.dataset, f"{self.dataset!r} followed by a path, e.g. "
                  f"{self.dataset}data/{'photos' if self.dataset == 'folder:' else 'food-101.tar.gz'}")
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_choice("mixed_precision", self.mixed_precision, MIXED_PRECISION)
        _check_choice("jit_compile", self.jit_compile, JIT_COMPILE)
        spe = self.steps_per_execution
        if spe != "auto" and (isinstance(spe, bool) or not isinstance(spe, int) or spe < 1):
            _fail("steps_per_execution", spe, "'auto' or an integer >= 1")
        _check_choice("distribution", self.distribution, DISTRIBUTIONS)
        for aug in self.augmentations:
            _check_choice("augmentations", aug, AUGMENTATIONS)
        _check_choice("augment_on", self.augment_on, AUGMENT_ON)
        parse_unfreeze(self.unfreeze)
        for name, lo, hi in (("dropout", 0.0, 0.99), ("warmup_fraction", 0.0, 0.9),
                             ("validation_split", 0.01, 0.5), ("test_split", 0.01, 0.5),
                             ("train_fraction", 1e-6, 1.0)):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not lo <= value <= hi:
                _fail(name, value, f"a number from {lo} to {hi}")
        seconds = self.progress_seconds
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not (
                math.isfinite(seconds) and seconds >= 0):
            _fail("progress_seconds", seconds, "a number of seconds >= 0 (0 turns the lines off)")
        for name in ("cache_train", "cache_validation"):
            if not isinstance(getattr(self, name), str):
                _fail(name, getattr(self, name), "'auto', 'memory', '' (off) or a file path")
        if not isinstance(self.data_cache, str):
            _fail("data_cache", self.data_cache, "a folder path, or '' for ~/.cache/lab5")
        if self.weights is not None and not isinstance(self.weights, str):
            _fail("weights", self.weights, "'imagenet', 'calibrated', a weights file path, or None")
        if self.jit_compile == "true" and self.deterministic:  # Keras drops XLA under determinism
            _fail("jit_compile", self.jit_compile, "'false' or 'auto' while deterministic=true "
                  "(Keras trains without XLA when op determinism is on); set deterministic=false "
                  "to use XLA")
        if self.augment_on == "device" and self.jit_compile == "true" and any(
                a in HEAVY_AUGMENTATIONS for a in self.augmentations):
            _fail("augment_on", self.augment_on, "'pipeline' or 'auto' with jit_compile=true "
                  "(XLA cannot compile the image transforms of rotation, zoom and RandAugment)")
        self._validate_recipe()

    def _validate_recipe(self) -> None:
        """The fine-tuning recipe's fields (lab5_utils.model.recipe)."""
        _check_number(self, "label_smoothing", 0.0, 1.0, "a number >= 0 and < 1 (0 = off), "
                      "e.g. 0.1", high_open=True)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_number(self, "weight_decay", 0.0, math.inf, "a number >= 0, e.g. 0.05 (0 = off)")
        if self.optimizer == "adam" and self.weight_decay > 0:
            _fail("weight_decay", self.weight_decay, "0 with optimizer='adam' (Adam here never "
                  "decays weights): set optimizer=adamw to decay them")
        for name in ("decay_head", "ema"):
            if not isinstance(getattr(self, name), bool):
                _fail(name, getattr(self, name), "true or false")
        _check_number(self, "ema_momentum", 0.0, 1.0, "a number between 0 and 1 (both "
                      "excluded), e.g. 0.99", low_open=True, high_open=True)
        _check_int(self, "randaugment_ops", 1)
        for name in ("randaugment_factor", "mixup_alpha", "cutmix_alpha"):
            _check_number(self, name, 0.0, 1.0, "a number > 0 and <= 1", low_open=True)
        scale = self.crop_scale
        if not (isinstance(scale, list) and len(scale) == 2
                and all(isinstance(v, float) and math.isfinite(v) for v in scale)
                and 0 < scale[0] <= scale[1] <= 1):
            _fail("crop_scale", scale, "two numbers lo,hi with 0 < lo <= hi <= 1: the range of "
                  "the crop's share of the image area, e.g. 0.35,1.0")
        mixing = [a for a in self.augmentations if a in MIXING]
        if mixing and self.batch_size < 2:
            _fail("batch_size", self.batch_size, f"at least 2 with augmentations={mixing[0]} "
                  "(it mixes each training image with another image of its batch)")
        _check_choice("tta", self.tta, TTA)
        if self.test_image_size is not None:
            _check_int(self, "test_image_size", 32)

    # --- construction -----------------------------------------------------------------
    @classmethod
    def preset(cls, name: str, **overrides: Any) -> LabConfig:
        """A named preset (`demo`, `quick`, `full`) with keyword overrides."""
        if name not in PRESET_VALUES:
            _fail("preset", name, f"one of {', '.join(PRESETS)}")
        values = {**PRESET_VALUES[name], "preset_name": name}
        unknown = [k for k in overrides if k not in _field_names()]
        if unknown:
            raise ValueError(_unknown_key_message(unknown[0]))
        values.update(overrides)
        return cls(**values)

    def replace(self, **changes: Any) -> LabConfig:
        """A validated copy with some fields changed."""
        unknown = [k for k in changes if k not in _field_names()]
        if unknown:
            raise ValueError(_unknown_key_message(unknown[0]))
        return dataclasses.replace(self, **changes)

    def with_settings(self, settings: list[str] | None) -> LabConfig:
        """Apply `key=value` strings (the CLI's `--set`), parsing each value by the field's type."""
        changes: dict[str, Any] = {}
        for item in settings or []:
            key, sep, raw = item.partition("=")
            key = key.strip()
            if not sep:
                raise ValueError(f"--set {item!r}: expected key=value, e.g. --set batch_size=16")
            if key not in _field_names():
                raise ValueError(_unknown_key_message(key))
            changes[key] = parse_value(key, raw.strip())
        return self.replace(**changes)

    # --- serialization ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """The fields and `lab5_version`, the version that wrote them (`from_json` skips it)."""
        from lab5_utils import __version__

        return json.dumps({**self.to_dict(), "lab5_version": __version__}, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> LabConfig:
        """Read a config from a JSON string or a `config.json` path."""
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            text = Path(text_or_path).read_text()
        data = json.loads(text)
        known = {k: v for k, v in data.items() if k in _field_names()}
        return cls(**known)

    def diff(self, other: LabConfig, ignore: tuple[str, ...] = ()) -> dict[str, tuple[Any, Any]]:
        """Fields whose values differ: {name: (self_value, other_value)}."""
        a, b = self.to_dict(), other.to_dict()
        return {k: (a[k], b[k]) for k in a if k not in ignore and a[k] != b[k]}

    @property
    def folder(self) -> Path | None:
        """The path of a `folder:` or `archive:` dataset."""
        return Path(self.dataset.split(":", 1)[1]).expanduser() if self.is_folder else None

    @property
    def is_folder(self) -> bool:
        """Read from image files on disk (`folder:`, or `archive:` once extracted)."""
        return self.dataset.startswith(("folder:", "archive:"))


# A new field's default reproduces what runs did before it existed, except these: a config.json
# without one of them was made with the value given here.
LEGACY_VALUES: dict[str, Any] = {
    "cache_train": "",  # before the cache, every epoch decoded its crop from the file itself
    "strict_data": True,  # before damaged files were skipped, one stopped the run
    "distribution": "none",  # before tf.distribute, one device
    "augment_on": "pipeline",  # before the choice, every augmentation ran in the tf.data map
}
# Fields no value of which reproduces a run made before them (why, for the message).
NO_LEGACY_VALUE = {"test_split": "the run predates the test split",
                   "synthetic_test_per_class": "the run predates the test split"}


# --- helpers shared with the CLI and notebooks ---------------------------------------------
def lab_config(preset: str = "demo", settings: Iterable[str] = (), run_root: str | None = None,
               **overrides: Any) -> LabConfig:
    """The preset with `key=value` settings and the `overrides` that are not None applied;
    `run_root` (or the preset's) made absolute, relative paths taken from the repository root
    so every notebook finds the same runs; on Kaggle, `food101` is its copy in /kaggle/input
    when one is mounted. A bad value raises ValueError naming the field."""
    cfg = LabConfig.preset(preset).with_settings(list(settings or []))
    cfg = cfg.replace(**{k: v for k, v in overrides.items() if v is not None})
    if cfg.dataset == "food101" and (mounted := kaggle.food101_input()) is not None:
        cfg = cfg.replace(dataset=f"folder:{mounted}")  # on Kaggle: its copy, not a download
    root = Path(run_root or cfg.run_root).expanduser()
    return cfg.replace(run_root=str(root if root.is_absolute() else project_root() / root))


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """`--set KEY=VALUE` (repeatable) and `--strict`, both collected in `args.settings`."""
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="override any LabConfig field, e.g. --set batch_size=16 (repeatable)")
    parser.add_argument("--strict", dest="settings", action="append_const",
                        const="strict_data=true",
                        help="stop on a damaged or non-image file in a folder dataset (default: "
                             "skip it with a warning)")


def check_learning_rate(value: Any, name: str = "learning_rate") -> float:
    """Return `value` as a float if it is a finite number > 0, else raise a clear ValueError."""
    try:
        lr = float(value)
    except (TypeError, ValueError):
        _fail(name, value, "a finite number > 0, e.g. 1e-4")
    if isinstance(value, bool) or not math.isfinite(lr) or lr <= 0:
        _fail(name, value, "a finite number > 0, e.g. 1e-4")
    return lr


def lr_label(lr: float) -> str:
    """`1e-04`, `2.5e-04`: how run folders, notebook files and figures spell a learning rate."""
    mantissa, exponent = f"{lr:.3e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{exponent}"


def parse_unfreeze(mode: str) -> tuple[str, int]:
    """`"all"`, `"none"` or `"top:N"` (N >= 1) -> (kind, N)."""
    if mode in ("all", "none"):
        return mode, 0
    if isinstance(mode, str) and mode.startswith("top:"):
        n = mode[4:]
        if n.isdigit() and int(n) >= 1:
            return "top", int(n)
    _fail("unfreeze", mode, f"one of {', '.join(UNFREEZE_MODES)} (N an integer >= 1)")
    raise AssertionError  # unreachable


def parse_value(key: str, raw: str) -> Any:
    """Parse a `--set` value by the type of field `key`."""
    default = next(f for f in dataclasses.fields(LabConfig) if f.name == key)
    kind = default.type
    if raw.lower() in ("none", "null") and "None" in str(kind):
        return None
    try:
        if kind in ("int", int, "int | None"):
            return int(raw)
        if kind in ("float", float):
            return float(raw)
        if kind in ("bool", bool):
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if "list" in str(kind):
            items = [a.strip() for a in raw.split(",") if a.strip()]
            return [float(a) for a in items] if "float" in str(kind) else items
    except ValueError:
        _fail(key, raw, f"a value of type {kind}")
    return raw


def _field_names() -> dict[str, None]:
    return {f.name: None for f in dataclasses.fields(LabConfig)}


def _unknown_key_message(key: str) -> str:
    close = difflib.get_close_matches(key, list(_field_names()), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"Unknown config key {key!r}.{hint} Valid keys: {', '.join(_field_names())}."


def _check_int(cfg: LabConfig, name: str, minimum: int) -> None:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        _fail(name, value, f"an integer >= {minimum}")


def _number(value: Any) -> Any:
    """A number given as text (`--set crop_scale=0.2,1`, JSON) as a float; anything else as is,
    for `validate` to refuse."""
    try:
        return float(value) if not isinstance(value, bool) else value
    except (TypeError, ValueError):
        return value


def _check_number(cfg: LabConfig, name: str, low: float, high: float, allowed: str,
                  low_open: bool = False, high_open: bool = False) -> None:
    value = getattr(cfg, name)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (
            value < high if high_open else value <= high)
    if not ok:
        _fail(name, value, allowed)


def _check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        _fail(name, value, f"one of {', '.join(allowed)}")


def _fail(name: str, value: Any, allowed: str) -> None:
    raise ValueError(f"{name}={value!r} is not valid: expected {allowed}.")
