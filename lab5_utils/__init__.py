"""lab5_utils: the engine of lab 5 (EfficientNet-B0 on Food-101, transfer learning then fine-tuning).

Rooms in the order data flows (each sub-package's docstring says what it holds and which rooms it
may import; `lint-imports` checks the layers declared in pyproject.toml): `data` -> `model` ->
`train` (with `cost`) -> `evaluate` -> `report`, and `cli` above them all. At the top, what every
stage uses: `config`, `presets`, `files`, `seeding`, `i18n` (with `locale/`), `tables`, and the
`hosts` package (Colab, Kaggle).
"""

import importlib
import os
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ INFO lines are noise here
# Nothing of the package is imported here: every room imports this file (`hand_on`), so an import
# here would sit under all of them. `LabConfig` is `lab5_utils.config.LabConfig`.

__all__ = ["hand_on"]
__version__ = "0.1.0"


def hand_on(package: str, **modules: str) -> tuple[Callable[[str], object], list[str]]:
    """A sub-package's module `__getattr__` and `__all__`: each keyword names a module of
    `package` and the public names it defines (space-separated), imported on first use, so
    `from lab5_utils.train import run_stage` works while importing a light module of the package
    (`lab5 --help`) loads no TensorFlow."""
    names = {name: module for module, listed in modules.items() for name in listed.split()}

    def __getattr__(name: str) -> object:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{names[name]}"), name)

    return __getattr__, sorted(names)
