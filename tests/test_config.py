import json
import math

import pytest

from lab5_utils.config import LabConfig, check_learning_rate


@pytest.mark.parametrize(
    "field, value, expected",
    [
        ("learning_rate", 0, "learning_rate=0"),
        ("learning_rate", -1e-3, "learning_rate=-0.001"),
        ("finetune_learning_rate", math.nan, "finetune_learning_rate=nan"),
        ("learning_rate", math.inf, "learning_rate=inf"),
        ("learning_rate", "fast", "learning_rate='fast'"),
        ("image_size", 31, "image_size=31"),
        ("batch_size", 0, "batch_size=0"),
        ("transfer_epochs", 0, "transfer_epochs=0"),
        ("finetune_epochs", -2, "finetune_epochs=-2"),
        ("dataset", "imagenet", "food101, synthetic, folder:PATH"),
        ("schedule", "linear", "constant, cosine, exponential, plateau"),
        ("augmentations", ["flip", "blur"], "flip, crop, rotation, zoom, contrast"),
        ("unfreeze", "top:0", "all, top:N, none"),
        ("unfreeze", "half", "unfreeze='half'"),
        ("mixed_precision", "maybe", "auto, on, off"),
    ],
)
def test_bad_values_name_the_field_and_what_is_allowed(field, value, expected):
    with pytest.raises(ValueError) as err:
        LabConfig.preset("demo", **{field: value})
    assert field in str(err.value) and expected in str(err.value)


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(ValueError, match="demo, quick, full"):
        LabConfig.preset("huge")


def test_presets_differ_where_they_should():
    demo, quick, full = (LabConfig.preset(n) for n in ("demo", "quick", "full"))
    assert demo.dataset == "synthetic" and demo.weights != "imagenet" and demo.image_size <= 96
    assert quick.dataset == full.dataset == "food101" and quick.image_size == 224
    assert quick.train_fraction < 1.0 == full.train_fraction
    assert full.weights == "imagenet"


def test_json_round_trip(tmp_path):
    cfg = LabConfig.preset("quick", augmentations=["flip", "zoom"], unfreeze="top:20")
    assert LabConfig.from_json(cfg.to_json()) == cfg
    path = tmp_path / "config.json"
    path.write_text(cfg.to_json())
    assert LabConfig.from_json(path) == cfg


def test_settings_are_parsed_by_field_type():
    cfg = LabConfig.preset("demo").with_settings(
        ["batch_size=8", "learning_rate=3e-4", "augmentations=flip,contrast", "weights=none",
         "jit_compile=true", "deterministic=false"]
    )
    assert cfg.batch_size == 8 and cfg.learning_rate == 3e-4 and cfg.weights is None
    assert cfg.augmentations == ["flip", "contrast"] and cfg.jit_compile == "true"


def test_jit_compile_and_steps_per_execution_settings():
    assert LabConfig.preset("full").jit_compile == "auto"
    assert LabConfig.preset("demo").jit_compile == "false"
    cfg = LabConfig.preset("demo").with_settings(["steps_per_execution=4", "jit_compile=True",
                                                  "deterministic=false"])
    assert cfg.steps_per_execution == 4 and cfg.jit_compile == "true"
    with pytest.raises(ValueError, match="jit_compile='true' is not valid: .*deterministic=false"):
        LabConfig.preset("demo").with_settings(["jit_compile=true"])  # Keras would drop XLA
    assert LabConfig.preset("quick").steps_per_execution == "auto"
    old = json.loads(LabConfig.preset("demo").to_json()) | {"jit_compile": False}  # before "auto"
    assert LabConfig.from_json(json.dumps(old)).jit_compile == "false"
    with pytest.raises(ValueError, match="steps_per_execution=0 is not valid: expected 'auto' or"):
        LabConfig.preset("demo").with_settings(["steps_per_execution=0"])
    with pytest.raises(ValueError, match="jit_compile='maybe' is not valid: expected one of auto"):
        LabConfig.preset("demo").with_settings(["jit_compile=maybe"])


def test_unknown_setting_suggests_the_closest_key():
    with pytest.raises(ValueError, match="Did you mean 'batch_size'"):
        LabConfig.preset("demo").with_settings(["batch_sise=8"])
    with pytest.raises(ValueError, match="learning_rate='abc'"):
        LabConfig.preset("demo").with_settings(["learning_rate=abc"])


def test_check_learning_rate_accepts_strings_of_numbers():
    assert check_learning_rate("1e-5") == 1e-5
    with pytest.raises(ValueError, match="--lr"):
        check_learning_rate("0", "--lr")
