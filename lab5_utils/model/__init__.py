"""The network and how it learns: EfficientNet-B0 with its head, freezing, BatchNorm calibration,
the model at its test-time settings (`network`), the recipe's loss, optimizer, EMA and callbacks
(`recipe`), LR schedules and the range test's (`schedules`), the `tf.distribute` strategy
(`distribute`).

May import: only the top modules (`config`, `files`, `i18n`, `tables`, `seeding`).
"""

from lab5_utils import hand_on

_NAMES = {
    "build_model": "network",
    "compile_model": "network",
    "load_model": "network",
    "device_summary": "network",
    "recipe_table": "recipe",
}
__all__ = sorted(_NAMES)
__getattr__ = hand_on(__name__, _NAMES)
