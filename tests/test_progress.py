"""Progress lines inside epochs, the choice between them and Keras' progress bar, and the sweep's
ETA (`lab5_utils.train.progress`)."""

import io
import re
import time

import keras
import numpy as np
import pytest

from lab5_utils.config import LabConfig
from lab5_utils.train import progress
from lab5_utils.train.progress import BAR, LINES, EpochProgress, SweepClock, epoch_eta, sweep_eta
from tests.conftest import trained_lab_output


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_or_a_watched_notebook_keeps_the_bar_and_everything_else_gets_lines(monkeypatch):
    monkeypatch.setattr(progress, "_jupyter_kernel", lambda: False)
    assert progress.verbose_mode(_Tty(), environ={}) == BAR == 1
    assert progress.verbose_mode(io.StringIO(), environ={}) == LINES == 2  # a pipe, a log file
    monkeypatch.setattr(progress, "_jupyter_kernel", lambda: True)  # a notebook someone watches
    assert progress.verbose_mode(io.StringIO(), environ={}) == BAR
    # lab5 report's kernels: papermill starts ordinary Jupyter kernels, the variable tells them
    assert progress.verbose_mode(io.StringIO(), environ={"LAB5_PROGRESS": "lines"}) == LINES
    assert progress.verbose_mode(_Tty(), environ={"LAB5_PROGRESS": "Lines "}) == LINES
    assert progress.verbose_mode(io.StringIO(), environ={"LAB5_PROGRESS": "bar"}) == BAR
    with pytest.raises(ValueError, match=r"LAB5_PROGRESS='fancy' is not valid: expected 'lines'"):
        progress.verbose_mode(io.StringIO(), environ={"LAB5_PROGRESS": "fancy"})


def test_pytest_is_not_a_jupyter_kernel():
    assert progress._jupyter_kernel() is False


def test_progress_seconds_defaults_to_a_minute_and_refuses_what_is_not_seconds():
    assert LabConfig.preset("demo").progress_seconds == 60
    assert LabConfig.preset("demo").with_settings(["progress_seconds=0"]).progress_seconds == 0
    for bad in (-1, float("nan"), float("inf"), True, "often"):
        with pytest.raises(ValueError, match=r"^progress_seconds=.* is not valid: expected a "
                                             r"number of seconds >= 0 \(0 turns the lines off\)"):
            LabConfig.preset("demo", progress_seconds=bad)


def test_a_run_made_with_other_progress_seconds_is_the_same_run(tmp_path):
    from lab5_utils.train.rundir import RunError, check_same_config

    cfg = LabConfig.preset("demo")
    (tmp_path / "config.json").write_text(cfg.replace(progress_seconds=5).to_json())
    check_same_config(tmp_path, cfg, "unfinished")  # no error: it changes no result
    (tmp_path / "config.json").write_text(cfg.replace(seed=1).to_json())
    with pytest.raises(RunError, match="seed: 1 in the run, 42 now"):
        check_same_config(tmp_path, cfg, "unfinished")


def test_the_callback_is_added_only_for_lines_and_seconds_above_zero():
    assert [type(c) for c in progress.epoch_callbacks(LINES, 60, 16)] == [EpochProgress]
    assert progress.epoch_callbacks(LINES, 0, 16) == []  # 0 turns it off
    assert progress.epoch_callbacks(BAR, 60, 16) == []  # Keras' bar already moves
    assert progress.epoch_callbacks(0, 60, 16) == []  # silent


def test_eta_of_the_epoch_and_of_the_stage():
    # 8 of 10 steps at 0.5 steps/s: 4 s of training left; validation not timed yet
    assert epoch_eta(8, 10, 0.5, epochs_left=2) == (4.0, 4.0 + 2 * 20.0)
    # validation timed at 5 s: in this epoch and in every later one
    assert epoch_eta(8, 10, 0.5, 2, validation_s=5.0) == (9.0, 9.0 + 2 * 25.0)
    # a finished epoch took 30 s: later epochs are as long as that one
    assert epoch_eta(8, 10, 0.5, 2, validation_s=5.0, last_epoch_s=30.0) == (9.0, 69.0)
    assert epoch_eta(10, 10, 2.0, 0, validation_s=1.0) == (1.0, 1.0)  # the last epoch's end
    assert epoch_eta(3, None, 1.0, 2) == (None, None)  # steps per epoch unknown


def _drive(callback, clock, events):
    """Replay `events` (time, method, argument) on `callback` the way `fit` calls it."""
    for at, method, arg in events:
        clock[0] = at
        getattr(callback, method)(*([] if arg is None else [arg]))


