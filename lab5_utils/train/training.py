"""`run_stage`: one resumable training run (transfer or finetune) in its own run directory.

A run directory holds `config.json`, `class_names.json`, `history.csv` (Keras CSVLogger),
`tb/` (TensorBoard, with one HParams session), `best.keras` (best val_accuracy: chosen on the
validation split), `test_predictions.npz` (that model on the test split, per image),
`metrics.json` (written last: its presence means "finished") and, while the run is unfinished,
`backup/` (Keras BackupAndRestore). The test split is read once, after training.
"""

from __future__ import annotations

import math
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import keras
import pandas as pd

from lab5_utils import seeding
from lab5_utils.config import LabConfig, check_learning_rate
from lab5_utils.cost import speed
from lab5_utils.cost.resources import TrainingMemory, optimizer_state_mb
from lab5_utils.data import augment
from lab5_utils.data.splits import (
    load_encoded,
    load_splits,
    naming_undecodable_files,
    test_time_validation,
)
from lab5_utils.evaluate import scoring
from lab5_utils.files import atomic_write_json, read_json
from lab5_utils.model import distribute, network, recipe
from lab5_utils.model.schedules import (
    LearningRateLogger,
    LRFinderResult,
    find_lr,
    make_schedule,
    schedule_callbacks,
)
from lab5_utils.train import epoch_logs, progress, rundir
from lab5_utils.train.rundir import RunError, is_finished
from lab5_utils.train.sweep import SweepRun

STAGES = ("transfer", "finetune")
__all__ = ["RunError", "RunResult", "default_run_dir", "is_finished", "lr_range_test", "run_stage"]


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict
    history: pd.DataFrame


def default_run_dir(cfg: LabConfig, stage: str, learning_rate: float | None = None) -> Path:
    """`<run_root>/transfer` or `<run_root>/finetune_lr=<lr>`."""
    if stage == "transfer":
        return Path(cfg.run_root) / "transfer"
    lr = cfg.finetune_learning_rate if learning_rate is None else learning_rate
    return SweepRun(lr).run_dir(cfg)



def stage_config(cfg: LabConfig, stage: str, learning_rate: float | None) -> LabConfig:
    """The config a stage runs with: the requested LR written into the stage's LR field."""
    if stage not in STAGES:
        raise ValueError(f"stage={stage!r} is not valid: expected one of {', '.join(STAGES)}.")
    cfg.validate()  # a field changed in place since the config was made
    if learning_rate is None:
        return cfg
    field = "learning_rate" if stage == "transfer" else "finetune_learning_rate"
    return cfg.replace(**{field: check_learning_rate(learning_rate)})


