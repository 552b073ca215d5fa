"""`lab5 report`: executes notebooks 01-04 with papermill (03 once per run of the sweep, at most
`--jobs` at once, reusing what is unchanged) and exports them to one HTML file (`export`).

TensorFlow, papermill and nbconvert are imported only inside the functions that need them, so
`lab5 --help` and the argument checks of the CLI do not wait for them at import.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from lab5_utils import estimate
from lab5_utils.analysis import results_table
from lab5_utils.config import PRESETS, LabConfig, add_settings_arguments, lab_config, lr_label
from lab5_utils.export import clock, combine_notebooks, export_html, first_line, intro_markdown
from lab5_utils.files import atomic_write_text, project_root, read_json
from lab5_utils.narrative import conclusion
from lab5_utils.sweep import DEFAULT_LRS, parse_lrs

NOTEBOOKS = ("01_data_exploration", "02_transfer_learning", "03_fine_tuning", "04_analysis")
REPORT_NAME = "lab5_report.html"


# --- the sweep --------------------------------------------------------------------------------
@dataclass
class NotebookRun:
    """One notebook execution of the sweep."""

    name: str  # file stem of the executed notebook, e.g. "03_fine_tuning_lr=1e-04"
    source: str  # the notebook it executes, e.g. "03_fine_tuning"
    title: str
    lr: float | None = None
    status: str = "pending"  # done, failed or skipped
    error: str = ""
    seconds: float = 0.0
    notebook: Path | None = None
    html: Path | None = None
    reused: bool = False  # an unchanged executed notebook from the previous report

    @property
    def anchor(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")


@dataclass
class ReportResult:
    """What `run_report` did: every notebook's status, the report and the LR suggestion."""

    out: Path
    html: Path
    runs: list[NotebookRun]
    suggested_lr: float | None = None
    results: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def failed(self) -> list[NotebookRun]:
        return [r for r in self.runs if r.status != "done"]

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


def run_report(
    preset: str = "demo", lrs: Iterable[Any] = DEFAULT_LRS, settings: Iterable[str] = (),
    out: str | Path | None = None, force: bool = False, jobs: int = 1, hide_code: bool = True,
    figures_dir: str | Path | None = None, lr_steps: int = 100, allow_cpu: bool = False,
    estimate_steps: int = 5,
) -> ReportResult:
    """Execute 01 and 02 once, 03 once per learning rate and then 04 with papermill, and export
    them to `<out>/lab5_report.html`. A failed notebook does not stop the others. Finished runs
    are reused, and so are executed notebooks whose source, parameters and runs are unchanged
    (04 always runs again); `force=True` retrains and re-executes everything. Figures go to
    `figures_dir`, else `<out>/figures` when `out` is given, else `figures/`. Before `quick` or
    `full`, the hardware and a time estimate are printed (`estimate.preflight`, timing
    `estimate_steps` batches per stage); without a GPU the sweep stops unless `allow_cpu`."""
    start = time.time()
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"--jobs={jobs!r} is not valid: expected an integer >= 1.")
    settings = list(settings or [])
    if any(s.partition("=")[0].strip() == "run_root" for s in settings):
        raise ValueError("--set run_root is not used by `lab5 report`: runs go to <out>/runs; "
                         "choose the folder with --out.")
    out, figures = report_folders(preset, out, figures_dir)
    cfg = lab_config(preset, settings, str(out / "runs"))  # validates preset and settings
    sources = project_root() / "notebooks"
    missing = [n for n in NOTEBOOKS if not (sources / f"{n}.ipynb").is_file()]
    if missing:
        raise FileNotFoundError(f"notebooks {', '.join(missing)} not found in {sources}.")
    lr_list, auto = parse_lrs(lrs)
    if auto and (not isinstance(lr_steps, int) or lr_steps < 10):
        raise ValueError(f"--lr-steps={lr_steps!r} is not valid: expected an integer >= 10.")
    _check_writable(out, "--out")
    _check_writable(figures, "figures folder")

    from lab5_utils.progress import PROGRESS_ENV  # Keras: not at import (--help)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the kernels and the estimate inherit it
    os.environ.setdefault(PROGRESS_ENV, "lines")  # the kernels print lines in epochs, not a bar
    if preset in estimate.HEAVY_PRESETS:  # hardware, time estimate; stops a CPU run
        _preflight(cfg, lr_list, auto, force, allow_cpu, estimate_steps, settings)
    # drive_dir None: --out and --figures say where everything goes (no Drive mount in a kernel)
    common = {"preset": preset, "settings": settings, "run_root": cfg.run_root,
              "figures_dir": str(figures), "drive_dir": None}
    training_params = {"allow_cpu": allow_cpu, "estimate_steps": 0}  # estimated above
    sweep = _Sweep(cfg, out, sources, figures, start, jobs, reuse=not force)
    print(f"[report] preset {preset}, learning rates "
          f"{', '.join([lr_label(x) for x in lr_list] + ['auto'] * auto)}; output {out}", flush=True)
    suggested, finder_csv = None, None
    first = sweep.submit(_job("01_data_exploration", "1. Data exploration"), common)
    transfer = sweep.submit(_job("02_transfer_learning", "2. Transfer learning"),
                            common | training_params | {"force": force})
    transfer_ok = transfer.result().status == "done"
    if transfer_ok and auto:
        suggested, finder_csv = _auto_lr(cfg, out, force, lr_steps, sweep)
        if suggested and lr_label(suggested) not in map(lr_label, lr_list):
            lr_list.append(suggested)
    lr_list.sort(reverse=True)
    skip = "" if transfer_ok else "the transfer-learning notebook failed"
    tuning = [sweep.submit(_job("03_fine_tuning", f"3.{i} Fine-tuning at lr={lr_label(lr)}", lr),
                           common | training_params | {"learning_rate": lr, "force": force}, skip)
              for i, lr in enumerate(lr_list, start=1)]
    runs = [future.result() for future in (first, transfer, *tuning)]
    failed = {lr_label(r.lr): r.error for r in runs if r.lr is not None and r.status != "done"}
    params = {"lrs": lr_list, "failed": failed, "suggested_lr": suggested,
              "lr_finder_csv": finder_csv}
    runs.append(sweep.submit(_job("04_analysis", "4. Analysis"), common | params, skip).result())
    runs += sweep.extra
    table = results_table(cfg, lr_list, failed)
    atomic_write_text(out / "results.csv", table.to_csv(index=False))
    intro = intro_markdown(preset, cfg, runs, hide_code, conclusion(table, suggested))
    combined = combine_notebooks(runs, intro, hide_code)
    html = atomic_write_text(out / REPORT_NAME,
                             export_html(combined, hide_code, f"Lab 5 report ({preset})"))
    result = ReportResult(out, html, runs, suggested, table)
    summary = {"preset": preset, "report": html, "suggested_lr": suggested, "ok": not result.failed,
               "notebooks": [asdict(r) for r in runs]}
    atomic_write_text(out / "report.json", json.dumps(summary, indent=2, default=str) + "\n")
    done = sum(r.status == "done" for r in runs)
    print(f"[report] {done} of {len(runs)} notebooks succeeded in {clock(time.time() - start)}; "
          f"report: {html}", flush=True)
    return result


