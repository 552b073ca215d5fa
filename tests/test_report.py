"""`lab5_utils.report` (and `analysis`): argument checks, generated text, two real sweeps."""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from lab5_utils import report, training
from lab5_utils.analysis import conclusion, lr_suggestion_text
from lab5_utils.report import parse_lrs, run_report

# Tiny enough that one notebook trains in well under a minute on a shared 2-core CPU.
TINY = ["image_size=32", "batch_size=32", "transfer_epochs=1", "finetune_epochs=1", "num_classes=3",
        "synthetic_train_per_class=8", "synthetic_val_per_class=4", "calibration_images=16"]
GOOD_LRS = (1e-3, 1e-4)
BAD_LR = 1e-2  # its run folder is made unusable before the sweep, so its notebook fails


# --- arguments --------------------------------------------------------------------------------
def test_parse_lrs_accepts_numbers_strings_and_auto():
    assert parse_lrs(["1e-4", 1e-5, "auto", "0.0001"]) == ([1e-4, 1e-5], True)
    assert parse_lrs("3e-4") == ([3e-4], False)


@pytest.mark.parametrize("bad", ["0", 0, "-1e-4", "nan", "inf", "abc", "", True])
def test_a_bad_lr_is_one_clear_error_naming_lrs(bad):
    with pytest.raises(ValueError, match=r"^--lrs .* finite number > 0"):
        parse_lrs(["1e-4", bad])


def test_lrs_sharing_a_run_folder_are_refused():
    with pytest.raises(ValueError, match="finetune_lr=2e-04"):
        parse_lrs([2e-4, 2.00001e-4])


def test_bad_arguments_fail_before_anything_runs(tmp_path):
    out = tmp_path / "out"
    for kwargs, message in (
        ({"lrs": ["1e-4", "-1"]}, "--lrs"),
        ({"jobs": 0}, "--jobs"),
        ({"settings": ["batch_size=zero"]}, "batch_size"),
        ({"settings": ["run_root=x"]}, "--out"),
    ):
        with pytest.raises(ValueError, match=re.escape(message)):
            run_report(out=out, figures_dir=tmp_path / "figures", **kwargs)
    assert not out.exists()


def test_an_unwritable_out_folder_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ValueError, match="--out .* is not writable"):
        run_report(out=blocker / "report", figures_dir=tmp_path / "figures")


def test_cli_arguments_reach_the_validation():
    parser = argparse.ArgumentParser()
    report.add_report_arguments(parser)
    args = parser.parse_args(["--lrs", "1e-4", "-1e-4", "--jobs", "2", "--show-code"])
    assert args.lrs == ["1e-4", "-1e-4"] and args.jobs == 2 and args.show_code
    with pytest.raises(ValueError, match="--lrs '-1e-4' is not valid"):
        report.cmd_report(args)


# --- generated text ---------------------------------------------------------------------------
def _table(rows):
    columns = ["run", "learning rate", "status", "best val accuracy (%)", "best epoch",
               "change vs transfer (points)", "error"]
    return pd.DataFrame(rows, columns=columns)


def test_conclusion_names_the_best_lr_with_its_numbers():
    table = _table([
        ("transfer", 1e-3, "finished", 55.31, 10, None, ""),
        ("finetune_lr=1e-04", 1e-4, "finished", 61.2, 14, 5.89, ""),
        ("finetune_lr=1e-07", 1e-7, "finished", 55.41, 12, 0.1, ""),
        ("finetune_lr=1e-08", 1e-8, "failed", None, None, None, "RunError: diverged.\nmore"),
    ])
    text = conclusion(table, suggested_lr=3e-4)
    assert "**lr=1e-04** raised validation accuracy from 55.31 % to **61.20 %** at epoch 14" in text
    assert "(+5.89 points), the best of the 2 learning rates that finished" in text
    assert "lr=1e-07 changed it by +0.10 points (best 55.41 % at epoch 12)" in text
    assert "lr=1e-08 failed: RunError: diverged." in text and "more" not in text
    assert "suggested lr=3e-04; the best swept learning rate, 1e-04, is near it" in text


def test_conclusion_without_finished_runs():
    failed = _table([("transfer", 1e-3, "failed", None, None, None, "x")])
    assert "nothing to conclude" in conclusion(failed)
    text = conclusion(_table([("transfer", 1e-3, "finished", 40.0, 3, None, "")]))
    assert "40.00 %" in text and "No fine-tuning run finished" in text


def test_lr_suggestion_near_means_within_a_factor_of_three():
    assert "is near it (2.5 times below)" in lr_suggestion_text(1e-4, 2.5e-4)
    assert "is not near it (100 times above)" in lr_suggestion_text(1e-2, 1e-4)
    assert "(the same value)" in lr_suggestion_text(1e-4, 1e-4)


