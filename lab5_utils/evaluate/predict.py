"""`lab5 predict`: the top-k classes of image files and folders, optionally with Grad-CAM
overlays. Files are checked (`photos.image_problem`), turned upright (EXIF orientation) and
preprocessed exactly as validation images are (`pipeline.model_input`); the model is applied at
its run's test-time settings (`tta`, `test_image_size`, from `config.json` beside it), as the
run's validation and test were measured, unless `test_time=False`."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lab5_utils.config import LabConfig
from lab5_utils.data.photos import exif_orientation, image_problem


@dataclass
class FilePrediction:
    """One image's top classes (name, probability), best first, and its overlay, if written."""

    path: str
    ranked: list[tuple[str, float]]
    overlay: str | None = None


def class_names_for(model_path: str | Path) -> list[str] | None:
    """The class names saved beside a run's model (`class_names.json`), if any."""
    path = Path(model_path).with_name("class_names.json")
    return json.loads(path.read_text()) if path.is_file() else None


def test_time_settings(model_path: str | Path, image_size: int) -> dict | None:
    """The test-time settings of the run a model was saved in (`config.json` beside it) for a
    model trained at `image_size`: {"tta", "test_image_size"}, or None without a config."""
    path = Path(model_path).with_name("config.json")
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    return {"tta": saved.get("tta", "none"),
            "test_image_size": saved.get("test_image_size") or image_size}


def image_files(paths: Iterable[str | Path]) -> tuple[list[Path], list[tuple[str, str]]]:
    """The files to predict: each file as given, each folder's files recursively (sorted,
    hidden files left out, as in folder datasets); (path, reason) for what does not exist."""
    files, problems = [], []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        elif path.is_file():
            files.append(path)
        else:
            problems.append((str(path), "no such file or folder"))
    return files, problems


def overlay_targets(files: list[Path], out_dir: str | Path, force: bool = False) -> list[Path]:
    """`out_dir/<stem>.png` for each image; a stem met again gets `-2`, `-3`, ... in input order.
    Refuses (ValueError) to replace existing files unless `force`."""
    out_dir, taken, targets = Path(out_dir), set(), []
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--explain {out_dir}: is a file; expected a folder (created if missing).")
    for f in files:
        name, n = f"{f.stem}.png", 1
        while name.lower() in taken:  # lower: case-insensitive file systems
            n += 1
            name = f"{f.stem}-{n}.png"
        taken.add(name.lower())
        targets.append(out_dir / name)
    existing = [t.name for t in targets if t.exists()]
    if existing and not force:
        raise ValueError(
            f"--explain {out_dir}: {len(existing)} overlay file(s) already exist there "
            f"({', '.join(existing[:3])}{', ...' if len(existing) > 3 else ''}). Choose another "
            "folder, or add --force to replace them."
        )
    return targets