def _preflight(cfg: LabConfig, lrs: list[float], auto: bool, force: bool, allow_cpu: bool,
               steps: int, settings: list[str]) -> None:
    """`estimate.preflight` for the runs still to train (none after a finished sweep), timed in
    a child process so the sweep's kernels get the whole GPU."""
    from lab5_utils.training import default_run_dir, is_finished

    todo = sum(force or not is_finished(default_run_dir(cfg, "finetune", lr)) for lr in lrs) + auto
    stages = ["transfer"] * (force or not is_finished(default_run_dir(cfg, "transfer")))
    stages += ["finetune"] * (todo > 0)
    if stages:
        estimate.preflight(cfg, stages, allow_cpu, steps, finetune_runs=todo, settings=settings)


def report_folders(preset: str, out: str | Path | None = None,
                   figures_dir: str | Path | None = None) -> tuple[Path, Path]:
    """(report folder, figures folder): `out` or `reports/<preset>/`; `figures_dir`, else
    `<out>/figures` when `out` is given (a report on Drive keeps its figures there too), else
    `figures/` at the repository root."""
    if out:
        out = Path(out).expanduser().resolve()
        default_figures = out / "figures"
    else:
        out, default_figures = project_root() / "reports" / preset, project_root() / "figures"
    return out, Path(figures_dir).expanduser().resolve() if figures_dir else default_figures


def _job(source: str, title: str, lr: float | None = None) -> NotebookRun:
    name = source if lr is None else f"{source}_lr={lr_label(lr)}"
    return NotebookRun(name=name, source=source, title=title, lr=lr)


class _Sweep:
    """Runs notebooks with papermill, at most `jobs` at once, printing progress lines and each
    notebook's output prefixed with its name. Each runs on a daemon thread: Ctrl-C ends the
    sweep at once, and the kernels exit with their parent. An executed notebook is reused
    (unless `reuse=False`) while its fingerprint is unchanged and its figures still exist."""

    def __init__(self, cfg: LabConfig, out: Path, sources: Path, figures: Path, start: float,
                 jobs: int, reuse: bool) -> None:
        from lab5_utils.progress import SweepClock

        self.cfg, self.out, self.sources, self.figures = cfg, out, sources, figures
        self.start, self.reuse = start, reuse
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
        if job.lr is not None:
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
            began, output = time.time(), _Prefixed(job.name)
            try:
                pm.execute_notebook(
                    self.sources / f"{job.source}.ipynb", target, parameters=parameters,
                    kernel_name="python3", progress_bar=False, stdout_file=output,
                    stderr_file=output, resources={"metadata": {"path": str(self.sources)}},
                )  # the kernel's cwd: notebooks/
                job.status = "done"
            except Exception as err:  # a cell raised, the kernel died or could not start, ...
                job.status, job.error = "failed", _error(err)
            job.seconds = time.time() - began
            outcome = "done" if job.status == "done" else f"FAILED: {job.error}"
            self.progress(f"{job.name}: {outcome} ({clock(job.seconds)})")
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

    def _fingerprint(self, job: NotebookRun, parameters: dict) -> str:
        """Hash of what an executed notebook shows: its source, its parameters and the
        `metrics.json` of the runs it reads (02 and 03: transfer; 03: its own run)."""
        from lab5_utils.training import default_run_dir

        runs = [] if job.source == "01_data_exploration" else [default_run_dir(self.cfg, "transfer")]
        if job.lr is not None:
            runs.append(default_run_dir(self.cfg, "finetune", job.lr))
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


