"""lab5_utils: the engine of lab 5 (EfficientNet-B0 on Food-101, transfer learning then fine-tuning)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ INFO lines are noise here

from lab5_utils.config import LabConfig  # noqa: E402
from lab5_utils.console import quiet_tensorflow_import  # noqa: E402

quiet_tensorflow_import()  # a Jupyter kernel: TensorFlow's C++ start-up lines not in the cell

__all__ = ["LabConfig"]
__version__ = "0.1.0"
