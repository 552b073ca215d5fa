"""The `lab5` command: train, lr-find, compare (more subcommands register themselves here)."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path

from lab5_utils.config import add_settings_arguments

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

EPILOG = ("Every subcommand has --help. Runs go to runs/<preset>/ unless --run-dir says otherwise. "
          "Engines' log lines (TensorFlow/absl C++, Jupyter) go to log files, not the console, "
          "unless --verbose.")
LOGS = ("The console shows lab5's lines; every line, TensorFlow's and Jupyter's own log lines "
        "included, goes to a log: <run dir>/lab5.log (train), <out>/logs/ (report: lab5.log and "
        "one per notebook), else $TMPDIR/lab5-<command>.log. --verbose shows everything live.")


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="demo", help="demo (offline, CPU minutes), quick, full")
    add_settings_arguments(p)


def _config(args: argparse.Namespace):
    from lab5_utils.config import LabConfig

    cfg = LabConfig.preset(args.preset).with_settings(args.settings)
    if getattr(args, "epochs", None) is not None:
        field = "transfer_epochs" if args.stage == "transfer" else "finetune_epochs"
        cfg = cfg.replace(**{field: args.epochs})
    return cfg


def _lr(text: str) -> float:
    from lab5_utils.config import check_learning_rate

    try:
        return check_learning_rate(text, "--lr")
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def cmd_train(args: argparse.Namespace) -> int:
    from lab5_utils.cost import estimate
    from lab5_utils.train.training import default_run_dir, is_finished, run_stage, stage_config

    cfg = _config(args)
    run_dir = args.run_dir or default_run_dir(stage_config(cfg, args.stage, args.lr), args.stage,
                                              args.lr)
    if args.force or not is_finished(run_dir):  # quick/full: hardware, time estimate, CPU check
        estimate.preflight(cfg, args.stage, args.allow_cpu)
    _log_to(args, Path(run_dir) / "lab5.log")  # once the run folder exists
    run_stage(cfg, args.stage, args.lr, args.run_dir, force=args.force,  # verbose: auto
              transfer_dir=args.transfer_dir)
    return 0


def cmd_lr_find(args: argparse.Namespace) -> int:
    from lab5_utils.train.training import lr_range_test

    result = lr_range_test(_config(args), args.stage, steps=args.steps)
    print(result.curve.to_string(index=False))
    print(f"suggested learning rate: {result.suggestion:.2e}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from lab5_utils.cost.bench import cmd_bench as run

    return run(args)


def cmd_report(args: argparse.Namespace) -> int:
    from lab5_utils.report.build import cmd_report as run
    from lab5_utils.report.build import report_folders

    _log_to(args, report_folders(args.preset, args.out, args.figures)[0] / "logs" / "lab5.log")
    return run(args)


def _log_to(args: argparse.Namespace, path: Path) -> None:
    """The command's own log (`main` made it) goes to `path`, in the folder the command writes."""
    if getattr(args, "log", None) is not None:
        args.log.to(path)


def cmd_compare(args: argparse.Namespace) -> int:
    from lab5_utils.train.epoch_logs import summarize_runs

    table, problems = summarize_runs(args.paths)
    for message in problems:
        print(f"lab5 compare: {message}", file=sys.stderr)
    if len(table):
        print(table.to_csv(index=False) if args.csv else table.to_string(index=False))
    return 0 if len(table) and not problems else 1