def test_lines_at_most_every_progress_seconds_with_several_steps_per_execution():
    """A fake clock: 3 epochs of 10 steps, 2 steps per execution (Keras calls back once per
    execution, with its last step's index), batch 8, a line at most every 10 s."""
    clock, lines = [0.0], []
    callback = EpochProgress(10, 8, clock=lambda: clock[0], write=lines.append)
    callback.set_params({"epochs": 3, "steps": 10, "verbose": 2})
    events = [(0, "on_epoch_begin", 0), (20, "on_train_batch_end", 1),  # tracing: 20 s
              (24, "on_train_batch_end", 3), (28, "on_train_batch_end", 5),
              (32, "on_train_batch_end", 7), (36, "on_train_batch_end", 9),
              (36, "on_test_begin", None), (41, "on_test_end", None), (41, "on_epoch_end", 0),
              (41, "on_epoch_begin", 1), (43, "on_train_batch_end", 1),
              (45, "on_train_batch_end", 3), (47, "on_train_batch_end", 5),
              (49, "on_train_batch_end", 7), (51, "on_train_batch_end", 9)]
    _drive(callback, clock, events)
    assert lines == [
        # the first execution: the rate so far (2 steps in 20 s, tracing included)
        "[lab5] epoch 1/3, step 2/10: 0.8 images/s; epoch ETA 1:20 (+ validation, not timed "
        "yet), stage ETA 4:40",
        # 12 s later: 6 steps in 12 s after the first execution, 0.5 steps/s; 2 steps left;
        # each later epoch guessed at 10 steps / 0.5 = 20 s
        "[lab5] epoch 1/3, step 8/10: 4.0 images/s; epoch ETA 0:04 (+ validation, not timed "
        "yet), stage ETA 0:44",
        # epoch 2: 1 step/s, validation timed at 5 s; the first epoch (41 s, tracing) is not
        # used, the last epoch is guessed at 10 s + 5 s
        "[lab5] epoch 2/3, step 10/10: 8.0 images/s; epoch ETA 0:05 (validation 0:05 "
        "included), stage ETA 0:20"]
    assert callback.epoch_seconds == [41] and callback.validation_s == 5


def test_model_fit_prints_lines_inside_its_epochs():
    """A real `fit` (a tiny model, 2 steps per execution, a pause in each execution so the
    epoch lasts about half a second) with lines every 0.05 s."""
    stamped = []
    callback = EpochProgress(0.05, 4, write=lambda line: stamped.append((time.monotonic(), line)))

    class Pause(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            time.sleep(0.02)

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  steps_per_execution=2)
    x, y = np.zeros((160, 3), np.float32), np.zeros(160, np.int32)
    model.fit(x, y, batch_size=4, epochs=2, validation_data=(x[:8], y[:8]), verbose=0,
              callbacks=[Pause(), callback])
    pattern = re.compile(r"\[lab5\] epoch (\d)/2, step (\d+)/40: ([\d.]+) images/s; epoch ETA "
                         r"\d+:\d\d \((.*)\), stage ETA \d+:\d\d$")
    parsed = [pattern.match(line) for _, line in stamped]
    assert all(parsed), [line for _, line in stamped]
    epochs = [int(m.group(1)) for m in parsed]
    assert epochs.count(1) >= 3 and epochs.count(2) >= 3 and epochs == sorted(epochs)
    assert all(int(m.group(2)) % 2 == 0 for m in parsed)  # once per execution of 2 steps
    assert all(float(m.group(3)) > 0 for m in parsed)
    assert {m.group(4) for m in parsed if m.group(1) == "1"} == {"+ validation, not timed yet"}
    assert all(m.group(4).startswith("validation 0:00") for m in parsed if m.group(1) == "2")
    gaps = np.diff([t for t, _ in stamped])
    assert (gaps >= 0.05 * 0.9).all()  # at most one line every progress_seconds
    assert len(callback.epoch_seconds) == 2 and callback.validation_s > 0


@pytest.mark.slow
def test_run_stage_prints_progress_lines_inside_its_epochs(trained_lab):
    """Reads what the shared tiny training (`trained_lab`, trained through `run_stage` with
    `verbose=2` and `progress_seconds=0.05`) printed: slow because it needs that training."""
    cfg, transfer, _ = trained_lab
    output = trained_lab_output(cfg)
    steps = transfer.metrics["steps_per_epoch"]
    lines = [line for line in output.splitlines() if re.match(r"\[lab5\] epoch \d+/\d+, step", line)]
    last = cfg.transfer_epochs + cfg.finetune_epochs
    seen = {line.split(",")[0] for line in lines}
    assert {f"[lab5] epoch {e}/{cfg.transfer_epochs}" for e in range(1, cfg.transfer_epochs + 1)
            } <= seen
    assert f"[lab5] epoch {last}/{last}" in seen  # fine-tuning continues the numbering
    assert all(f"/{steps}: " in line and "images/s; epoch ETA" in line for line in lines)
    later = [line for line in lines if line.startswith("[lab5] epoch 2/")]
    assert later and all("(validation 0:0" in line for line in later)  # timed in epoch 1