def run_stage(
    cfg: LabConfig, stage: str, learning_rate: float | None = None,
    run_dir: str | Path | None = None, force: bool = False, verbose: int | str = "auto",
    transfer_dir: str | Path | None = None, reuse: bool = False,
) -> RunResult:
    """Train one stage. Re-running the same call after a kill continues from the last finished
    epoch. A finished run is never overwritten unless `force=True`; with `reuse=True` a run
    finished with the same config is read back instead of refused (notebooks, report).
    `verbose="auto"`: Keras' progress bar or lines, as `progress.verbose_mode` decides."""
    cfg = stage_config(cfg, stage, learning_rate)
    verbose = progress.verbose_mode() if verbose == "auto" else verbose
    lr = stage_learning_rate(cfg, stage)
    run_dir = Path(run_dir or default_run_dir(cfg, stage, lr))
    transfer_dir = Path(transfer_dir or default_run_dir(cfg, "transfer"))
    # a resume keeps the run folder's augment_on (its config.json; force trains it afresh)
    recorded = None if force or not (run_dir / "config.json").is_file() else read_json(
        run_dir / "config.json")
    if reuse and not force and is_finished(run_dir):
        cfg = speed.choose_augment_on(cfg, recorded)[0]  # the recorded one: no device query
        rundir.check_same_config(run_dir, cfg, "finished")
        print(f"[lab5] reusing the finished {stage} run in {run_dir} (force retrains it)")
        return RunResult(run_dir, read_json(run_dir / "metrics.json"), epoch_logs.load_history(run_dir))
    seeding.seed_run(cfg)  # before any model or dataset exists: the same run in every process
    # The strategy first: it may split devices, which must precede TensorFlow's first use of
    # them, and a refused distribution or a batch that does not split stops before any work.
    chosen = distribute.strategy(cfg)
    distribute.check_batch_size(cfg.batch_size, distribute.replicas(chosen))
    cfg, placed = speed.choose_augment_on(cfg, recorded)
    if "measured_images_per_s" in placed:
        seeding.seed_run(cfg)  # what the measurement drew is not part of the run
    encoded = load_encoded(cfg)  # a bad dataset stops here, before the run folder
    train_ds, val_ds, test_ds, info = load_splits(cfg, encoded)
    rundir.prepare_run_dir(run_dir, cfg, force)
    if stage == "finetune":  # another value of tta or test_image_size trained it already?
        rundir.share_training(run_dir, cfg, transfer_dir)
    with chosen.scope():  # building, loading, calibration, compile, fit and the evaluations
        return _train(cfg, stage, lr, run_dir, transfer_dir, verbose,
                      (train_ds, val_ds, test_ds, info, test_time_validation(cfg, encoded)),
                      chosen, placed)


