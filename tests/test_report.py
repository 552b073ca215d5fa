"""`lab5_utils.report.build` (and `analysis`): argument checks, generated text, two real sweeps."""

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

from lab5_utils.config import lab_config, lr_label
from lab5_utils.report import build, export
from lab5_utils.report.build import run_report
from lab5_utils.report.narrative import conclusion, lr_suggestion_text
from lab5_utils.tables import p_equals
from lab5_utils.train import training
from lab5_utils.train.sweep import parse_lrs

# Tiny enough that one notebook trains in well under a minute on a shared 2-core CPU.
TINY = ["image_size=32", "batch_size=32", "transfer_epochs=1", "finetune_epochs=1", "num_classes=3",
        "synthetic_train_per_class=8", "synthetic_val_per_class=4", "synthetic_test_per_class=4",
        "calibration_images=16"]
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
    build.add_report_arguments(parser)
    args = parser.parse_args(["--lrs", "1e-4", "-1e-4", "--jobs", "2", "--show-code"])
    assert args.lrs == ["1e-4", "-1e-4"] and args.jobs == 2 and args.show_code
    with pytest.raises(ValueError, match="--lrs '-1e-4' is not valid"):
        build.cmd_report(args)


# --- generated text ---------------------------------------------------------------------------
def _row(run, lr, status="finished", epoch=None, val=None, test=None, change=None, p=None,
         images=1000, error=""):
    """A results-table row; intervals computed from the accuracies like `results_table` does."""
    from lab5_utils.evaluate.stats import accuracy_interval

    setting = "transfer learning" if run == "transfer" else f"lr={lr_label(lr)}"
    row = {"run": run, "setting": setting, "learning rate": lr, "status": status,
           "best epoch": epoch, "error": error,
           "val accuracy (%)": val, "test accuracy (%)": test,
           "test change vs transfer (points)": change, "McNemar p": p,
           "vs transfer": None if p is None else ("significant at 5 %" if p < 0.05 else "within noise"),
           "val images": images, "test images": images}
    for split, value in (("val", val), ("test", test)):
        low, high = accuracy_interval(value / 100, images) if value is not None else (None, None)
        row[f"{split} low (%)"] = None if low is None else round(100 * low, 2)
        row[f"{split} high (%)"] = None if high is None else round(100 * high, 2)
    return row


def _table(*rows):
    from lab5_utils.report.analysis import RESULT_COLUMNS

    return pd.DataFrame(list(rows), columns=RESULT_COLUMNS)


def test_conclusion_chooses_on_validation_and_reports_the_test_verdict():
    table = _table(
        _row("transfer", 1e-3, epoch=10, val=55.31, test=54.0),
        _row("finetune_lr=1e-04", 1e-4, epoch=14, val=61.2, test=60.5, change=6.5, p=1e-6),
        _row("finetune_lr=1e-07", 1e-7, epoch=12, val=55.41, test=63.0, change=9.0, p=1e-9),
        _row("finetune_lr=1e-08", 1e-8, status="failed", error="RunError: diverged.\nmore"),
    )
    text = conclusion(table, suggested_lr=3e-4)
    # chosen on validation (61.20 > 55.41), although lr=1e-07 has the higher *test* accuracy
    assert "Chosen on validation, fine-tuning at **lr=1e-04** had the best validation accuracy" in text
    assert "the 2 learning rates that finished (61.20 % [95 % CI 58.1-64.2] at epoch 14)" in text
    assert ("On the test split it reaches **60.50 % [95 % CI 57.4-63.5]**, +6.50 points against the "
            "transfer model: fine-tuning **improved** test accuracy, significant at 5 %") in text
    assert "McNemar's exact test on the 1,000 paired test images, p < 0.001" in text
    assert "lr=1e-07: 63.00 % (+9.00 points, p < 0.001, significant at 5 %)" in text
    assert "lr=1e-08 failed: RunError: diverged." in text and "more" not in text
    assert "suggested lr=3e-04; the best swept learning rate, 1e-04, is near it" in text
    assert "does not separate" not in text  # 55.41 is far outside [58.1, 64.2]


