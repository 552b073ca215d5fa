"""The network and how it learns: EfficientNet-B0 with its head, freezing, BatchNorm calibration,
the model at its test-time settings (`network`), the recipe's loss, optimizer, EMA and callbacks
(`recipe`), LR schedules and the range test's (`schedules`), the `tf.distribute` strategy
(`distribute`).

May import: only the top modules (`config`, `files`, `i18n`, `tables`, `seeding`).
"""

from lab5_utils import hand_on

__getattr__, __all__ = hand_on(
    __name__,
    network="build_model compile_model load_model device_summary",
    recipe="recipe_table",
)