def cmd_predict(args: argparse.Namespace) -> int:
    from lab5_utils.data.photos import conversion_hint
    from lab5_utils.evaluate.predict import predict_files, predictions_table, predictions_text

    results, problems = predict_files(args.model, args.images, top=args.top,
                                      explain_dir=args.explain, force=args.force,
                                      test_time=args.test_time)
    if args.csv:
        print(predictions_table(results, problems).to_csv(index=False), end="")
    elif results:
        print(predictions_text(results))
    for path, reason in problems:
        print(f"lab5 predict: {path}: {reason}", file=sys.stderr)
    hint = conversion_hint([reason for _, reason in problems])
    if hint:
        print(f"lab5 predict:{hint}", file=sys.stderr)
    return 1 if problems or not results else 0


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], str]] = {
    "report": (cmd_report, "the whole lab: notebooks 01-04, a sweep of learning rates or of any "
                           "setting (--sweep), one HTML report"),
    "train": (cmd_train, "train one stage (transfer or finetune); resumes a killed run"),
    "lr-find": (cmd_lr_find, "LR range test: loss vs learning rate and a suggested LR"),
    "compare": (cmd_compare, "table of runs: this project's run folders or TensorBoard logs"),
    "predict": (cmd_predict, "top-k classes of your own photos with a trained model"),
    "bench": (cmd_bench, "input-pipeline and fit throughput benchmark on Food-101-like JPEGs"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lab5", description=__doc__, epilog=EPILOG)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (func, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=LOGS)
        p.set_defaults(func=func)
        p.add_argument("-v", "--verbose", action="store_true",
                       help="also show the engines' log lines (TensorFlow/absl C++, Jupyter) live")
        if name in ("train", "lr-find"):
            p.add_argument("--stage", choices=["transfer", "finetune"], default="transfer")
            _config_args(p)
        if name == "train":
            p.add_argument("--lr", type=_lr, help="learning rate of this stage (default: preset)")
            p.add_argument("--epochs", type=int, help="epochs of this stage (default: preset)")
            p.add_argument("--run-dir", help="run directory (default: runs/<preset>/<stage>...)")
            p.add_argument("--transfer-dir", help="finetune: the transfer run to start from")
            p.add_argument("--force", action="store_true", help="redo a finished run")
            p.add_argument("--allow-cpu", action="store_true",
                           help="quick/full: train without a GPU (by default the command stops "
                                "after the time estimate with a warning)")
        if name == "lr-find":
            p.add_argument("--steps", type=int, default=100, help="batches in the range test")
        if name == "compare":
            p.add_argument("paths", nargs="+", help="run folders or TensorBoard log folders")
            p.add_argument("--csv", action="store_true", help="machine-readable CSV output")
        if name == "report":
            from lab5_utils.report.build import add_report_arguments

            add_report_arguments(p)
        if name == "bench":
            from lab5_utils.cost.bench import add_bench_arguments

            add_bench_arguments(p)
        if name == "predict":
            p.add_argument("images", nargs="+", metavar="PATH",
                           help="image files (JPEG, PNG, GIF, BMP, WebP; any size) and folders "
                                "of them (searched recursively; other files are reported)")
            p.add_argument("--model", required=True, help="a trained model, e.g. RUN/best.keras")
            p.add_argument("--top", type=int, default=5, help="how many classes to show")
            p.add_argument("--csv", action="store_true",
                           help="CSV on stdout: one row per image (path, class_i, prob_i), "
                                "and one per unreadable file (path, error)")
            p.add_argument("--explain", metavar="DIR", type=Path,
                           help="write a Grad-CAM overlay of the top class per image: DIR/<stem>.png")
            p.add_argument("--force", action="store_true",
                           help="--explain: replace overlay files that already exist")
            p.add_argument("--no-test-time", dest="test_time", action="store_false",
                           help="ignore the run's tta and test_image_size (config.json beside "
                                "the model): one pass at the training size")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:  # progress lines show as they come, also through a pipe (a Colab `!lab5 ...` cell)
        sys.stdout.reconfigure(line_buffering=True)
    except (AttributeError, ValueError):
        pass
    if getattr(args, "epochs", None) is not None and args.epochs < 1:
        build_parser().error(f"--epochs={args.epochs} is not valid: expected an integer >= 1.")
    from lab5_utils.report.console import sorted_console, tail

    with sorted_console(args.command, args.verbose) as sorter:  # engines' lines: to the log
        args.log = sorter.log
        try:
            with warnings.catch_warnings():  # restores Python's own display when the command ends
                warnings.showwarning = _plain_warnings(warnings.showwarning)
                return args.func(args)
        except (ValueError, FileNotFoundError, RuntimeError) as err:
            print(f"lab5 {args.command}: error: {err}", file=sys.stderr)
            sorter.closing_line = False  # one clear message (the log keeps the rest)
            return 2
        except KeyboardInterrupt:
            print("lab5: interrupted; re-run the same command to resume.", file=sys.stderr)
            return 130
        except Exception:  # a crash: what led to it (engines' lines too), then its traceback
            sorter.sync()
            print(f"lab5 {args.command}: failed\n" + tail(None, "".join(sorter.log.lines)),
                  end="", file=sys.stderr)
            traceback.print_exc()
            return 1


_PACKAGE = Path(__file__).resolve().parent


def _plain_warnings(fallback: Callable) -> Callable:
    """A `warnings.showwarning` for the CLI: lab5's own warnings become one plain `[lab5] ...`
    line (no file, line number or source line); other libraries' go to `fallback` (Python's
    format). Only `main` installs it: notebooks keep normal warnings."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if not Path(filename).resolve().is_relative_to(_PACKAGE):
            return fallback(message, category, filename, lineno, file, line)
        print(f"[lab5] {message}", file=sys.stderr if file is None else file, flush=True)

    return show


if __name__ == "__main__":
    sys.exit(main())
