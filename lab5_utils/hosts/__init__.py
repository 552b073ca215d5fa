"""Where the lab runs: Colab (`colab`: the notebooks' setup cell, Drive, installs, where runs and
figures go) and Kaggle (`kaggle`: its input and working folders, Food-101 mounted under
/kaggle/input).

May import: `files` only (`config` asks `kaggle` where Food-101 is, so hosts sit below config).
"""

from lab5_utils import hand_on

_NAMES = {
    "storage": "colab",
    "install_requirements": "colab",
    "on_kaggle": "kaggle",
    "food101_input": "kaggle",
}
__all__ = sorted(_NAMES)
__getattr__ = hand_on(__name__, _NAMES)