def _train(cfg: LabConfig, stage: str, lr: float, run_dir: Path, transfer_dir: Path,
           verbose: int | str, splits, chosen, placed: dict) -> RunResult:
    """`run_stage` once the run folder is ready, inside the strategy's scope."""
    train_ds, val_ds, test_ds, info, val_at_test_time = splits
    print(f"[lab5] {stage} stage, lr={lr:g}, run dir {run_dir}\n[lab5] {network.device_summary(cfg)}",
          flush=True)
    if augment.heavy(cfg.augmentations):
        print(speed.augment_on_message(placed), flush=True)
    atomic_write_json(run_dir / "class_names.json", info.class_names)
    with naming_undecodable_files(cfg):  # calibration reads training images
        model = stage_model(cfg, stage, train_ds, info.num_classes, transfer_dir)
    augment.attach(model, cfg, salt=STAGES.index(stage))  # a no-op unless augment_on=device
    if stage == "transfer":
        first_epoch, epochs = 0, cfg.transfer_epochs
    else:
        first_epoch, epochs = len(epoch_logs.load_history(transfer_dir)), cfg.finetune_epochs
    speed_choice = speed.choose_speed(cfg, model, train_ds, info.num_train)
    if speed_choice["drop_remainder"]:  # XLA would compile the step again for a short batch
        train_ds = train_ds.rebatch(cfg.batch_size, drop_remainder=True)
    steps = speed_choice["steps_per_epoch"]
    schedule = make_schedule(cfg.schedule, lr, steps, epochs, cfg.warmup_fraction)
    network.compile_model(model, schedule, jit_compile=speed_choice["jit_compile"],
                      steps_per_execution=speed_choice["steps_per_execution"], cfg=cfg)
    done = rundir.truncate_to_backup(run_dir, first_epoch, epochs)
    trained = done["finished"] == first_epoch + epochs  # killed after training, before the end
    if trained:
        shutil.rmtree(run_dir / "backup", ignore_errors=True)

    timer = _EpochTimer()
    callbacks = [
        timer, LearningRateLogger(), *schedule_callbacks(cfg.schedule, lr),
        keras.callbacks.TerminateOnNaN(),
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
        keras.callbacks.TensorBoard(str(run_dir / "tb"), write_graph=False),
        # EMA: the averaged weights are swapped in for validation and for what follows it
        # (best.keras, the backup); `recipe.SwapEMAWeights` undoes that on resume
        *recipe.ema_callbacks(cfg, run_dir / "backup"),
        keras.callbacks.ModelCheckpoint(
            str(run_dir / rundir.BEST_PARTIAL), monitor="val_accuracy", mode="max",
            save_best_only=True, initial_value_threshold=done["best"],
        ),
        # After the logs and the checkpoint, so an epoch counts as finished only once it is
        # logged everywhere; best.keras is promoted after it (`rundir.settle_best` on resume).
        keras.callbacks.BackupAndRestore(str(run_dir / "backup"), double_checkpoint=True),
        rundir.PromoteBest(run_dir),
        *progress.epoch_callbacks(verbose, cfg.progress_seconds, cfg.batch_size),  # lines in epochs
    ]
    start, memory = time.time(), TrainingMemory()
    with naming_undecodable_files(cfg), warnings.catch_warnings(), memory:
        # A folder dataset that drops undecodable images has no known length, so Keras warns
        # "Your input ran out of data" when each pass ends; every epoch is one whole pass.
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        if not trained:
            model.fit(train_ds, validation_data=val_ds, initial_epoch=first_epoch, shuffle=False,
                      epochs=first_epoch + epochs, callbacks=callbacks, verbose=verbose)
    history = epoch_logs.load_history(run_dir)
    losses = history.reindex(columns=["loss", "val_loss"]).astype(float)
    good = losses.apply(lambda c: c.map(math.isfinite)).all(axis=1)
    if not good.all() or len(history) < epochs:
        rundir.keep_finished(run_dir, first_epoch + int(good.cummin().sum()))
        raise RunError(
            f"Training stopped in {run_dir}: the loss became NaN or infinite after "
            f"{int(good.cummin().sum())} finished epoch(s) of this stage. The learning rate "
            f"{lr:g} is probably too high; try {lr / 10:g} (with --force, or another run "
            "directory). The finished epochs are kept in history.csv and tb/."
        )
    wall = time.time() - start
    with naming_undecodable_files(cfg):
        val, test = _evaluate_selected(model, run_dir, history, (val_at_test_time, test_ds),
                                       info.class_names, trained or cfg.ema, cfg)
    metrics = _metrics(cfg, stage, lr, model, history, timer, wall,
                       transfer_dir if stage == "finetune" else None, memory, info, test, chosen)
    metrics |= speed.speed_metrics(speed_choice, cfg.batch_size, info.num_train, metrics)
    metrics |= {"test_time_val_accuracy": val, "test_time": recipe.test_time_text(
        cfg.tta, recipe.test_image_size(cfg)), "image_size": cfg.image_size,
        "augment_on": placed}
    metrics["split_of"]["test_time_val_accuracy"] = "validation"
    if trained and (run_dir / rundir.TRAINED_IN).is_file():  # trained by another run: its figures
        metrics |= _training_measurements(run_dir)
    epoch_logs.write_hparams(run_dir / "tb", run_dir.name, _hparams(cfg, stage, lr), {
        "selected_val_accuracy": metrics["best_val_accuracy"], "test_time_val_accuracy": val,
        "test_accuracy": test.top1, "test_top5": test.top5, "test_loss": test.loss})
    atomic_write_json(run_dir / "metrics.json", metrics)
    print(f"[lab5] {stage} done: best val accuracy {metrics['best_val_accuracy']:.2%} at epoch "
          f"{metrics['best_epoch']} (the model kept); at test time ({metrics['test_time']}) "
          f"{val:.2%} on validation and {test.top1:.2%} on {test.num_examples} test images; "
          f"run dir {run_dir}", flush=True)
    return RunResult(run_dir, metrics, history)


def stage_learning_rate(cfg: LabConfig, stage: str) -> float:
    return cfg.learning_rate if stage == "transfer" else cfg.finetune_learning_rate