def test_conclusion_says_within_noise_or_a_significant_loss_as_the_test_says():
    base = _row("transfer", 1e-3, epoch=3, val=40.0, test=41.0, images=100)
    noise = conclusion(_table(base, _row("finetune_lr=1e-04", 1e-4, epoch=5, val=45.0, test=46.0,
                                         change=5.0, p=0.27, images=100),
                              _row("finetune_lr=1e-05", 1e-5, epoch=5, val=44.0, test=41.0,
                                   change=0.0, p=1.0, images=100)))
    assert "+5.00 points against the transfer model, **within noise**" in noise
    assert "improved" not in noise and "significant" not in noise.split("other learning rates")[0]
    assert "Validation does not separate it clearly from lr=1e-05 (44.00 %)" in noise
    loss = conclusion(_table(base, _row("finetune_lr=1e-04", 1e-4, epoch=5, val=42.0, test=30.0,
                                        change=-11.0, p=0.004, images=100)))
    assert "-11.00 points against the transfer model: fine-tuning **lowered** test accuracy" in loss
    same = conclusion(_table(base, _row("finetune_lr=1e-04", 1e-4, epoch=5, val=42.0, test=41.0,
                                        change=0.0, p=1.0, images=100)))
    assert "the same test accuracy as the transfer model, **within noise**" in same


def test_conclusion_without_finished_runs():
    failed = _table(_row("transfer", 1e-3, status="failed", error="x"))
    assert "nothing to conclude" in conclusion(failed)
    text = conclusion(_table(_row("transfer", 1e-3, epoch=3, val=40.0, test=38.0)))
    assert "40.00 %" in text and "**38.00 % [95 % CI" in text and "No fine-tuning run finished" in text


def test_lr_suggestion_near_means_within_a_factor_of_three():
    assert "is near it (2.5 times below)" in lr_suggestion_text(1e-4, 2.5e-4)
    assert "is not near it (100 times above)" in lr_suggestion_text(1e-2, 1e-4)
    assert "(the same value)" in lr_suggestion_text(1e-4, 1e-4)


def test_a_finished_run_is_reused_only_with_the_same_config(tmp_path):
    cfg = lab_config("demo", TINY, str(tmp_path / "runs"))
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


def test_the_at_a_glance_cells_come_first_under_the_title(tmp_path):
    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

    from lab5_utils.report.execute import NotebookRun

    glance = {"tags": ["at-a-glance"]}
    analysis_nb = new_notebook(cells=[
        new_markdown_cell("# Part 4"),
        new_markdown_cell("## At a glance", metadata=glance),
        new_code_cell("headline()", metadata=glance, outputs=[new_output(
            "display_data", data={"text/markdown": "**HEADLINE** from the runs"})]),
        new_markdown_cell("## Conclusion")])
    nbformat.write(analysis_nb, tmp_path / "04.ipynb")
    nbformat.write(new_notebook(cells=[new_markdown_cell("# Part 1")]), tmp_path / "01.ipynb")
    runs = [NotebookRun("01_data_exploration", "01_data_exploration", "1. Data", status="done",
                        notebook=tmp_path / "01.ipynb"),
            NotebookRun("04_analysis", "04_analysis", "4. Analysis", status="done",
                        notebook=tmp_path / "04.ipynb")]
    combined = export.combine_notebooks(runs, "# Title", glance="fallback", contents="## Sections")
    sources = [c.source for c in combined.cells]
    assert sources[:4] == ["# Title", "## At a glance", "headline()", "## Sections"]
    assert sources.count("headline()") == 1 and "fallback" not in " ".join(sources)
    assert sources[-1] == "### Conclusion"  # 04's own cells follow, demoted, without the glance
    runs[1].notebook, runs[1].status = None, "failed"  # 04 failed: the report's own headline
    combined = export.combine_notebooks(runs, "# Title", glance="**fallback**", contents="")
    assert combined.cells[1].source == "## At a glance\n\n**fallback**"


# --- real sweeps (tiny) -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """One sweep over two good LRs and one that fails, with 01 beside 02 and 03s two at a time."""
    root = tmp_path_factory.mktemp("report")
    out, figures = root / "out", root / "figures"
    cfg = lab_config("demo", TINY, str(out / "runs"))
    poisoned = out / "runs" / f"finetune_lr={lr_label(BAD_LR)}"
    poisoned.mkdir(parents=True)  # an unfinished run made with another seed: run_stage refuses it
    (poisoned / "config.json").write_text(cfg.replace(seed=cfg.seed + 1).to_json())
    result = run_report("demo", [*GOOD_LRS, BAD_LR], TINY, out=out, jobs=2, figures_dir=figures)
    return result, cfg, figures