def test_a_finished_run_is_reused_only_with_the_same_config(tmp_path):
    cfg = report.lab_config("demo", TINY, str(tmp_path / "runs"))
    run = tmp_path / "runs" / "transfer"
    run.mkdir(parents=True)
    (run / "config.json").write_text(cfg.replace(run_root="elsewhere").to_json())
    (run / "metrics.json").write_text(json.dumps({"best_val_accuracy": 0.5}))
    (run / "history.csv").write_text("epoch,loss,accuracy,val_loss,val_accuracy\n0,1.0,0.4,1.1,0.5\n")
    reused = training.run_stage(cfg, "transfer", reuse=True)  # run_root may differ: same run
    assert reused.metrics == {"best_val_accuracy": 0.5} and list(reused.history["epoch"]) == [1]
    strict = training.run_stage(cfg.replace(strict_data=True), "transfer", reuse=True)  # same run too
    assert strict.metrics == reused.metrics
    with pytest.raises(training.RunError, match="image_size: 32 in the run, 64 now.*--force"):
        training.run_stage(cfg.replace(image_size=64), "transfer", reuse=True)


# --- real sweeps (tiny) -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """One sweep over two good LRs and one that fails, with 01 beside 02 and 03s two at a time."""
    root = tmp_path_factory.mktemp("report")
    out, figures = root / "out", root / "figures"
    cfg = report.lab_config("demo", TINY, str(out / "runs"))
    poisoned = out / "runs" / f"finetune_lr={training.lr_label(BAD_LR)}"
    poisoned.mkdir(parents=True)  # an unfinished run made with another seed: run_stage refuses it
    (poisoned / "config.json").write_text(cfg.replace(seed=cfg.seed + 1).to_json())
    result = run_report("demo", [*GOOD_LRS, BAD_LR], TINY, out=out, jobs=2, figures_dir=figures)
    return result, cfg, figures


def _metrics(cfg, name):
    return json.loads((Path(cfg.run_root) / name / "metrics.json").read_text())


def _finetune_names():
    return [f"finetune_lr={training.lr_label(lr)}" for lr in GOOD_LRS]


@pytest.mark.slow
def test_a_failing_lr_does_not_stop_the_others(sweep):
    result, _, _ = sweep
    status = {run.name: run.status for run in result.runs}
    bad = f"03_fine_tuning_lr={training.lr_label(BAD_LR)}"
    assert status.pop(bad) == "failed" and set(status.values()) == {"done"}
    assert result.exit_code == 1
    error = next(run.error for run in result.runs if run.name == bad)
    assert error.startswith("RunError:") and "different configuration" in error
    assert len(status) == 3 + len(GOOD_LRS)  # 01, 02, 04 and one 03 per good LR


@pytest.mark.slow
def test_every_notebook_runs_top_to_bottom(sweep):
    result, _, _ = sweep
    import nbformat

    for run in result.runs:
        nb = nbformat.read(run.notebook, as_version=4)
        errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
        assert bool(errors) == (run.status == "failed"), run.name
        assert run.html.is_file() and run.notebook.parent.name == "notebooks"
    names = {run.notebook.name for run in result.runs}
    assert {f"03_fine_tuning_lr={training.lr_label(lr)}.ipynb" for lr in GOOD_LRS} <= names


@pytest.mark.slow
def test_the_report_holds_every_section_figure_and_run(sweep):
    result, cfg, figures = sweep
    html = result.html.read_text()
    assert result.html == result.out / "lab5_report.html"
    for lr in (*GOOD_LRS, BAD_LR):
        assert f'id="03-fine-tuning-lr-{training.lr_label(lr)}"' in html
        assert f'href="#03-fine-tuning-lr-{training.lr_label(lr)}"' in html  # table of contents
    for name in ("val_accuracy_by_lr", "val_loss_by_lr", "history_transfer", "confusion"):
        before = html[: html.index(f"Figure: {name}")]
        assert before.rfind("data:image/png;base64,") > before.rfind("Figure: ")  # embedded
    for name in ("class_balance", "image_sizes", "sample_images", "augmentation_preview",
                 "history_transfer", "val_accuracy_by_lr", "val_loss_by_lr", "per_class",
                 "confusion", "predictions", *(f"history_{n}" for n in _finetune_names())):
        assert (figures / f"{name}.svg").is_file() and (figures / f"{name}.png").is_file(), name
    table = re.search(r'<table[^>]*id="lab5-results".*?<tbody>(.*?)</tbody>', html, re.S).group(1)
    assert table.count("<tr>") == 2 + len(GOOD_LRS)  # transfer, the good LRs, the failed one
    assert "lab_config" not in html and "<script src=" not in html  # code hidden, no CDN
    assert "Failed:" in html and "different configuration" in html