def stage_model(cfg: LabConfig, stage: str, train_ds, num_classes: int,
                transfer_dir: str | Path | None = None) -> keras.Model:
    """The model a stage starts from: a new model with its base frozen (transfer; BatchNorm
    re-estimated first for `weights="calibrated"`) or the transfer run's best model unfrozen
    as `cfg.unfreeze` says (finetune)."""
    if stage == "finetune":
        path = Path(transfer_dir or default_run_dir(cfg, "transfer"))
        return network.unfreeze(_load_transfer_model(path, cfg, num_classes), cfg.unfreeze)
    model = network.build_model(cfg, num_classes)
    if cfg.weights == "calibrated":
        used = network.calibrate_batchnorm(model, train_ds, cfg.calibration_images)
        print(f"[lab5] BatchNorm statistics re-estimated on {used} training images", flush=True)
    return network.freeze_base(model)


def lr_range_test(cfg: LabConfig, stage: str, steps: int = 100) -> LRFinderResult:
    """`schedules.find_lr` on the model the stage would start from (nothing is saved)."""
    seeding.seed_run(cfg)
    chosen = distribute.strategy(cfg)
    distribute.check_batch_size(cfg.batch_size, distribute.replicas(chosen))
    # the range test sees training images only, augmented in the pipeline (it trains a copy)
    train_ds, _, _, info = load_splits(cfg.replace(augment_on="pipeline"))
    with chosen.scope(), naming_undecodable_files(cfg):
        return find_lr(stage_model(cfg, stage, train_ds, info.num_classes), train_ds, steps=steps,
                       loss=recipe.make_loss(cfg))


def _load_transfer_model(transfer_dir: Path, cfg: LabConfig, num_classes: int) -> keras.Model:
    path = transfer_dir / "best.keras"
    if not path.is_file():
        raise RunError(
            f"Fine-tuning starts from the transfer run's model {path}, which does not exist. "
            f"Create it first: lab5 train --stage transfer --preset {cfg.preset_name}"
            + (f" --run-dir {transfer_dir}" if transfer_dir != default_run_dir(cfg, "transfer")
               else "")
        )
    network.set_precision(cfg)  # the policy the model is rebuilt with (its layers keep their own)
    model = network.load_model(path)
    if int(model.output_shape[-1]) != num_classes:
        raise RunError(
            f"The transfer model {path} predicts {model.output_shape[-1]} classes but the dataset "
            f"{cfg.dataset!r} has {num_classes}. Train the transfer stage on the same dataset."
        )
    return model


