"""`lab5 report`: executes notebooks 01-04 with papermill (03 once per run of the sweep, at most
`--jobs` at once, reusing what is unchanged) and exports them to one HTML file (`export`).

TensorFlow, papermill and nbconvert are imported only inside the functions that need them, so
`lab5 --help` and the argument checks of the CLI do not wait for them at import.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from lab5_utils.config import (
    PRESETS,
    TEST_TIME_FIELDS,
    LabConfig,
    add_settings_arguments,
    lab_config,
    lr_label,
)
from lab5_utils.cost import estimate
from lab5_utils.files import atomic_write_text, project_root, read_json
from lab5_utils.i18n import _, check_language, in_language, languages
from lab5_utils.report.analysis import results_table
from lab5_utils.report.execute import NotebookExecutor, NotebookRun, error_text, finetune_job, job
from lab5_utils.report.export import (
    combine_notebooks,
    contents_markdown,
    export_html,
    intro_markdown,
)
from lab5_utils.report.narrative import headline
from lab5_utils.tables import clock
from lab5_utils.train.sweep import DEFAULT_LRS, SweepRun, parse_lrs, parse_sweep, sweep_runs, value_text

NOTEBOOKS = ("01_data_exploration", "02_transfer_learning", "03_fine_tuning", "04_analysis")
REPORT_NAME = "lab5_report.html"


# --- the sweep --------------------------------------------------------------------------------
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


@in_language  # `lang`: checked before anything runs; titles, headline and export in it
def run_report(
    preset: str = "demo", lrs: Iterable[Any] | None = None, settings: Iterable[str] = (),
    out: str | Path | None = None, force: bool = False, jobs: int = 1, hide_code: bool = True,
    figures_dir: str | Path | None = None, lr_steps: int = 100, allow_cpu: bool = False,
    estimate_steps: int = 5, sweep: str | None = None, lang: str = "en", verbose: bool = False,
) -> ReportResult:
    """Execute 01 and 02 once, 03 once per run of the sweep and then 04 with papermill, and export
    them to `<out>/lab5_report.html`. A failed notebook does not stop the others. Finished runs
    are reused, and so are executed notebooks whose source, parameters and runs are unchanged
    (04 always runs again); `force=True` retrains and re-executes everything. Figures go to
    `figures_dir`, else `<out>/figures` when `out` is given, else `figures/`. Before `quick` or
    `full`, the hardware and a time estimate are printed (`estimate.preflight`, timing
    `estimate_steps` batches per stage); without a GPU the sweep stops unless `allow_cpu`.
    The sweep: one run per learning rate of `lrs` (default `DEFAULT_LRS`), or with `sweep`
    ("KEY=V1,V2") one run per value at the single learning rate of `lrs` (default the preset's
    `finetune_learning_rate`); every run starts from the same transfer run. `lang` is the
    report's language (`i18n.languages()`), passed to every notebook. What each kernel writes
    goes to `<out>/logs/<notebook>.log`; engines' log lines are shown only if `verbose`."""
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
    lr_list, auto, key, values = _sweep_spec(cfg, lrs, sweep)
    if auto and (not isinstance(lr_steps, int) or lr_steps < 10):
        raise ValueError(f"--lr-steps={lr_steps!r} is not valid: expected an integer >= 10.")
    _check_writable(out, "--out")
    _check_writable(figures, "figures folder")

    from lab5_utils.train.progress import PROGRESS_ENV  # Keras: not at import (--help)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the kernels and the estimate inherit it
    os.environ.setdefault(PROGRESS_ENV, "lines")  # the kernels print lines in epochs, not a bar
    if preset in estimate.HEAVY_PRESETS:  # hardware, time estimate; stops a CPU run
        _preflight(cfg, sweep_runs(lr_list, key, values), auto, force, allow_cpu, estimate_steps,
                   settings)
    # drive_dir None: --out and --figures say where everything goes (no Drive mount in a kernel)
    common = {"preset": preset, "settings": settings, "run_root": cfg.run_root,
              "figures_dir": str(figures), "drive_dir": None, "lang": lang}
    training_params = {"allow_cpu": allow_cpu, "estimate_steps": 0}  # estimated above
    executor = NotebookExecutor(cfg, out, sources, figures, start, jobs, reuse=not force,
                                verbose=verbose)
    swept = (f"{key} = {', '.join(map(value_text, values))} at lr={lr_label(lr_list[0])}" if key
             else "learning rates " + ", ".join([lr_label(x) for x in lr_list] + ["auto"] * auto))
    print(f"[report] preset {preset}, {swept}; output {out}", flush=True)
    suggested, finder_csv = None, None
    first = executor.submit(job("01_data_exploration", _("1. Data exploration")), common)
    transfer = executor.submit(job("02_transfer_learning", _("2. Transfer learning")),
                            common | training_params | {"force": force})
    transfer_ok = transfer.result().status == "done"
    if transfer_ok and auto:
        suggested, finder_csv = _auto_lr(cfg, out, force, lr_steps, executor)
        if suggested and lr_label(suggested) not in map(lr_label, lr_list):
            lr_list.append(suggested)
    lr_list.sort(reverse=True)
    skip = "" if transfer_ok else "the transfer-learning notebook failed"
    plan = sweep_runs(lr_list, key, values)
    tuning = []
    for i, run in enumerate(plan, start=1):
        tuning.append(executor.submit(finetune_job(i, run), common | training_params | {
            "learning_rate": run.lr, "sweep_setting": run.change, "force": force}, skip))
        if i == 1 and key in TEST_TIME_FIELDS:  # the other values copy its training
            tuning[0].result()
    runs = [future.result() for future in (first, transfer, *tuning)]
    failed = {r.run.name: r.error for r in runs if r.run is not None and r.status != "done"}
    params = {"lrs": lr_list, "swept": {"key": key, "values": values} if key else None,
              "failed": failed, "suggested_lr": suggested, "lr_finder_csv": finder_csv}
    runs.append(executor.submit(job("04_analysis", _("4. Analysis")), common | params, skip).result())
    runs += executor.extra
    table = results_table(cfg, plan, failed)
    atomic_write_text(out / "results.csv", table.to_csv(index=False))
    combined = combine_notebooks(runs, intro_markdown(preset, cfg, hide_code), hide_code,
                                 glance=headline(table), contents=contents_markdown(runs))
    html = atomic_write_text(out / REPORT_NAME,
                             export_html(combined, hide_code,
                                         _("Lab 5 report ({preset})").format(preset=preset)))
    result = ReportResult(out, html, runs, suggested, table)
    summary = {"preset": preset, "report": html, "suggested_lr": suggested, "ok": not result.failed,
               "notebooks": [asdict(r) for r in runs]}
    atomic_write_text(out / "report.json", json.dumps(summary, indent=2, default=str) + "\n")
    done = sum(r.status == "done" for r in runs)
    print(f"[report] {done} of {len(runs)} notebooks succeeded in {clock(time.time() - start)}; "
          f"report: {html}; logs: {out / 'logs'}", flush=True)
    return result


