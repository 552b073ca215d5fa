"""Sweeps of any setting (`lab5 report --sweep KEY=V1,V2`): parsing, run names, the comparison
of a sweep's runs (validation chooses, test reports, McNemar against transfer and against the
first value), the report's headline and first figure. Fast: run folders are written by hand."""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lab5_utils.config import LabConfig, lab_config
from lab5_utils.evaluate.scoring import PREDICTIONS_FILE, Predictions, save_predictions
from lab5_utils.report import analysis, narrative, plots
from lab5_utils.report.build import run_report
from lab5_utils.tables import p_equals
from lab5_utils.train import sweep
from lab5_utils.train.sweep import SweepRun, parse_sweep, sweep_runs


@pytest.fixture
def cfg(tmp_path):
    return LabConfig.preset("demo", run_root=str(tmp_path / "runs"))


# --- parsing ------------------------------------------------------------------------------------
def test_a_sweep_spec_is_parsed_by_the_fields_type_and_names_its_runs(cfg):
    assert parse_sweep("dropout=0.2,0.5", cfg) == ("dropout", [0.2, 0.5])
    assert parse_sweep("augmentations=flip+crop,flip", cfg) == (
        "augmentations", [["flip", "crop"], ["flip"]])
    assert parse_sweep("deterministic=false,true", cfg) == ("deterministic", [False, True])
    runs = sweep_runs([1e-4], *parse_sweep("augmentations=flip+crop,flip", cfg))
    assert [r.name for r in runs] == ["finetune_lr=1e-04_augmentations=flip+crop",
                                      "finetune_lr=1e-04_augmentations=flip"]
    assert [r.label for r in runs] == ["augmentations=flip+crop", "augmentations=flip"]
    assert runs[0].title == "augmentations=flip+crop (lr=1e-04)"
    assert runs[1].config(cfg).augmentations == ["flip"]
    assert runs[1].change == {"augmentations": ["flip"]}
    # a learning-rate sweep keeps today's names, highest rate first
    lr_runs = sweep_runs([1e-5, 1e-4])
    assert [r.name for r in lr_runs] == ["finetune_lr=1e-04", "finetune_lr=1e-05"]
    assert lr_runs[0].label == lr_runs[0].title == "lr=1e-04" and lr_runs[0].change is None


@pytest.mark.parametrize("spec, message", [
    ("dropout", "expected KEY=V1,V2"),
    ("dropot=0.1", "no setting 'dropot'. Did you mean 'dropout'"),
    ("dropout=", "no values"),
    ("dropout= , ", "no values"),
    ("dropout=2", r"--sweep dropout=2: dropout=2.0 is not valid: expected a number from 0.0 to 0.99"),
    ("dropout=abc", "--sweep dropout=abc: dropout='abc' is not valid"),
    ("dropout=0.2,0.2", "given twice"),
    ("schedule=cosine,weekly", "--sweep schedule=weekly: schedule='weekly' is not valid"),
    ("seed=1,2", "cannot be swept, it also chooses the validation hold-out"),
    ("image_size=64,96", "cannot be swept"),
    ("finetune_learning_rate=1e-4", "is swept with --lrs"),
    ("tta=none,blur", "--sweep tta=blur: tta='blur' is not valid: expected one of none, flip"),
    ("test_image_size=96,16", "--sweep test_image_size=16: test_image_size=16 is not valid"),
])
def test_a_bad_sweep_is_one_clear_message(cfg, spec, message):
    with pytest.raises(ValueError, match=message):
        parse_sweep(spec, cfg)


def test_a_sweep_runs_at_one_learning_rate():
    with pytest.raises(ValueError, match="one learning rate: give --lrs one value"):
        sweep_runs([1e-4, 1e-5], "dropout", [0.2, 0.5])


def test_bad_sweeps_stop_the_report_before_anything_runs(tmp_path):
    out = tmp_path / "out"
    for kwargs, message in (({"sweep": "dropot=0.1"}, "Did you mean 'dropout'"),
                            ({"sweep": "dropout="}, "no values"),
                            ({"sweep": "dropout=0.2,7"}, "dropout=7"),
                            ({"sweep": "dropout=0.2,0.5", "lrs": ["1e-4", "1e-5"]}, "one learning rate"),
                            ({"sweep": "dropout=0.2,0.5", "lrs": ["auto"]}, "not 'auto'")):
        with pytest.raises(ValueError, match=re.escape(message)):
            run_report(out=out, figures_dir=tmp_path / "figures", **kwargs)
    assert not out.exists()