class _EpochTimer(keras.callbacks.Callback):
    """Seconds and training steps (global batches) of every epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []
        self.steps: list[int] = []

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start, self._steps = time.time(), 0

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._steps = batch + 1  # with steps_per_execution > 1, Keras calls once per execution

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.seconds.append(time.time() - self._start)
        self.steps.append(self._steps)


def _evaluate_selected(model: keras.Model, run_dir: Path, history: pd.DataFrame, datasets,
                       class_names: list[str], reload: bool, cfg: LabConfig
                       ) -> tuple[float, scoring.Evaluation]:
    """The selected model (best val_accuracy, as in best.keras) at its test-time settings
    (`network.at_test_time`): its validation accuracy, then its test evaluation, whose per-image
    predictions are saved. `datasets`: (validation at the test size, test). When the test-time
    settings are the training ones, validation's own number of the kept epoch is that accuracy.
    The model is `best.keras` already when the best epoch was the last one trained (unless
    `reload`, as with EMA: best.keras holds the averaged weights that were validated);
    otherwise its weights are loaded from there."""
    best = history.loc[history["val_accuracy"].idxmax()]
    if reload or int(best["epoch"]) != int(history["epoch"].max()):
        model.load_weights(str(run_dir / "best.keras"))
    tested = network.at_test_time(model, cfg)
    validation, test_ds = datasets
    if recipe.trains_as_it_tests(cfg):
        val = float(best["val_accuracy"])
    else:
        seen = scoring.collect_predictions(tested, validation, keep_images=0)
        val = float(seen.correct.mean())
    predictions = scoring.collect_predictions(tested, test_ds, keep_images=0)
    scoring.save_predictions(run_dir / scoring.PREDICTIONS_FILE, predictions)
    return val, scoring.evaluate_predictions(predictions.y_true, predictions.probs, class_names)


def _training_measurements(run_dir: Path) -> dict:
    """What a run that copied another's training (`rundir.share_training`) reports of it: its
    per-epoch time, memory and speed, and its name."""
    trained_in = run_dir.parent / (run_dir / rundir.TRAINED_IN).read_text().strip()
    measured = read_json(trained_in / "metrics.json")
    keys = ("seconds_per_epoch", "first_epoch_seconds", "training_memory_mb", "memory_kind",
            "steps_per_epoch", "train_images_per_s", "jit_compile", "jit_probe",
            "steps_per_execution")
    return {k: measured[k] for k in keys if k in measured} | {"trained_in": trained_in.name}


def _hparams(cfg: LabConfig, stage: str, lr: float) -> dict:
    """What the HParams dashboard compares between the runs of a sweep."""
    return {"stage": stage, "learning_rate": lr, "unfreeze": "none" if stage == "transfer"
            else cfg.unfreeze, "schedule": cfg.schedule, "weights": str(cfg.weights),
            "image_size": cfg.image_size, "batch_size": cfg.batch_size,
            "epochs": cfg.transfer_epochs if stage == "transfer" else cfg.finetune_epochs,
            **recipe.hparams(cfg)}


def _metrics(cfg: LabConfig, stage: str, lr: float, model: keras.Model, history: pd.DataFrame,
             timer: _EpochTimer, wall: float, transfer_dir: Path | None,
             memory: TrainingMemory, info, test: scoring.Evaluation, chosen) -> dict:
    """metrics.json: `split_of` says which split each number comes from; `distribution` and
    `replicas` what the run trained on (`steps_per_epoch` counted, not computed)."""
    epoch_seconds = timer.seconds
    best = history.loc[history["val_accuracy"].idxmax()]
    last = history.iloc[-1]
    params = network.trainable_summary(model)
    return {
        "stage": stage, "learning_rate": lr, "schedule": cfg.schedule,
        "epochs": len(history), "first_epoch": int(history["epoch"].min()),
        "last_epoch": int(history["epoch"].max()),
        "best_val_accuracy": float(best["val_accuracy"]), "best_epoch": int(best["epoch"]),
        "final_val_accuracy": float(last["val_accuracy"]), "final_val_loss": float(last["val_loss"]),
        "final_accuracy": float(last["accuracy"]),
        "trainable_params": params["trainable"], "non_trainable_params": params["non_trainable"],
        # the first epoch of a process includes graph tracing: leave it out when there are more
        "seconds_per_epoch": float(pd.Series(epoch_seconds[1:] or epoch_seconds).median())
        if epoch_seconds else None,
        "first_epoch_seconds": epoch_seconds[0] if epoch_seconds else None,
        "wall_time_s": wall, "training_memory_mb": memory.mb, "memory_kind": memory.kind,
        "optimizer_state_mb": optimizer_state_mb(params["trainable"]),
        "ema_state_mb": params["trainable"] * 4 / 2**20 if cfg.ema else 0.0,  # float32 averages
        "recipe": recipe.recipe_dict(cfg),
        "steps_per_epoch": timer.steps[-1] if timer.steps else None,
        "device": network.device_summary(cfg), "distribution": distribute.strategy_name(chosen),
        "replicas": distribute.replicas(chosen), "weights": cfg.weights, "unfreeze": cfg.unfreeze,
        "transfer_run": str(transfer_dir) if transfer_dir else None,
        "selected_on": "validation", "selected_epoch": int(best["epoch"]),
        "test_accuracy": test.top1, "test_top5": test.top5, "test_loss": test.loss,
        "num_train": info.num_train, "num_val": info.num_val, "num_test": test.num_examples,
        "split_rule": info.split_rule, "data_source": info.source, "official_test": info.official_test,
        "split_of": {"final_accuracy": "train", "best_val_accuracy": "validation",
                     "final_val_accuracy": "validation", "final_val_loss": "validation",
                     "test_accuracy": "test", "test_top5": "test", "test_loss": "test"},
    }
