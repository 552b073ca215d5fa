"""The images, from source to batches: the one place that picks a source and returns `Splits`
(`splits`: tfds Food-101, image folders, the synthetic set), Food-101's official folder and
archive (`food101_files`), the demo's generated images (`synthetic`), decoding, crops and batching
(`pipeline`), the augmentations and where they run (`augment`), photo files without TensorFlow
(`photos`), the bench's generated JPEGs (`benchdata`), notebook 01's views (`views`).

May import: `model` (the recipe decides one-hot labels and the test-time size) and the top
modules (`config`, `files`, `i18n`, `tables`, `seeding`, `hosts`).
"""

from lab5_utils import hand_on

__getattr__, __all__ = hand_on(
    __name__,
    splits="Splits load_splits load_encoded DataUnavailableError",
    views="data_summary scan_examples",
)