def test_notebook_03s_run_checks_its_setting_before_anything_loads(cfg):
    run = sweep.finetune_run(cfg, None, {"dropout": 0.5})
    assert (run.lr, run.name) == (cfg.finetune_learning_rate, "finetune_lr=1e-04_dropout=0.5")
    assert sweep.finetune_run(cfg, 1e-5, None) == SweepRun(1e-5)
    for setting, message in (({"dropout": 5}, "dropout=5"), ({"seed": 1}, "cannot be swept"),
                             ({"a": 1, "b": 2}, "sweep_setting=")):
        with pytest.raises(ValueError, match=message):
            sweep.finetune_run(cfg, 1e-4, setting)
    with pytest.raises(ValueError, match="learning_rate"):
        sweep.finetune_run(cfg, -1.0, None)


# --- comparing the runs of a sweep -------------------------------------------------------------
def _write_run(cfg, name, correct, val, lr=1e-4, seconds=30.0):
    """A finished run folder: metrics.json and per-image test predictions (`correct` per image)."""
    folder = Path(cfg.run_root) / name
    folder.mkdir(parents=True)
    correct = np.asarray(correct, bool)
    y_true = np.arange(len(correct)) % 3
    probs = np.full((len(correct), 3), 0.1, np.float32)
    predicted = np.where(correct, y_true, (y_true + 1) % 3)
    probs[np.arange(len(correct)), predicted] = 0.8
    save_predictions(folder / PREDICTIONS_FILE, Predictions(y_true, probs, np.zeros((0, 1, 1, 3))))
    metrics = {"learning_rate": lr, "best_val_accuracy": val, "num_val": 100, "best_epoch": 3,
               "test_accuracy": float(correct.mean()), "num_test": len(correct),
               "trainable_params": 1000, "seconds_per_epoch": 1.5, "wall_time_s": seconds,
               "device": "device: CPU (1 device, no GPU); ...", "split_rule": "three generated sets"}
    (folder / "metrics.json").write_text(json.dumps(metrics))


def _setting_sweep(cfg, n=400):
    """transfer; dropout=0.2 (first value); dropout=0.5, much better on test than both."""
    rng = np.random.default_rng(0)
    transfer = rng.random(n) < 0.5
    first = transfer.copy()
    first[:10] = ~first[:10]  # 10 images differ: noise
    better = transfer | (rng.random(n) < 0.4)  # about 80 more right: a real gain
    _write_run(cfg, "transfer", transfer, 0.50, lr=1e-2)
    runs = sweep_runs([1e-4], "dropout", [0.2, 0.5])
    _write_run(cfg, runs[0].name, first, 0.52)
    _write_run(cfg, runs[1].name, better, 0.70)
    return runs, transfer, first, better


def test_a_setting_sweep_is_compared_with_transfer_and_with_its_first_value(cfg):
    from lab5_utils.evaluate.stats import mcnemar_exact

    runs, transfer, first, better = _setting_sweep(cfg)
    table = analysis.results_table(cfg, runs)
    assert list(table["setting"]) == ["transfer learning", "dropout=0.2", "dropout=0.5"]
    gain = mcnemar_exact(first, better)
    row = table.iloc[2]
    assert row["test change vs first (points)"] == pytest.approx(100 * gain.difference, abs=0.01)
    assert row["McNemar p vs first"] == gain.p_value and row["vs first"] == "significant at 5 %"
    assert row["McNemar p"] == mcnemar_exact(transfer, better).p_value
    assert pd.isna(table.iloc[1]["McNemar p vs first"])  # the first value is the reference
    assert table.iloc[1]["vs transfer"] == "within noise"
    text = narrative.conclusion(table)
    assert "Chosen on validation, fine-tuning at **dropout=0.5 (lr=1e-04)** had the best " \
           "validation accuracy of the 2 values of dropout that finished" in text
    assert "Against the first value, dropout=0.2, on the same test images" in text
    assert (f"dropout=0.5 {100 * gain.difference:+.2f} points ({p_equals(gain.p_value)}, "
            "significant at 5 %)") in text
    assert "The other values on the test split: dropout=0.2" in text
    assert "LR range test" not in narrative.conclusion(table, suggested_lr=1e-4)  # not an LR sweep


def test_a_learning_rate_sweep_has_no_first_value_comparison(cfg):
    rng = np.random.default_rng(1)
    _write_run(cfg, "transfer", rng.random(100) < 0.5, 0.5, lr=1e-2)
    _write_run(cfg, "finetune_lr=1e-04", rng.random(100) < 0.5, 0.6)
    _write_run(cfg, "finetune_lr=1e-05", rng.random(100) < 0.5, 0.55, lr=1e-5)
    _write_run(cfg, "finetune_lr=1e-04_dropout=0.5", rng.random(100) < 0.5, 0.9)  # another sweep
    table = analysis.results_table(cfg)  # discovered: learning-rate runs only
    assert list(table["run"]) == ["transfer", "finetune_lr=1e-04", "finetune_lr=1e-05"]
    assert table["vs first"].isna().all() and narrative.swept_setting(table) is None