def predict_files(
    model_path: str | Path, paths: Iterable[str | Path], top: int = 5,
    explain_dir: str | Path | None = None, force: bool = False, batch_size: int = 16,
    test_time: bool = True,
) -> tuple[list[FilePrediction], list[tuple[str, str]]]:
    """Top-`top` (class, probability) of each image file (folders: their files, recursively),
    at the run's test-time settings (`test_time_settings`; `test_time=False`: one pass at the
    training size). Files that are not images or cannot be decoded are reported as (path,
    reason) in the second list; the others still run. With `explain_dir`, a Grad-CAM overlay
    of the top class on each photo as displayed goes to `explain_dir/<stem>.png` (see
    `overlay_targets`), from the model at the size it predicts at."""
    from lab5_utils.model import network

    if top < 1:
        raise ValueError(f"--top={top} is not valid: expected an integer >= 1.")
    files, problems = image_files(paths)
    usable = []
    for path in files:
        problem = image_problem(path)
        if problem is None:
            usable.append(path)
        else:
            problems.append((str(path), problem))
    targets = overlay_targets(usable, explain_dir, force) if explain_dir is not None else None
    model = network.load_model(model_path)
    settings = test_time_settings(model_path, int(model.input_shape[1])) if test_time else None
    if settings:  # the run's evaluation: one function for validation, test and here
        cfg = LabConfig(image_size=int(model.input_shape[1]), **settings)
        model = network.with_input_size(model, cfg, settings["test_image_size"])  # for Grad-CAM
        scored = network.at_test_time(model, cfg)
    else:
        scored = model
    size = int(model.input_shape[1])
    names = class_names_for(model_path) or [f"class {i}" for i in range(model.output_shape[-1])]
    results = []
    for chunk in _chunks(list(zip(usable, targets or [None] * len(usable))), batch_size):
        decoded = []
        for path, target in chunk:
            try:
                decoded.append((path, target, *_read(path, size)))
            except _DecodeError as err:
                problems.append((str(path), f"cannot be decoded ({err})"))
        if not decoded:
            continue
        images = np.stack([d[2] for d in decoded])
        probs = np.asarray(scored(images, training=False), np.float32)
        if targets is not None:
            _write_overlays(model, images, probs.argmax(axis=1), decoded)
        for (path, target, *_), p in zip(decoded, probs):
            order = np.argsort(-p)[:top]
            ranked = [(names[i], float(p[i])) for i in order]
            results.append(FilePrediction(str(path), ranked, str(target) if target else None))
    return results, problems


class _DecodeError(Exception):
    pass


def _read(path: Path, size: int):
    """(model input uint8 [size, size, 3], encoded bytes, EXIF orientation) of an image file."""
    import tensorflow as tf

    from lab5_utils.data.pipeline import model_input

    orientation = exif_orientation(path)
    try:
        encoded = tf.io.read_file(str(path))
        return model_input(encoded, size, orientation).numpy(), encoded, orientation
    except tf.errors.OpError as err:
        reason = re.sub(r"\{\{.*?\}\}|\[Op:.*", "", err.message).strip()  # TF's op names
        raise _DecodeError(reason.splitlines()[0] if reason else type(err).__name__) from None


def _write_overlays(model, images: np.ndarray, classes: np.ndarray, decoded: list) -> None:
    from lab5_utils.evaluate.gradcam import displayed_photo, gradcam, overlay, save_png

    for heatmap, (_, target, _, encoded, orientation) in zip(gradcam(model, images, classes), decoded):
        save_png(overlay(displayed_photo(encoded, orientation), heatmap), target)


def _chunks(items: list, n: int) -> Iterator[list]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def predictions_table(
    results: list[FilePrediction], problems: Iterable[tuple[str, str]] = ()
) -> pd.DataFrame:
    """One row per image: path, class_1, prob_1, ... class_k, prob_k (and overlay, when
    written), then one row per file that could not be read, its reason in `error`."""
    rows = []
    for r in results:
        row = {"path": r.path}
        for i, (name, prob) in enumerate(r.ranked, 1):
            row[f"class_{i}"], row[f"prob_{i}"] = name, round(prob, 6)
        if r.overlay:
            row["overlay"] = r.overlay
        rows.append(row)
    table = pd.DataFrame(rows)
    failed = pd.DataFrame(list(problems), columns=["path", "error"])
    return pd.concat([table, failed], ignore_index=True) if len(failed) else table


def predictions_text(results: list[FilePrediction]) -> str:
    """The terminal table: one line per image, its top classes as "name (87.1%)", its overlay."""
    k = max(len(r.ranked) for r in results)
    header = ["image", *(f"top-{i}" for i in range(1, k + 1))]
    rows = [[r.path, *(f"{name} ({prob:.1%})" for name, prob in r.ranked)] for r in results]
    rows = [row + [""] * (k + 1 - len(row)) for row in rows]
    if any(r.overlay for r in results):
        header.append("overlay")
        rows = [row + [r.overlay or ""] for row, r in zip(rows, results)]
    widths = [max(map(len, column)) for column in zip(header, *rows)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
                     for row in [header, *rows])
