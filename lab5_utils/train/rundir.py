"""A run folder's state: whether it is finished, whether its settings match, and what a killed
run left (BackupAndRestore's backup, log rows of unfinished epochs, `best.keras` checkpoints).

`training.run_stage` asks this module whether to refuse, reuse or resume a run folder; after a
kill it cuts the logs back to the epochs the backup holds, so each epoch is logged once.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any

import keras

from lab5_utils.config import LEGACY_VALUES, NO_LEGACY_VALUE, TEST_TIME_FIELDS, LabConfig
from lab5_utils.files import atomic_write_text, read_json, remove_partial_files
from lab5_utils.train import epoch_logs

# Reusing an old run folder (`rundir.check_same_config`): fields that cannot change what a run
# learns or measures are not compared: where runs live, whether a damaged file stops the run,
# how fast the step runs (XLA, steps per call), which devices compute it (the batch is global),
# how often progress is printed, the validation cache (it holds the very pixels an uncached
# validation pass computes; tests/test_old_runs.py checks it) and where an archive is extracted.
RESULT_NEUTRAL_FIELDS = ("run_root", "strict_data", "jit_compile", "steps_per_execution",
                         "distribution", "progress_seconds", "cache_validation", "data_cache")
class RunError(RuntimeError):
    """A run cannot start or finish as asked; the message says what to do."""


def is_finished(run_dir: str | Path) -> bool:
    return (Path(run_dir) / "metrics.json").is_file()



def check_same_config(run_dir: Path, cfg: LabConfig, state: str) -> None:
    """A run made with other settings is never reused or resumed silently; one written by an
    earlier version is, when every setting that changes its results is equal (`differences`)."""
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        return
    recorded = read_json(config_path)
    changed = differences(recorded, cfg)
    if changed:
        writer = recorded.get("lab5_version")
        written = f"lab5 {writer}" if writer else "a lab5 version from before lab5_version"
        raise RunError(
            f"{run_dir} holds a {state} run made with a different configuration "
            f"({'; '.join(changed)}; its config.json was written by {written}). Re-run with the "
            "same settings to use it, use --force (force=True) to train it again, or choose "
            "another run directory (lab5 report --out DIR, lab5 train --run-dir DIR)."
        )


def differences(recorded: dict[str, Any], cfg: LabConfig, ignore: tuple[str, ...] = ()
                ) -> list[str]:
    """Each setting that changes results and differs between a run's config.json (as any
    version wrote it) and `cfg`, as "name: <the run's> in the run, <now's> now". A field the
    file lacks counts at `LEGACY_VALUES` or else its default (the value that does what
    runs did before the field existed); `RESULT_NEUTRAL_FIELDS` and `ignore` are not
    compared."""
    now = json.loads(json.dumps(cfg.to_dict()))  # JSON's types on both sides (tuples: lists)
    defaults = {f.name: f.default_factory() if f.default is dataclasses.MISSING else f.default
                for f in dataclasses.fields(LabConfig)}
    changed = []
    for name, value in now.items():
        if name in RESULT_NEUTRAL_FIELDS or name in ignore:
            continue
        if name in recorded:
            if recorded[name] != value:
                changed.append(f"{name}: {recorded[name]!r} in the run, {value!r} now")
        elif name in NO_LEGACY_VALUE:
            changed.append(f"{name}: missing in the run ({NO_LEGACY_VALUE[name]}: no value "
                           f"reproduces it), {value!r} now")
        else:
            legacy = LEGACY_VALUES.get(name, defaults[name])
            if legacy != value:
                changed.append(f"{name}: {legacy!r} in the run (a field added later: its "
                               f"config.json has none, and runs before it behaved as "
                               f"{name}={legacy!r} does), {value!r} now")
    return changed


TRAINING_FILES = ("best.keras", "tb", "history.csv")  # the log last: it marks them complete
TRAINED_IN = "trained_in.txt"  # the run whose training a run copied (`share_training`)


def share_training(run_dir: Path, cfg: LabConfig, transfer_dir: Path) -> Path | None:
    """A fresh fine-tuning run whose settings differ from a finished one beside it, started
    from the same transfer run, only in `TEST_TIME_FIELDS` is trained already: that run's
    training files (`TRAINING_FILES`) are copied in (and its name to `TRAINED_IN`), so
    `run_stage` only measures the copy at its own test-time settings. Returns the run copied
    from, or None (nothing copied)."""
    if (run_dir / "history.csv").exists():
        return None
    for other in sorted(run_dir.parent.glob("finetune_*")):
        config = other / "config.json"
        if other == run_dir or not is_finished(other) or not config.is_file() or not all(
                (other / name).exists() for name in TRAINING_FILES):
            continue
        started = read_json(other / "metrics.json").get("transfer_run")
        if started is None or Path(started).resolve() != transfer_dir.resolve():
            continue
        if not differences(read_json(config), cfg, ignore=TEST_TIME_FIELDS):
            atomic_write_text(run_dir / TRAINED_IN, other.name + "\n")
            for name in TRAINING_FILES:
                if (other / name).is_dir():
                    shutil.copytree(other / name, run_dir / name, dirs_exist_ok=True)
                else:
                    shutil.copy2(other / name, run_dir / name)
            print(f"[lab5] trained as {other.name} (only tta or test_image_size differ): its "
                  "training is reused, this run measures it at its own test-time settings",
                  flush=True)
            return other
    return None


def prepare_run_dir(run_dir: Path, cfg: LabConfig, force: bool) -> None:
    """Refuse to overwrite a finished run or to resume one made with another config."""
    if run_dir.exists() and force:
        shutil.rmtree(run_dir)
    if is_finished(run_dir):
        raise RunError(
            f"{run_dir} already holds a finished run (metrics.json). Use --force (force=True) "
            "to train it again, or choose another run directory."
        )
    check_same_config(run_dir, cfg, "unfinished")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.json", cfg.to_json() + "\n")
    except OSError as err:
        raise RunError(f"run directory {str(run_dir)!r} cannot be written: {err}") from err


def backup_epoch(backup: Path) -> int | None:
    """Finished epochs recorded by BackupAndRestore; repairs a torn metadata file from its
    `.bkp` copy, or drops the backup when neither copy is readable."""
    meta = backup / "training_metadata.json"
    for candidate in (meta, meta.with_name(meta.name + ".bkp")):
        try:
            epoch = int(read_json(candidate)["epoch"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if candidate != meta:  # the newest copy was torn by a kill: fall back to the previous
            shutil.copy(candidate, meta)
            weights = backup / "latest.weights.h5"
            shutil.copy(weights.with_name(weights.name + ".bkp"), weights)
        return epoch
    if backup.exists():
        shutil.rmtree(backup)
    return None


def keep_finished(run_dir: Path, finished: int) -> None:
    """Drop log rows and TensorBoard points of epochs >= `finished` (0-based count)."""
    epoch_logs.truncate_csv(run_dir / "history.csv", finished)
    if (run_dir / "tb").is_dir():
        epoch_logs.truncate_tensorboard(run_dir / "tb", finished)
    if not (run_dir / "backup").exists():
        return
    if (backup_epoch(run_dir / "backup") or 0) > finished:
        shutil.rmtree(run_dir / "backup")  # it holds the diverged weights


def truncate_to_backup(run_dir: Path, first_epoch: int, epochs: int) -> dict:
    """Drop log rows of epochs the backup does not hold, so a resumed run logs each epoch once.
    Without a backup, a run whose log and best.keras hold every epoch of the stage finished
    training (BackupAndRestore removes its backup then) and was killed before metrics.json.
    Returns the number of finished epochs and the best val_accuracy so far."""
    finished = backup_epoch(run_dir / "backup") or _trained_epochs(run_dir, first_epoch, epochs)
    keep_finished(run_dir, finished)
    settle_best(run_dir, finished)
    remove_partial_files(run_dir)
    best = None
    if (run_dir / "history.csv").is_file() and finished > first_epoch:
        best = float(epoch_logs.load_history(run_dir)["val_accuracy"].max())
    if finished > first_epoch:
        print(f"[lab5] resuming after epoch {finished} (backup in {run_dir / 'backup'})", flush=True)
    return {"finished": finished, "best": best}


def _trained_epochs(run_dir: Path, first_epoch: int, epochs: int) -> int:
    """`first_epoch + epochs` when training finished (every epoch logged once, best.keras and
    no partial checkpoint there), else `first_epoch`."""
    wanted = list(range(first_epoch + 1, first_epoch + epochs + 1))
    if (run_dir / "history.csv").is_file() and (run_dir / "best.keras").is_file() and not any(
            run_dir.glob(".best-*.partial.keras")):
        if list(epoch_logs.load_history(run_dir)["epoch"]) == wanted:
            return first_epoch + epochs
    return first_epoch


BEST_PARTIAL = ".best-{epoch:03d}.partial.keras"  # ModelCheckpoint fills in the epoch


def _partial_epoch(path: Path) -> int:
    return int(path.name.split(".")[1].removeprefix("best-"))


def settle_best(run_dir: Path, finished: int) -> Path | None:
    """Make best.keras agree with the epochs a resumed run keeps: promote the newest partial
    checkpoint of a finished epoch (a kill came before its rename), delete the others (a kill
    came during their save, or their epoch is trained again)."""
    partials = sorted(run_dir.glob(".best-*.partial.keras"), key=_partial_epoch)
    kept = [p for p in partials if _partial_epoch(p) <= finished][-1:]
    for path in partials:
        if path in kept:
            os.replace(path, run_dir / "best.keras")
        else:
            path.unlink()
    return run_dir / "best.keras" if kept else None


class PromoteBest(keras.callbacks.Callback):
    """ModelCheckpoint writes to a name with the epoch in it; once the epoch is backed up this
    renames it to best.keras, so a kill never leaves a half-written or unlogged best model."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__()
        self.run_dir = run_dir

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        settle_best(self.run_dir, epoch + 1)