def _metrics(cfg, name):
    return json.loads((Path(cfg.run_root) / name / "metrics.json").read_text())


def _finetune_names():
    return [f"finetune_lr={lr_label(lr)}" for lr in GOOD_LRS]


@pytest.mark.slow
def test_a_failing_lr_does_not_stop_the_others(sweep):
    """Slow: reads the sweep (`sweep`: six notebooks executed with papermill)."""
    result, _, _ = sweep
    status = {run.name: run.status for run in result.runs}
    bad = f"03_fine_tuning_lr={lr_label(BAD_LR)}"
    assert status.pop(bad) == "failed" and set(status.values()) == {"done"}
    assert result.exit_code == 1
    error = next(run.error for run in result.runs if run.name == bad)
    assert error.startswith("RunError:") and "different configuration" in error
    assert len(status) == 3 + len(GOOD_LRS)  # 01, 02, 04 and one 03 per good LR


@pytest.mark.slow
def test_every_notebook_runs_top_to_bottom(sweep):
    """Slow: reads the sweep (`sweep`: six notebooks executed with papermill)."""
    result, _, _ = sweep
    import nbformat

    for run in result.runs:
        nb = nbformat.read(run.notebook, as_version=4)
        errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
        assert bool(errors) == (run.status == "failed"), run.name
        assert run.html.is_file() and run.notebook.parent.name == "notebooks"
    names = {run.notebook.name for run in result.runs}
    assert {f"03_fine_tuning_lr={lr_label(lr)}.ipynb" for lr in GOOD_LRS} <= names


@pytest.mark.slow
def test_the_report_kernels_print_lines_not_a_progress_bar(sweep):
    """Papermill starts ordinary Jupyter kernels; `LAB5_PROGRESS=lines` tells them that nobody
    watches a bar (slow: it reads the sweep's executed notebooks)."""
    import nbformat

    result, _, _ = sweep
    transfer = next(run for run in result.runs if run.source == "02_transfer_learning")
    nb = nbformat.read(transfer.notebook, as_version=4)
    text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", [])
                   if o.output_type == "stream")
    assert re.search(r"^1/1 - \d+s - .* - loss: ", text, re.M)  # Keras' line per epoch (verbose=2)
    assert "\r" not in text and "\u2501" not in text  # no redrawn bar


@pytest.mark.slow
def test_the_report_holds_every_section_figure_and_run(sweep):
    """Slow: reads the sweep (`sweep`: six notebooks executed with papermill)."""
    result, cfg, figures = sweep
    html = result.html.read_text()
    assert result.html == result.out / "lab5_report.html"
    for lr in (*GOOD_LRS, BAD_LR):
        assert f'id="03-fine-tuning-lr-{lr_label(lr)}"' in html
        assert f'href="#03-fine-tuning-lr-{lr_label(lr)}"' in html  # table of contents
    for name in ("val_accuracy_by_lr", "val_loss_by_lr", "history_transfer", "confusion"):
        before = html[: html.index(f"Figure: {name}")]
        assert before.rfind("data:image/png;base64,") > before.rfind("Figure: ")  # embedded
    for name in ("class_balance", "image_sizes", "sample_images", "augmentation_preview",
                 "history_transfer", "val_accuracy_by_lr", "val_loss_by_lr", "per_class",
                 "sweep_results",
                 "confusion", "predictions", "top_losses", "gradcam_top_losses",
                 *(f"history_{n}" for n in _finetune_names())):
        assert (figures / f"{name}.svg").is_file() and (figures / f"{name}.png").is_file(), name
    table = re.search(r'<table[^>]*id="lab5-results".*?<tbody>(.*?)</tbody>', html, re.S).group(1)
    assert table.count("<tr>") == 2 + len(GOOD_LRS)  # transfer, the good LRs, the failed one
    assert "lab_config" not in html and "<script src=" not in html  # code hidden, no CDN
    assert "Failed:" in html and "different configuration" in html