class _Prefixed:
    """papermill's `stdout_file`/`stderr_file`: prints each line with the notebook's name."""

    def __init__(self, name: str) -> None:
        self.name = name

    def write(self, text: str) -> None:
        lines = text.rstrip("\n").splitlines()
        sys.stdout.write("".join(f"  {self.name} | {line}\n" for line in lines))

    def flush(self) -> None:
        sys.stdout.flush()


def _auto_lr(cfg: LabConfig, out: Path, force: bool, steps: int, sweep: _Sweep
             ) -> tuple[float | None, str | None]:
    """The LR range test on the fine-tuning setup, its suggestion rounded to one significant
    digit; reused while the transfer run and `steps` are unchanged."""
    from lab5_utils import training

    saved, csv = out / "lr_finder.json", out / "lr_finder_finetune.csv"
    key = {"steps": steps,
           "transfer": read_json(training.default_run_dir(cfg, "transfer") / "metrics.json")}
    previous = read_json(saved) if saved.is_file() and csv.is_file() and not force else {}
    if previous.get("key") == key:
        sweep.progress(f"LR range test: reusing the suggestion lr={lr_label(previous['suggestion'])}")
        return previous["suggestion"], str(csv)
    sweep.progress("LR range test on the fine-tuning setup (transfer model, unfrozen): running")
    try:
        result = training.lr_range_test(cfg, "finetune", steps)
    except Exception as err:  # the sweep goes on with the LRs it was given
        job = _job("lr_range_test", "LR range test")
        job.status, job.error = "failed", _error(err)
        sweep.extra.append(job)
        sweep.progress(f"LR range test FAILED: {job.error}")
        return None, None
    suggestion = float(f"{result.suggestion:.0e}")
    atomic_write_text(csv, result.curve.to_csv(index=False))
    atomic_write_text(saved, json.dumps({"suggestion": suggestion, "raw_suggestion": result.suggestion,
                                         "key": key}, indent=2) + "\n")
    sweep.progress(f"LR range test: suggested lr={lr_label(suggestion)}")
    return suggestion, str(csv)


def _check_writable(folder: Path, what: str) -> None:
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as err:
        raise ValueError(f"{what} {str(folder)!r} is not writable: {err.strerror or err}.") from None


# --- CLI --------------------------------------------------------------------------------------
def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of `lab5 report`."""
    parser.add_argument("--preset", default="demo", choices=PRESETS,
                        help="demo (offline, CPU minutes), quick, full")
    parser.add_argument("--lrs", nargs="+", default=[f"{x:g}" for x in DEFAULT_LRS], metavar="LR",
                        help="fine-tuning learning rates, one notebook each; 'auto' adds the LR "
                             "range test's suggestion (default: 1e-4 1e-5 1e-7 1e-8)")
    parser.add_argument("--lr-steps", type=int, default=100,
                        help="batches of the LR range test run by 'auto' (default: 100)")
    add_settings_arguments(parser)
    parser.add_argument("--out", help="report folder (default: reports/<preset>/)")
    parser.add_argument("--figures", help="folder for the SVG and PNG figures (default: "
                                          "<out>/figures with --out, else figures/)")
    parser.add_argument("--force", action="store_true",
                        help="retrain every run and re-execute every notebook (by default finished "
                             "runs and unchanged executed notebooks are reused)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="notebooks run at once (01 beside 02, then the fine-tuning runs)")
    parser.add_argument("--show-code", action="store_true",
                        help="include the code cells in the HTML report (hidden by default)")
    parser.add_argument("--allow-cpu", action="store_true",
                        help="quick/full: go on without a GPU (by default the sweep stops after "
                             "the time estimate with a warning)")
    # Let `--lrs -1e-4` reach the validation (argparse would take it for an option).
    parser._negative_number_matcher = re.compile(r"^-(\d|\.\d|inf|nan)", re.IGNORECASE)


def cmd_report(args: argparse.Namespace) -> int:
    """Run the sweep; 0 when every notebook succeeded, 1 otherwise."""
    result = run_report(args.preset, args.lrs, args.settings, args.out, args.force, args.jobs,
                        hide_code=not args.show_code, figures_dir=args.figures,
                        lr_steps=args.lr_steps, allow_cpu=args.allow_cpu)
    return result.exit_code


def _error(err: BaseException) -> str:
    """`Name: first line of the message`; papermill's errors name the cell's exception."""
    name, message = getattr(err, "ename", type(err).__name__), getattr(err, "evalue", str(err))
    return f"{name}: {first_line(message)}"
