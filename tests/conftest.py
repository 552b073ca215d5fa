"""Shared fixtures: quiet TensorFlow, a headless matplotlib, and one tiny trained lab.

Tests come in two tiers. `make test` runs the fast one (`-m "not slow"`): units, every bad-input
check, small integrations. A test that trains a model, runs a notebook or spawns a process is
marked `@pytest.mark.slow`, and its docstring says why it cannot be fast; `make test-slow` runs
those and `make test-all` both. See README, "Tests".
"""

import contextlib
import io
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402

from lab5_utils.config import LabConfig  # noqa: E402
from lab5_utils.files import file_lock  # noqa: E402


def tiny_config(tmp_path, **overrides) -> LabConfig:
    """The demo preset shrunk for tests: still learnable, a few seconds per epoch."""
    values = dict(image_size=64, batch_size=16, transfer_epochs=3, finetune_epochs=1,
                  synthetic_train_per_class=16, synthetic_val_per_class=6, synthetic_test_per_class=6,
                  num_classes=5,
                  calibration_images=64, run_root=str(tmp_path / "runs"))
    values.update(overrides)
    return LabConfig.preset("demo", **values)


@pytest.fixture(scope="session")
def trained_lab(tmp_path_factory):
    """Transfer then finetune on the tiny demo config, trained once for the whole test run: the
    first pytest-xdist worker that needs it trains it, in a folder all workers share, while the
    others wait for it and read the finished runs back (`run_stage(reuse=True)`). It trains with
    `verbose=2` and `progress_seconds=0.05`; what it printed is `trained_lab_output(cfg)`."""
    from lab5_utils.train.training import run_stage

    if not os.environ.get("PYTEST_XDIST_WORKER"):  # not under xdist: the only process
        root, lock = tmp_path_factory.mktemp("lab"), contextlib.nullcontext()
    else:
        root = tmp_path_factory.getbasetemp().parent / "trained_lab"
        lock = file_lock(root.with_name("trained_lab.lock"))
    with lock:
        cfg = tiny_config(root, progress_seconds=0.05)
        output = root / "output.txt"
        if not output.is_file():
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                for stage in ("transfer", "finetune"):
                    run_stage(cfg, stage, verbose=2)
            output.write_text(printed.getvalue())
        transfer = run_stage(cfg, "transfer", reuse=True, verbose=0)
        finetune = run_stage(cfg, "finetune", reuse=True, verbose=0)
    return cfg, transfer, finetune


def trained_lab_output(cfg: LabConfig) -> str:
    """What the training of `trained_lab` printed (Keras' lines and lab5's progress lines)."""
    return (Path(cfg.run_root).parent / "output.txt").read_text()


# Food-101's official layout in miniature: classes.txt deliberately not in alphabetical order
FOOD_CLASSES = ("pizza", "apple_pie", "sushi")


def write_official_food101(parent: Path, train: int = 10, test: int = 4, seed: int = 0) -> Path:
    """`parent/food-101/` as Food-101's archive holds it: `images/<class>/<id>.jpg` (learnable
    generated JPEGs) and `meta/{classes,train,test}.txt`, `train` + `test` images a class."""
    from lab5_utils.data.synthetic import synthetic_images

    root = parent / "food-101"
    (root / "meta").mkdir(parents=True)
    images, labels = synthetic_images(len(FOOD_CLASSES), train + test, seed)
    lists: dict[str, list[str]] = {"train": [], "test": []}
    counts = dict.fromkeys(range(len(FOOD_CLASSES)), 0)
    for data, label in zip(images, labels):
        name = FOOD_CLASSES[label]
        (root / "images" / name).mkdir(parents=True, exist_ok=True)
        entry = f"{name}/{100 + 7 * counts[label]}"
        (root / "images" / f"{entry}.jpg").write_bytes(data)
        lists["train" if counts[label] < train else "test"].append(entry)
        counts[label] += 1
    (root / "meta" / "classes.txt").write_text("\n".join(FOOD_CLASSES) + "\n")
    for split, entries in lists.items():
        (root / "meta" / f"{split}.txt").write_text("\n".join(entries) + "\n")
    return root


def write_archive(folder: Path, archive: Path) -> Path:
    """`folder` packed as `archive` (tar.gz), its top folder named as in the archive."""
    import tarfile

    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return archive