@pytest.mark.slow
def test_the_first_screen_tells_the_result_and_the_tables_read_as_words(sweep):
    """Slow: it reads the report of the module's real sweep (the fixture runs every notebook)."""
    from tests.test_tables import table_problems

    result, cfg, _ = sweep
    html = result.html.read_text()
    text = re.sub(r"<[^>]+>", "", html)
    glance, sections = html.index("At a glance"), html.index("Sections")
    assert html.index("Lab 5 report") < glance < html.index("Figure: sweep_results") < sections
    assert html[glance:sections].count("data:image/png;base64,") == 1  # the figure, embedded
    assert re.search(r"Validation chose fine-tuning at lr=\S+\. On \d+ test images it reaches "
                     r"[\d.]+ % \[95 % CI", text)
    assert "Training time: 3 runs" in text and "on the CPU" in text
    assert "Summary." not in text and text.count("Chosen on validation") == 1  # once, in 04
    assert table_problems(html) == []
    assert "own splits are used" not in text  # the original-lab comparison says what we do
    assert "Here the splits are fixed before training (three generated sets" in text  # from the runs


@pytest.mark.slow
def test_the_conclusion_quotes_the_runs_metrics(sweep):
    """Slow: reads the sweep (`sweep`: six notebooks executed with papermill)."""
    from lab5_utils.evaluate.scoring import load_predictions
    from lab5_utils.evaluate.stats import accuracy_interval, mcnemar_exact

    result, cfg, _ = sweep
    transfer = _metrics(cfg, "transfer")
    runs = {lr: _metrics(cfg, name) for lr, name in zip(GOOD_LRS, _finetune_names())}
    best = max(sorted(runs, reverse=True), key=lambda lr: runs[lr]["best_val_accuracy"])  # validation
    m = runs[best]
    text = re.sub(r"<[^>]+>", "", result.html.read_text())  # the report's text, without tags
    sentence = re.search(r"Chosen on validation, fine-tuning at lr=\S+ had .*", text).group(0)
    assert sentence.startswith(f"Chosen on validation, fine-tuning at lr={lr_label(best)} ")
    low, high = accuracy_interval(m["best_val_accuracy"], m["num_val"])
    assert (f"({100 * m['best_val_accuracy']:.2f} % [95 % CI {100 * low:.1f}-{100 * high:.1f}] at "
            f"epoch {m['best_epoch']})") in sentence
    assert f"On the test split it reaches {100 * m['test_accuracy']:.2f} %" in sentence
    chosen = Path(cfg.run_root) / f"finetune_lr={lr_label(best)}"
    paired = mcnemar_exact(load_predictions(Path(cfg.run_root) / "transfer").correct,
                           load_predictions(chosen).correct)
    change = 100 * (m["test_accuracy"] - transfer["test_accuracy"])
    said = "the same test accuracy" if change == 0 else f"{change:+.2f} points against"
    assert said in sentence
    assert f"{p_equals(paired.p_value)})" in sentence
    assert ("within noise" in sentence) == (paired.p_value >= 0.05)
    rows = pd.read_csv(result.out / "results.csv")
    assert list(rows["status"]) == ["finished", "failed", "finished", "finished"]
    assert rows["test images"].iloc[0] == cfg.num_classes * 4


@pytest.mark.slow
def test_show_code_exports_the_code_cells(sweep):
    """Slow: reads the sweep (`sweep`: six notebooks executed with papermill)."""
    result, _, _ = sweep
    combined = export.combine_notebooks(result.runs, "# test", hide_code=False)
    assert "lab_config" in export.export_html(combined, hide_code=False)  # highlighted source


@pytest.mark.slow
def test_a_second_report_trains_nothing_new_and_auto_adds_the_suggestion(sweep, monkeypatch):
    """Slow: a second report over the sweep (notebook 04 runs again in a kernel)."""
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
                      *(f"03_fine_tuning_lr={lr_label(lr)}" for lr in GOOD_LRS)}
    assert all(f"03-fine-tuning-lr-{lr_label(lr)}" in again.html.read_text() for lr in GOOD_LRS)


@pytest.mark.slow
def test_a_sweep_killed_mid_way_keeps_finished_lrs_and_resumes_the_interrupted_one(sweep):
    """Slow: a `lab5 report` process killed in a new run, then a report that resumes it."""
    result, cfg, figures = sweep
    new_lr = 3e-4
    finished = [Path(cfg.run_root) / n for n in ("transfer", *_finetune_names())]
    before = {p: p.stat().st_mtime_ns for run in finished for p in run.rglob("*") if p.is_file()}
    target = Path(cfg.run_root) / f"finetune_lr={lr_label(new_lr)}"
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
    assert f"03_fine_tuning_lr={lr_label(new_lr)}" not in reused
    assert {f"03_fine_tuning_lr={lr_label(lr)}" for lr in GOOD_LRS} <= reused
    epochs = list(pd.read_csv(target / "history.csv")["epoch"])
    assert len(epochs) == len(set(epochs)) == cfg.finetune_epochs  # each epoch once
    rows = pd.read_csv(again.out / "results.csv")
    assert list(rows["status"]) == ["finished"] * (2 + len(GOOD_LRS))
    html = again.html.read_text()
    assert all(f'id="03-fine-tuning-lr-{lr_label(lr)}"' in html for lr in (*GOOD_LRS, new_lr))


