"""lab5_utils: the engine of lab 5 (EfficientNet-B0 on Food-101, transfer learning then fine-tuning).

Rooms in the order data flows (each sub-package's docstring says what it holds and which rooms it
may import; `lint-imports` checks the layers declared in pyproject.toml): `data` -> `model` ->
`train` (with `cost`) -> `evaluate` -> `report`, and `cli` above them all. At the top, what every
stage uses: `config`, `presets`, `files`, `seeding`, `i18n` (with `locale/`), `tables`, and the
`hosts` package (Colab, Kaggle).
"""

import importlib
import importlib.util
import os
import sys
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


def quiet_tensorflow_import() -> None:
    """In an interactive Jupyter kernel that shows what is written to file descriptor 2 in the
    cell (ipykernel >= 6), import TensorFlow with that descriptor pointed at the kernel's own
    stderr (the terminal or log of the Jupyter server): its C++ start-up lines stay out of the
    notebook. Elsewhere, or when TensorFlow is missing or already imported, nothing happens."""
    original = getattr(sys.stderr, "_original_stdstream_copy", None)  # ipykernel's watched fd 2
    if (not isinstance(original, int) or "tensorflow" in sys.modules
            or importlib.util.find_spec("tensorflow") is None):
        return
    sys.stderr.flush()
    watched = os.dup(2)
    os.dup2(original, 2)
    try:
        import tensorflow  # noqa: F401
    finally:
        os.dup2(watched, 2)
        os.close(watched)


quiet_tensorflow_import()  # a Jupyter kernel: TensorFlow's C++ start-up lines not in the cell
