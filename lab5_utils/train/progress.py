"""Signs of life during long runs: Keras' progress bar or lines, progress inside an epoch, and the
sweep's ETA.

Keras' progress bar (`verbose=1`) redraws one line: right in a terminal or a notebook someone is
watching, but a log file, a pipe or a notebook executed by papermill keeps every redraw. There,
training prints one line per epoch (`verbose=2`) and `EpochProgress` adds a line at most every
`progress_seconds` inside the epoch: step, images/s and the ETA of the epoch and of the stage.
`lab5 report` tells its notebook kernels (papermill starts them as ordinary Jupyter kernels) with
the environment variable `LAB5_PROGRESS=lines`; `LAB5_PROGRESS=bar` asks for the bar anywhere.
"""

from __future__ import annotations

import os
import statistics
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

import keras

from lab5_utils.tables import clock as clock_text

PROGRESS_ENV = "LAB5_PROGRESS"
BAR, LINES = 1, 2  # Keras' verbose values


def verbose_mode(stream: TextIO | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Keras' `verbose` for training: `BAR` (1) in a terminal or an interactive Jupyter kernel,
    `LINES` (2: one line per epoch, training adds `EpochProgress`) for a pipe, a log file or a
    kernel of `lab5 report`. `LAB5_PROGRESS` (`lines` or `bar`) decides first."""
    environ = os.environ if environ is None else environ
    forced = environ.get(PROGRESS_ENV, "").strip().lower()
    if forced:
        if forced not in ("lines", "bar"):
            raise ValueError(f"{PROGRESS_ENV}={forced!r} is not valid: expected 'lines', 'bar' "
                             "or unset (a progress bar in a terminal or notebook, else lines).")
        return LINES if forced == "lines" else BAR
    stream = sys.stdout if stream is None else stream
    if getattr(stream, "isatty", lambda: False)():
        return BAR
    return BAR if _jupyter_kernel() else LINES


def _jupyter_kernel() -> bool:
    """Running inside a Jupyter kernel (Colab's included)."""
    if "ipykernel" not in sys.modules:
        return False
    from ipykernel.zmqshell import ZMQInteractiveShell
    from IPython import get_ipython

    return isinstance(get_ipython(), ZMQInteractiveShell)


# --- inside an epoch ----------------------------------------------------------------------------
def epoch_eta(done: int, steps: int | None, steps_per_s: float, epochs_left: int,
              validation_s: float | None = None,
              last_epoch_s: float | None = None) -> tuple[float | None, float | None]:
    """(seconds left in this epoch, seconds left in the stage). The epoch: its training steps left
    at `steps_per_s`, plus validation as long as the last one took (unknown in the first epoch:
    not counted). The stage adds `epochs_left` epochs, each as long as the last finished one, or
    as this one is estimated without it. None when `steps` is unknown."""
    if steps is None or steps_per_s <= 0:
        return None, None
    epoch = max(steps - done, 0) / steps_per_s + (validation_s or 0.0)
    whole = last_epoch_s if last_epoch_s is not None else steps / steps_per_s + (validation_s or 0.0)
    return epoch, epoch + epochs_left * whole


def progress_line(epoch: int, epochs: int, done: int, steps: int | None, images_per_s: float,
                  epoch_left: float | None, stage_left: float | None,
                  validation_s: float | None) -> str:
    """One progress line, e.g. `[lab5] epoch 2/5, step 120/1183: 41.2 images/s; epoch ETA 7:30
    (validation 0:45 included), stage ETA 30:10`."""
    line = f"[lab5] epoch {epoch}/{epochs}, step {done}/{steps or '?'}: {images_per_s:.1f} images/s"
    if epoch_left is None:
        return line + " (steps per epoch unknown: no ETA)"
    note = f"validation {clock_text(validation_s)} included" if validation_s is not None else (
        "+ validation, not timed yet")
    return f"{line}; epoch ETA {clock_text(epoch_left)} ({note}), stage ETA {clock_text(stage_left)}"


class EpochProgress(keras.callbacks.Callback):
    """A progress line at most every `seconds` inside each epoch (`progress_line`). The rate is
    measured from the end of the epoch's first execution, which pays for tracing; with
    `steps_per_execution` > 1 Keras calls `on_train_batch_end` once per execution, with the index
    of its last step. `clock` and `write` are injectable for tests."""

    def __init__(self, seconds: float, batch_size: int, clock: Callable[[], float] = time.monotonic,
                 write: Callable[[str], Any] | None = None) -> None:
        super().__init__()
        self.seconds, self.batch_size, self.clock = seconds, batch_size, clock
        self.write = write or (lambda line: print(line, flush=True))
        self.epoch_seconds: list[float] = []  # finished epochs, validation included
        self.validation_s: float | None = None  # the last validation

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch, self._start = epoch, self.clock()
        self._last, self._first = self._start, None

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        now, done = self.clock(), batch + 1
        if self._first is None:
            self._first = (done, now)
        if now - self._last >= self.seconds:
            self._last = now
            self.write(self._line(done, now))

    def on_test_begin(self, logs: dict | None = None) -> None:
        self._test_start = self.clock()

    def on_test_end(self, logs: dict | None = None) -> None:
        self.validation_s = self.clock() - self._test_start

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch_seconds.append(self.clock() - self._start)

    def _line(self, done: int, now: float) -> str:
        first_done, first_time = self._first
        if done > first_done and now > first_time:
            rate = (done - first_done) / (now - first_time)
        else:
            rate = done / max(now - self._start, 1e-9)
        params = self.params or {}
        steps, epochs = params.get("steps"), params.get("epochs", self._epoch + 1)
        # the first epoch of `fit` pays for tracing: later ones are guessed from this one's
        # rate until a second epoch has finished, then from the last finished epoch
        last = self.epoch_seconds[-1] if len(self.epoch_seconds) > 1 else None
        epoch_left, stage_left = epoch_eta(done, steps, rate, epochs - self._epoch - 1,
                                           self.validation_s, last)
        return progress_line(self._epoch + 1, epochs, done, steps, rate * self.batch_size,
                             epoch_left, stage_left, self.validation_s)


def epoch_callbacks(verbose: int | str, seconds: float, batch_size: int) -> list[EpochProgress]:
    """What `fit` gets beside Keras' own output: `EpochProgress` when that output is lines
    (`verbose=2`) and `seconds` > 0; nothing with a progress bar, silence or `seconds=0`."""
    return [EpochProgress(seconds, batch_size)] if verbose == LINES and seconds > 0 else []


# --- the sweep ---------------------------------------------------------------------------------
def sweep_eta(run_seconds: list[float], pending: int, running_s: list[float],
              jobs: int) -> float | None:
    """Seconds until the sweep's last run finishes if each run takes the mean of `run_seconds`
    (those finished so far): running runs take what is left of it (never less than nothing),
    pending ones start as one of the `jobs` slots frees up. None before any run has finished."""
    if not run_seconds:
        return None
    mean = statistics.fmean(run_seconds)
    slots = sorted(max(mean - elapsed, 0.0) for elapsed in running_s)
    slots += [0.0] * max(jobs - len(slots), 0)
    for _ in range(pending):
        slots.sort()
        slots[0] += mean
    return max(slots, default=0.0)


def sweep_eta_text(run_seconds: list[float], pending: int, running_s: list[float],
                   jobs: int) -> str | None:
    """The sweep's ETA as a sentence, None when nothing is left or nothing has finished."""
    left = sweep_eta(run_seconds, pending, running_s, jobs)
    if left is None or pending + len(running_s) == 0:
        return None
    runs = pending + len(running_s)
    each = statistics.fmean(run_seconds)
    return (f"sweep ETA: about {clock_text(left)} until the {runs} run(s) left finish ("
            f"{clock_text(each)} a run so far, mean of {len(run_seconds)}; {jobs} at a time), "
            "then the analysis")


class SweepClock:
    """What `lab5 report` knows about its runs' durations: `queued`, `started`, `finished` (from
    the sweep's threads; names never queued are ignored), and the ETA text after each finished
    run. Runs that were reused or failed do not count in the mean."""

    def __init__(self, jobs: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.jobs, self.clock = jobs, clock
        self.pending: set[str] = set()
        self.running: dict[str, float] = {}
        self.seconds: list[float] = []
        self._lock = threading.Lock()

    def queued(self, name: str) -> None:
        with self._lock:
            self.pending.add(name)

    def started(self, name: str) -> None:
        with self._lock:
            if name in self.pending:
                self.pending.discard(name)
                self.running[name] = self.clock()

    def finished(self, name: str, counted: bool) -> str | None:
        """Mark `name` finished (`counted`: its time is a run's real duration); the ETA text."""
        with self._lock:
            began = self.running.pop(name, None)
            if began is None:
                return None
            now = self.clock()
            if counted:
                self.seconds.append(now - began)
            return sweep_eta_text(self.seconds, len(self.pending),
                                  [now - t for t in self.running.values()], self.jobs)