def test_the_glance_data_has_one_interval_per_run_and_marks_the_choice(cfg):
    runs, *_ = _setting_sweep(cfg)
    table = analysis.results_table(cfg, runs)
    data = analysis.glance_data(table)
    assert list(data["label"]) == ["transfer learning", "dropout=0.2", "dropout=0.5"]
    for split in ("val", "test"):
        assert (data[f"{split} low"] < data[f"{split} accuracy"]).all()
        assert (data[f"{split} accuracy"] < data[f"{split} high"]).all()
    assert list(data["chosen"]) == [False, False, True]  # the best validation accuracy, 70 %
    fig = plots.plot_sweep_results(data)
    ax = fig.axes[0]
    assert len(ax.containers) == 2 * len(data)  # a test and a validation interval per run
    ticks = sorted(zip(ax.get_yticks(), (t.get_text() for t in ax.get_yticklabels())), reverse=True)
    assert [label for _, label in ticks] == ["transfer learning", "dropout=0.2", "dropout=0.5  (chosen)"]
    assert [t.get_fontweight() for t in ax.get_yticklabels()] == ["normal", "normal", "bold"]
    bars = [c for c in ax.containers]
    test_bar = bars[2]  # the third run's test interval (runs drawn in order, test first)
    x = test_bar.lines[0].get_xdata()[0]
    assert x == pytest.approx(data["test accuracy"].iloc[2])


def test_the_headline_says_gain_loss_or_noise_as_the_numbers_do(cfg):
    runs, *_ = _setting_sweep(cfg)
    table = analysis.results_table(cfg, runs)
    text = narrative.headline(table)
    best = table.iloc[2]
    assert text.startswith("**Validation chose fine-tuning at dropout=0.5 (lr=1e-04).**")
    assert f"{best['test change vs transfer (points)']:+.2f} points against transfer learning" in text
    assert "**a significant gain**" in text and "Training time: 3 runs, 1:30 on the CPU" in text
    worse = table.copy()
    worse.loc[2, ["test change vs transfer (points)", "McNemar p", "vs transfer"]] = [-12.0, 1e-5,
                                                                                    "significant at 5 %"]
    assert "**a significant loss**" in narrative.headline(worse)
    noise = table.copy()
    noise.loc[2, ["test change vs transfer (points)", "McNemar p", "vs transfer"]] = [1.0, 0.6,
                                                                                    "within noise"]
    assert "+1.00 points against transfer learning" in narrative.headline(noise)
    assert "**within noise** (McNemar p = 0.600)" in narrative.headline(noise)
    none = analysis.results_table(cfg, sweep_runs([1e-6]))
    assert narrative.headline(none).startswith("**No fine-tuning run finished.**")


def test_notebook_04_runs_the_sweep_lab5_report_passed(cfg):
    swept = {"key": "dropout", "values": [0.2, 0.5]}
    assert [r.name for r in sweep.report_runs(cfg, [1e-5], swept)] == [
        "finetune_lr=1e-05_dropout=0.2", "finetune_lr=1e-05_dropout=0.5"]
    assert sweep.report_runs(cfg, None, swept)[0].lr == cfg.finetune_learning_rate
    assert sweep.report_runs(cfg, None, None) is None
    assert [r.lr for r in sweep.report_runs(cfg, [1e-5, 1e-4], None)] == [1e-4, 1e-5]
    assert lab_config("demo", [], str(cfg.run_root)).run_root == cfg.run_root


def test_the_original_lab_text_says_what_these_runs_did_with_labels_and_rates(cfg):
    runs, *_ = _setting_sweep(cfg)
    for name, smoothing in (("transfer", 0.0), (runs[0].name, 0.0), (runs[1].name, 0.1)):
        (Path(cfg.run_root) / name / "config.json").write_text(
            cfg.replace(label_smoothing=smoothing).to_json())
    text = narrative.original_fixes(cfg, analysis.results_table(cfg, runs))
    assert "one-hot targets of depth C made from them in the runs with label smoothing" in text
    assert "Here the splits are fixed before training (three generated sets)" in text
    assert "fine-tunes at lr=1e-04 and varies dropout" in text
    (Path(cfg.run_root) / runs[1].name / "config.json").write_text(cfg.to_json())
    plain = narrative.original_fixes(cfg, analysis.results_table(cfg, runs))
    assert "with a sparse cross-entropy: no one-hot encoding" in plain
