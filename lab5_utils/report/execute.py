"""Executing the lab's notebooks with papermill: at most `jobs` at once on daemon threads, each
notebook's output printed with its name (engines' log lines only in `<out>/logs/<notebook>.log`,
see `console`), and an executed notebook reused while its source, parameters and runs are
unchanged."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from lab5_utils.config import LabConfig
from lab5_utils.files import atomic_write_text
from lab5_utils.i18n import _
from lab5_utils.report import console
from lab5_utils.report.export import export_html, first_line
from lab5_utils.tables import clock
from lab5_utils.train.sweep import SweepRun


@dataclass
class NotebookRun:
    """One notebook execution of the sweep."""

    name: str  # file stem of the executed notebook, e.g. "03_fine_tuning_lr=1e-04"
    source: str  # the notebook it executes, e.g. "03_fine_tuning"
    title: str
    lr: float | None = None
    run: SweepRun | None = None  # 03: the fine-tuning run it trains
    status: str = "pending"  # done, failed or skipped
    error: str = ""
    seconds: float = 0.0
    notebook: Path | None = None
    html: Path | None = None
    reused: bool = False  # an unchanged executed notebook from the previous report

    @property
    def anchor(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")


def job(source: str, title: str) -> NotebookRun:
    return NotebookRun(name=source, source=source, title=title)


def finetune_job(index: int, run: SweepRun) -> NotebookRun:
    """03 for one run of the sweep: `03_fine_tuning_lr=1e-04[_label_smoothing=0.1]`."""
    return NotebookRun(name=f"03_fine_tuning_{run.name.removeprefix('finetune_')}",
                       source="03_fine_tuning",
                       title=_("3.{index} Fine-tuning at {run}").format(index=index, run=run.title),
                       lr=run.lr, run=run)


class NotebookExecutor:
    """Runs notebooks with papermill, at most `jobs` at once, printing progress lines and each
    notebook's output prefixed with its name; everything a kernel writes goes to
    `<out>/logs/<notebook>.log`, and engines' log lines only there unless `verbose`. Each runs
    on a daemon thread: Ctrl-C ends the sweep at once, and the kernels exit with their parent.
    An executed notebook is reused (unless `reuse=False`) while its fingerprint is unchanged
    and its figures still exist."""

    def __init__(self, cfg: LabConfig, out: Path, sources: Path, figures: Path, start: float,
                 jobs: int, reuse: bool, verbose: bool = False) -> None:
        from lab5_utils.train.progress import SweepClock  # Keras: not for `lab5 --help`

        self.cfg, self.out, self.sources, self.figures = cfg, out, sources, figures
        self.start, self.reuse, self.verbose = start, reuse, verbose
        (out / "logs").mkdir(parents=True, exist_ok=True)
        self.slots = threading.Semaphore(jobs)
        self.extra: list[NotebookRun] = []
        self.eta = SweepClock(jobs)  # the fine-tuning runs' durations -> the sweep's ETA

    def submit(self, job: NotebookRun, parameters: dict, skip: str = "") -> Future:
        """Execute `job` on its own thread (or skip it, giving `skip` as the reason)."""
        future: Future = Future()
        if skip:
            job.status, job.error = "skipped", skip
            self.progress(f"{job.name}: skipped ({skip})")
            future.set_result(job)
            return future
        if job.run is not None:
            self.eta.queued(job.name)

        def work() -> None:
            with self.slots:
                try:
                    future.set_result(self._execute(job, parameters))
                except BaseException as err:  # raised again by future.result()
                    future.set_exception(err)

        threading.Thread(target=work, name=job.name, daemon=True).start()
        return future

    def progress(self, message: str) -> None:
        sys.stdout.write(f"[report {clock(time.time() - self.start)}] {message}\n")  # one write:
        sys.stdout.flush()  # lines of notebooks running at once do not mix

    def _execute(self, job: NotebookRun, parameters: dict) -> NotebookRun:
        import nbformat
        import papermill as pm

        target = self.out / "notebooks" / f"{job.name}.ipynb"
        self.eta.started(job.name)
        if self.reuse and job.source != "04_analysis" and self._unchanged(job, parameters, target):
            job.status, job.reused = "done", True
            self.progress(f"{job.name}: unchanged since the last report, reusing {target.name}")
        else:
            self.progress(f"{job.name}: running")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.unlink(missing_ok=True)
            began, log = time.time(), self.log_path(job)
            log.unlink(missing_ok=True)
            sorter = console.Sorter(console.LogFile(console.header(job.name)), self.verbose)
            sorter.log.to(log)
            show = _prefixed(job.name)
            cells = _CellOutput(sorter, show), _CellOutput(sorter, show)  # stdout, stderr
            failure: list[str] = []  # the traceback of a failed notebook
            kernel_output, pump = console.pipe_into(lambda line: sorter.sort(line, show),
                                                    f"{job.name}-kernel")
            try:
                pm.execute_notebook(
                    self.sources / f"{job.source}.ipynb", target, parameters=parameters,
                    kernel_name="python3", progress_bar=False,
                    stdout_file=cells[0], stderr_file=cells[1],
                    resources={"metadata": {"path": str(self.sources)}},  # the kernel's cwd
                    kernel_manager_class=_logged_kernel(kernel_output),
                )
                job.status = "done"
            except Exception as err:  # a cell raised, the kernel died or could not start, ...
                job.status, job.error = "failed", error_text(err)
                failure = getattr(err, "traceback", None) or [str(err)]
            finally:
                os.close(kernel_output)  # the kernel has exited: its pipe ends
                pump.join(timeout=10)
                for output in cells:
                    output.flush_rest()
                if job.status == "failed":  # the traceback ends the log
                    sorter.log.add(console.strip_colours("\n".join(failure)) + "\n")
                sorter.log.close(log)
            job.seconds = time.time() - began
            outcome = "done" if job.status == "done" else f"FAILED: {job.error}"
            self.progress(f"{job.name}: {outcome} ({clock(job.seconds)})"
                          + ("" if job.status == "done" else "\n" + console.tail(log).rstrip("\n")))
        if target.is_file():
            nb = nbformat.read(target, as_version=4)
            if job.status == "done" and not job.reused:
                nb.metadata["lab5_report"] = {"fingerprint": self._fingerprint(job, parameters)}
                atomic_write_text(target, nbformat.writes(nb))
            job.notebook = target
            job.html = atomic_write_text(self.out / "html" / f"{job.name}.html",
                                         export_html(nb, hide_code=False, title=job.title))
        eta = self.eta.finished(job.name, counted=job.status == "done" and not job.reused)
        if eta:
            self.progress(eta)
        return job

    def log_path(self, job: NotebookRun) -> Path:
        """Everything the notebook's kernel wrote: `<out>/logs/<notebook>.log`."""
        return self.out / "logs" / f"{job.name}.log"

    def _fingerprint(self, job: NotebookRun, parameters: dict) -> str:
        """Hash of what an executed notebook shows: its source, its parameters and the
        `metrics.json` of the runs it reads (02 and 03: transfer; 03: its own run)."""
        from lab5_utils.train.training import default_run_dir

        runs = [] if job.source == "01_data_exploration" else [default_run_dir(self.cfg, "transfer")]
        if job.run is not None:
            runs.append(job.run.run_dir(self.cfg))
        digest = hashlib.sha256((self.sources / f"{job.source}.ipynb").read_bytes())
        digest.update(json.dumps(parameters, sort_keys=True, default=str).encode())
        for metrics in (run / "metrics.json" for run in runs):
            digest.update(metrics.read_bytes() if metrics.is_file() else b"unfinished")
        return digest.hexdigest()

    def _unchanged(self, job: NotebookRun, parameters: dict, executed: Path) -> bool:
        import nbformat

        try:
            nb = nbformat.read(executed, as_version=4)
        except Exception:  # missing or unreadable: execute again
            return False
        if nb.metadata.get("lab5_report", {}).get("fingerprint") != self._fingerprint(job, parameters):
            return False
        shown = re.findall(r"\*Figure: ([^*]+)\*", json.dumps([c.get("outputs") for c in nb.cells]))
        return all((self.figures / f"{name}.{ext}").is_file()
                   for name in shown for ext in ("svg", "png"))