@pytest.mark.slow
def test_the_conclusion_quotes_the_runs_metrics(sweep):
    result, cfg, _ = sweep
    transfer = _metrics(cfg, "transfer")
    runs = {lr: _metrics(cfg, name) for lr, name in zip(GOOD_LRS, _finetune_names())}
    best = max(sorted(runs, reverse=True), key=lambda lr: runs[lr]["best_val_accuracy"])
    m = runs[best]
    text = re.sub(r"<[^>]+>", "", result.html.read_text())  # the report's text, without tags
    sentence = re.search(r"Fine-tuning at lr=\S+ (raised|lowered|kept) .*", text).group(0)
    assert sentence.startswith(f"Fine-tuning at lr={training.lr_label(best)} ")
    assert f"{100 * m['best_val_accuracy']:.2f} % at epoch {m['best_epoch']}" in sentence
    assert f"{100 * transfer['best_val_accuracy']:.2f} %" in sentence
    change = 100 * (m["best_val_accuracy"] - transfer["best_val_accuracy"])
    assert f"({change:+.2f} points)" in sentence
    rows = pd.read_csv(result.out / "results.csv")
    assert list(rows["status"]) == ["finished", "failed", "finished", "finished"]


@pytest.mark.slow
def test_show_code_exports_the_code_cells(sweep):
    result, _, _ = sweep
    combined = report.combine_notebooks(result.runs, "# test", hide_code=False)
    assert "lab_config" in report.export_html(combined, hide_code=False)  # highlighted source


@pytest.mark.slow
def test_a_second_report_trains_nothing_new_and_auto_adds_the_suggestion(sweep, monkeypatch):
    result, cfg, figures = sweep
    runs = [Path(cfg.run_root) / n for n in ("transfer", *_finetune_names())]
    before = {p: p.stat().st_mtime_ns for run in runs for p in run.rglob("*") if p.is_file()}
    # The range test runs in this process: a fake one (rounded to 1e-03, an LR already swept)
    # checks that its suggestion reaches the sweep, 04 and the report without training more.
    curve = pd.DataFrame({"lr": [1e-5, 1e-4, 1e-3, 1e-2], "loss": [2.0, 1.5, 1.0, 9.0]})
    fake = argparse.Namespace(curve=curve.assign(smoothed_loss=curve["loss"]), suggestion=1.2e-3)
    monkeypatch.setattr(training, "lr_range_test", lambda cfg, stage, steps: fake)
    again = run_report("demo", [*GOOD_LRS, BAD_LR, "auto"], TINY, out=result.out, jobs=2,
                       figures_dir=figures)
    after = {p: p.stat().st_mtime_ns for run in runs for p in run.rglob("*") if p.is_file()}
    assert after == before
    assert again.suggested_lr == 1e-3 and (figures / "lr_finder_finetune.svg").is_file()
    assert "The LR range test suggested lr=1e-03" in again.html.read_text()
    assert again.exit_code == 1 and [r.status for r in again.failed] == ["failed"]
    reused = {r.name for r in again.runs if r.reused}
    assert reused == {"01_data_exploration", "02_transfer_learning",
                      *(f"03_fine_tuning_lr={training.lr_label(lr)}" for lr in GOOD_LRS)}
    assert all(f"03-fine-tuning-lr-{training.lr_label(lr)}" in again.html.read_text() for lr in GOOD_LRS)


@pytest.mark.slow
def test_a_sweep_killed_mid_way_keeps_finished_lrs_and_resumes_the_interrupted_one(sweep):
    result, cfg, figures = sweep
    new_lr = 3e-4
    finished = [Path(cfg.run_root) / n for n in ("transfer", *_finetune_names())]
    before = {p: p.stat().st_mtime_ns for run in finished for p in run.rglob("*") if p.is_file()}
    target = Path(cfg.run_root) / f"finetune_lr={training.lr_label(new_lr)}"
    lrs = [f"{lr:g}" for lr in (*GOOD_LRS, new_lr)]
    command = [sys.executable, "-m", "lab5_utils.cli", "report", "--lrs", *lrs,
               "--out", str(result.out), "--figures", str(figures)]
    command += [arg for setting in TINY for arg in ("--set", setting)]
    sweep_process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not (target / "config.json").exists():  # the finished LRs passed, the new one started
        assert sweep_process.poll() is None and time.time() < deadline
        time.sleep(0.2)
    os.killpg(sweep_process.pid, signal.SIGKILL)  # the command and its notebook kernel
    sweep_process.wait()
    assert not (target / "metrics.json").exists()

    again = run_report("demo", lrs, TINY, out=result.out, figures_dir=figures)
    assert again.exit_code == 0
    after = {p: p.stat().st_mtime_ns for run in finished for p in run.rglob("*") if p.is_file()}
    assert after == before  # the finished runs were kept as they were
    reused = {r.name for r in again.runs if r.reused}
    assert f"03_fine_tuning_lr={training.lr_label(new_lr)}" not in reused
    assert {f"03_fine_tuning_lr={training.lr_label(lr)}" for lr in GOOD_LRS} <= reused
    epochs = list(pd.read_csv(target / "history.csv")["epoch"])
    assert len(epochs) == len(set(epochs)) == cfg.finetune_epochs  # each epoch once
    rows = pd.read_csv(again.out / "results.csv")
    assert list(rows["status"]) == ["finished"] * (2 + len(GOOD_LRS))
    html = again.html.read_text()
    assert all(f'id="03-fine-tuning-lr-{training.lr_label(lr)}"' in html for lr in (*GOOD_LRS, new_lr))