@pytest.mark.slow
def test_a_sweep_of_a_setting_renders_with_its_comparison_and_verdict(sweep):
    """A second sweep in the same folder: one fine-tuning run per value of `label_smoothing` at
    one learning rate, from the same transfer run (slow: two notebooks train)."""
    result, cfg, figures = sweep
    transfer = Path(cfg.run_root) / "transfer"
    before = {p: p.stat().st_mtime_ns for p in transfer.rglob("*") if p.is_file()}
    again = run_report("demo", ["1e-3"], TINY, out=result.out, jobs=2, figures_dir=figures,
                       sweep="label_smoothing=0,0.1")
    assert again.exit_code == 0
    assert {p: p.stat().st_mtime_ns for p in transfer.rglob("*") if p.is_file()} == before
    names = [r.name for r in again.runs]
    assert names[2:4] == ["03_fine_tuning_lr=1e-03_label_smoothing=0",
                          "03_fine_tuning_lr=1e-03_label_smoothing=0.1"]
    for value in ("0", "0.1"):
        saved = json.loads((Path(cfg.run_root) / f"finetune_lr=1e-03_label_smoothing={value}"
                            / "config.json").read_text())
        assert saved["label_smoothing"] == float(value) and saved["finetune_learning_rate"] == 1e-3
    rows = pd.read_csv(again.out / "results.csv")
    assert list(rows["setting"]) == ["transfer learning", "label_smoothing=0", "label_smoothing=0.1"]
    html = again.html.read_text()
    text = re.sub(r"<[^>]+>", "", html)
    assert "vs first value" in html and "Fine-tuning at label_smoothing=0 (lr=1e-03)" in text
    best = rows.iloc[1:].loc[rows.iloc[1:]["val accuracy (%)"].idxmax()]
    assert f"Validation chose fine-tuning at {best['setting']} (lr=1e-03)." in text
    assert "Against the first value, label_smoothing=0, on the same test images" in text
    p = rows.iloc[2]["McNemar p vs first"]
    assert f"({p_equals(p)}, {rows.iloc[2]['vs first']})" in text
    assert (rows.iloc[2]["vs first"] == "within noise") == (p >= 0.05)
    assert (figures / "val_accuracy_by_label_smoothing.png").is_file()


@pytest.mark.slow
def test_a_sweep_of_tta_is_chosen_on_validation_at_its_settings_without_training_again(sweep):
    """A sweep of a test-time setting in the same folder: its values train as the finished
    lr=1e-03 run did, so both copy that training and are only measured, and validation at
    each value's settings chooses (slow: two notebooks evaluate EfficientNet in kernels)."""
    result, cfg, figures = sweep
    again = run_report("demo", ["1e-3"], TINY, out=result.out, jobs=2, figures_dir=figures,
                       sweep="tta=none,flip")
    assert again.exit_code == 0
    for value in ("none", "flip"):
        metrics = _metrics(cfg, f"finetune_lr=1e-03_tta={value}")
        assert metrics["trained_in"] == "finetune_lr=1e-03" and metrics["wall_time_s"] < 5
    rows = pd.read_csv(again.out / "results.csv")
    assert list(rows["test-time settings"]) == ["one pass at 32 px", "one pass at 32 px",
                                                "flip TTA at 32 px"]
    assert rows.loc[1, "val accuracy (%)"] == rows.loc[2, "val accuracy (%)"]  # one training
    runs = rows.iloc[1:]
    best = runs.loc[runs["test-time val accuracy (%)"].idxmax()]
    text = re.sub(r"<[^>]+>", "", again.html.read_text())
    assert f"Validation chose fine-tuning at {best['setting']} (lr=1e-03)." in text
    assert "validation accuracy at test time (%) [95 % CI]" in text