def _prefixed(name: str):
    """Shows a line of a notebook with its name (one write: notebooks running at once do not mix)."""

    def show(line: str) -> None:
        sys.stdout.write(f"  {name} | {line}")
        sys.stdout.flush()

    return show


class _CellOutput(console.Lines):
    """papermill's `stdout_file`/`stderr_file`: the text cells print, sorted line by line."""

    def __init__(self, sorter: console.Sorter, show) -> None:
        super().__init__(lambda line: sorter.sort(line, show))

    def flush(self) -> None:
        pass


def _logged_kernel(output: int) -> type:
    """A kernel manager class whose kernel writes its own stdout and stderr (TensorFlow's C++
    lines, Jupyter's warnings) into `output`, with ipykernel's copy of them into the cells off."""
    from jupyter_client.manager import AsyncKernelManager

    class LoggedKernelManager(AsyncKernelManager):
        async def start_kernel(self, **kw):
            kw["extra_arguments"] = [*kw.get("extra_arguments", []),
                                     "--IPKernelApp.capture_fd_output=False"]
            kw["stdout"] = kw["stderr"] = output
            return await super().start_kernel(**kw)

    return LoggedKernelManager


def error_text(err: BaseException) -> str:
    """`Name: first line of the message`; papermill's errors name the cell's exception."""
    name, message = getattr(err, "ename", type(err).__name__), getattr(err, "evalue", str(err))
    return f"{name}: {first_line(message)}"