def _sweep_spec(cfg: LabConfig, lrs: Iterable[Any] | None, sweep: str | None
                ) -> tuple[list[float], bool, str | None, list[Any]]:
    """(learning rates, `auto` asked for, swept key or None, its values), checked before any
    work: a `--sweep` runs at one learning rate, the preset's unless `--lrs` gives one."""
    if not sweep:
        return (*parse_lrs(DEFAULT_LRS if lrs is None else lrs), None, [])
    key, values = parse_sweep(sweep, cfg)
    lr_list, auto = parse_lrs([cfg.finetune_learning_rate] if lrs is None else lrs)
    if auto:
        raise ValueError(f"--sweep {key} runs at one learning rate: give --lrs a number, not "
                         "'auto' (run the LR range test first: lab5 lr-find --stage finetune).")
    sweep_runs(lr_list, key, values)  # one learning rate, or a clear error
    return lr_list, auto, key, values


def _preflight(cfg: LabConfig, runs: list[SweepRun], auto: bool, force: bool, allow_cpu: bool,
               steps: int, settings: list[str]) -> None:
    """`estimate.preflight` for the runs still to train (none after a finished sweep), timed in
    a child process so the sweep's kernels get the whole GPU."""
    from lab5_utils.train.training import default_run_dir, is_finished

    todo = sum(force or not is_finished(run.run_dir(cfg)) for run in runs) + auto
    if runs and runs[0].key in TEST_TIME_FIELDS:  # its values share one training
        todo = min(todo, 1)
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


def _auto_lr(cfg: LabConfig, out: Path, force: bool, steps: int, sweep: NotebookExecutor
             ) -> tuple[float | None, str | None]:
    """The LR range test on the fine-tuning setup, its suggestion rounded to one significant
    digit; reused while the transfer run and `steps` are unchanged."""
    from lab5_utils.train import training

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
        failed = job("lr_range_test", _("LR range test"))
        failed.status, failed.error = "failed", error_text(err)
        sweep.extra.append(failed)
        sweep.progress(f"LR range test FAILED: {failed.error}")
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
    parser.add_argument("--lrs", nargs="+", metavar="LR",
                        help="fine-tuning learning rates, one notebook each; 'auto' adds the LR "
                             "range test's suggestion (default: 1e-4 1e-5 1e-7 1e-8; with "
                             "--sweep: one value, default the preset's finetune_learning_rate)")
    parser.add_argument("--sweep", metavar="KEY=V1,V2",
                        help="instead of learning rates, sweep one setting: one fine-tuning "
                             "notebook per value at one learning rate, e.g. --sweep "
                             "label_smoothing=0,0.1 (list values joined by +: "
                             "augmentations=flip+crop,flip)")
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
    parser.add_argument("--lang", default="en", type=_language,
                        help="the report's language: " + ", ".join(languages()) + " (default: en)")
    # Let `--lrs -1e-4` reach the validation (argparse would take it for an option).
    parser._negative_number_matcher = re.compile(r"^-(\d|\.\d|inf|nan)", re.IGNORECASE)


def _language(text: str) -> str:
    try:
        return check_language(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def cmd_report(args: argparse.Namespace) -> int:
    """Run the sweep; 0 when every notebook succeeded, 1 otherwise."""
    result = run_report(args.preset, args.lrs, args.settings, args.out, args.force, args.jobs,
                        hide_code=not args.show_code, figures_dir=args.figures,
                        lr_steps=args.lr_steps, allow_cpu=args.allow_cpu, sweep=args.sweep,
                        lang=args.lang, verbose=getattr(args, "verbose", False))
    return result.exit_code


