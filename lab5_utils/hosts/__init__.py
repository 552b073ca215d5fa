"""Where the lab runs: Colab (`colab`: the notebooks' setup cell, Drive, installs, where runs and
figures go) and Kaggle (`kaggle`: its input and working folders, Food-101 mounted under
/kaggle/input).

May import: `files` only (`config` asks `kaggle` where Food-101 is, so hosts sit below config).
"""

from lab5_utils import hand_on

__getattr__, __all__ = hand_on(
    __name__,
    colab="storage install_requirements",
    kaggle="on_kaggle food101_input",
)
