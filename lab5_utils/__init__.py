"""lab5_utils: the engine of lab 5 (EfficientNet-B0 on Food-101, transfer learning then fine-tuning)."""

from lab5_utils.config import LabConfig

__all__ = ["LabConfig"]
__version__ = "0.1.0"