# --- the sweep ---------------------------------------------------------------------------------
def test_sweep_eta_runs_what_is_left_in_the_free_slots():
    # 2 finished runs took 100 and 200 s (mean 150); one runs since 50 s, 3 wait, 2 at a time:
    # slots end at 100 and 0, then 150, 250 and 300
    assert sweep_eta([100, 200], pending=3, running_s=[50], jobs=2) == 300
    assert sweep_eta([100], pending=0, running_s=[130, 40], jobs=2) == 60  # the longer one
    assert sweep_eta([100], pending=2, running_s=[], jobs=1) == 200  # one at a time
    assert sweep_eta([100], pending=0, running_s=[250], jobs=1) == 0  # overdue: no negative
    assert sweep_eta([], pending=2, running_s=[10], jobs=2) is None  # nothing measured yet


def test_the_sweep_clock_prints_the_eta_after_each_run():
    clock = [0.0]
    sweep = SweepClock(jobs=2, clock=lambda: clock[0])
    for name in ("lr=1e-3", "lr=1e-4", "lr=1e-5"):
        sweep.queued(name)
    sweep.started("01_data_exploration")  # never queued: not a run of the sweep
    assert sweep.finished("01_data_exploration", counted=True) is None
    sweep.started("lr=1e-3"), sweep.started("lr=1e-4")
    clock[0] = 100
    text = sweep.finished("lr=1e-3", counted=True)
    # lr=1e-4 is due now (100 s like the first), lr=1e-5 takes 100 s after it
    assert text == ("sweep ETA: about 1:40 until the 2 run(s) left finish (1:40 a run so far, "
                    "mean of 1; 2 at a time), then the analysis")
    sweep.started("lr=1e-5")
    clock[0] = 120
    text = sweep.finished("lr=1e-4", counted=True)  # mean 110; lr=1e-5 has run 20 s of it
    assert text.startswith("sweep ETA: about 1:30 until the 1 run(s) left finish (1:50 a run")
    clock[0] = 121
    assert sweep.finished("lr=1e-5", counted=False) is None  # nothing left
    assert sweep.seconds == [100, 120]  # a reused or failed run does not count


def test_lab5_help_still_starts_without_keras():
    """`lab5 --help` and the report's argument checks must not wait for TensorFlow: the report
    imports this module only when it runs."""
    import subprocess
    import sys

    code = ("import sys, lab5_utils.cli, lab5_utils.report.build, lab5_utils.cost.bench; "
            "lab5_utils.cli.build_parser(); print('keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_report_prints_the_sweep_eta_after_each_fine_tuning_run(tmp_path, monkeypatch, capsys):
    """`lab5 report`'s sweep with papermill stood in (each notebook 'runs' 0.2 s): after each
    fine-tuning run but the last, one ETA line."""
    import nbformat
    import papermill

    from lab5_utils.config import lab_config
    from lab5_utils.report import execute
    from lab5_utils.train.sweep import sweep_runs

    def fake_execute(source, target, **kwargs):
        time.sleep(0.2)
        nbformat.write(nbformat.v4.new_notebook(), target)

    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    nbformat.write(nbformat.v4.new_notebook(), tmp_path / "03_fine_tuning.ipynb")
    cfg = lab_config("demo", run_root=str(tmp_path / "runs"))
    sweep = execute.NotebookExecutor(cfg, tmp_path / "out", tmp_path, tmp_path / "figures",
                                     time.time(), jobs=2, reuse=False)
    jobs = [execute.finetune_job(i, run)
            for i, run in enumerate(sweep_runs([1e-3, 1e-4, 1e-5]), start=1)]
    futures = [sweep.submit(job, {"learning_rate": job.lr}) for job in jobs]
    assert [f.result().status for f in futures] == ["done"] * 3
    etas = [line for line in capsys.readouterr().out.splitlines() if "sweep ETA" in line]
    assert len(etas) == 2, etas
    assert "until the 2 run(s) left finish" in etas[0] and "2 at a time" in etas[0]
    assert "until the 1 run(s) left finish" in etas[1]
