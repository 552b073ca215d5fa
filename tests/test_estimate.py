"""The time estimate before `quick`/`full`: its arithmetic, its text and the no-GPU stop."""

import pytest

from lab5_utils.config import LabConfig, lab_config
from lab5_utils.cost import estimate
from lab5_utils.cost.estimate import CPURunRefused, Hardware, Timing
from lab5_utils.train.sweep import sweep_runs

T4 = Hardware(["Tesla T4"], 2, on_colab=True)
CPU = Hardware([], 2, on_colab=True)
# stand-in timings: 0.25 s a frozen step, 0.5 s unfrozen, 0.1 s a validation step
TIMING = Timing({"transfer": 0.25, "finetune": 0.5}, 0.1, {"transfer": 20.0, "finetune": 30.0}, 5, 64)


def test_the_sizes_of_quick_and_full_follow_from_the_splits():
    assert estimate.split_sizes(LabConfig.preset("quick")) == (101 * 75, 3787, 101)  # 5 % of 75,750
    assert estimate.split_sizes(LabConfig.preset("full")) == (75_750 - 3787, 3787, 101)
    assert estimate.split_sizes(LabConfig.preset("demo")) == (300, 100, 10)


def test_the_arithmetic_steps_times_seconds_times_epochs():
    cfg = LabConfig.preset("quick")  # batch 64, 5 + 5 epochs
    transfer = estimate.estimate_stage(cfg, "transfer", TIMING, 7575, 3787)
    assert (transfer.train_steps, transfer.val_steps) == (119, 60)  # ceil(7575/64), ceil(3787/64)
    assert transfer.seconds_per_epoch == pytest.approx(119 * 0.25 + 60 * 0.1)  # 35.75 s
    assert transfer.seconds == pytest.approx(20 + 5 * 35.75)
    finetune = estimate.estimate_stage(cfg, "finetune", TIMING, 7575, 3787)
    assert finetune.seconds == pytest.approx(30 + 5 * (119 * 0.5 + 60 * 0.1))
    assert estimate.total_seconds([transfer, finetune], finetune_runs=4) == pytest.approx(
        transfer.seconds + 4 * finetune.seconds)
    text = estimate.estimate_text(cfg, T4, TIMING, [transfer, finetune], finetune_runs=4)
    assert "[lab5] hardware: GPU: Tesla T4 (Colab)" in text
    assert "transfer 0.250 s a training step, finetune 0.500 s a training step" in text
    assert "transfer (frozen base): 119 training + 60 validation steps = about 36 s an epoch" in text
    assert "5 epochs = about 3 min" in text  # 198.75 s
    assert "finetune (unfreeze=all): 119 training + 60 validation steps = about 66 s an epoch" in text
    assert "in all (transfer + 4 fine-tuning runs): about 27 min" in text  # 198.75 + 4 * 357.5 s
    assert [estimate.duration(s) for s in (40, 600, 4 * 3600, 3 * 86400)] == [
        "40 s", "10 min", "4.0 h", "3.0 days"]


def test_without_a_gpu_quick_stops_with_the_way_to_switch_the_runtime():
    cpu_timing = Timing({"transfer": 6.0}, 2.0, {"transfer": 60.0}, 2, 64)
    lines = []
    with pytest.raises(CPURunRefused) as refused:
        estimate.preflight(LabConfig.preset("full"), "transfer", steps=2, echo=lines.append,
                           measure_fn=lambda cfg, stages, steps: (CPU, cpu_timing))
    # full: ceil(71963/64) = 1125 steps * 6 s + 60 * 2 s = 6870 s an epoch, 10 epochs + 60 s
    assert "about 19.1 h" in lines[1] and "10 epochs" in lines[1]
    warning = lines[-1]
    assert warning.startswith("WARNING: no GPU found on this Colab runtime (2 CPU cores)")
    assert "the `full` preset would take about 19.1 h here" in warning
    assert "Runtime > Change runtime type > Hardware accelerator: a GPU" in warning
    assert "allow_cpu = True" in warning and "--allow-cpu" in warning
    assert "Nothing was started" in str(refused.value)
    lines.clear()
    estimate.preflight(LabConfig.preset("full"), "transfer", allow_cpu=True, steps=2,
                       echo=lines.append, measure_fn=lambda cfg, stages, steps: (CPU, cpu_timing))
    assert lines[-2].startswith("WARNING: no GPU") and "training on the CPU as asked" in lines[-1]


def test_a_gpu_or_the_demo_goes_ahead_without_a_warning():
    lines = []
    done = estimate.preflight(LabConfig.preset("quick"), estimate.STAGES, echo=lines.append,
                              measure_fn=lambda cfg, stages, steps: (T4, TIMING))
    assert [e.stage for e in done] == ["transfer", "finetune"]
    assert not any("WARNING" in line for line in lines)

    def never(*args):
        raise AssertionError("the demo is not measured")

    assert estimate.preflight(LabConfig.preset("demo"), measure_fn=never, hardware=CPU) == []
    lines.clear()  # steps=0: hardware only (what a notebook run by `lab5 report` does)
    with pytest.raises(CPURunRefused, match="the `quick` preset would take days here"):
        estimate.preflight(LabConfig.preset("quick"), steps=0, hardware=CPU, echo=lines.append,
                           measure_fn=never)
    assert lines[0] == "[lab5] hardware: CPU only, 2 cores, no GPU (Colab)"


def test_lab5_train_and_report_refuse_quick_on_a_cpu_before_starting(tmp_path, monkeypatch, capsys):
    from lab5_utils.cli import main
    from lab5_utils.report import build

    cpu_timing = Timing({"transfer": 6.0, "finetune": 12.0}, 2.0, {}, 2, 64)
    monkeypatch.setattr(estimate, "_measure_here", lambda cfg, stages, steps: (CPU, cpu_timing))
    monkeypatch.setattr(estimate, "measure_in_subprocess",
                        lambda cfg, settings, stages, steps: (CPU, cpu_timing))
    assert main(["train", "--preset", "quick", "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr()
    assert "lab5 train: error: no GPU found" in err.err and "Change runtime type" in err.out
    assert not (tmp_path / "run").exists()
    with pytest.raises(CPURunRefused, match="--allow-cpu"):
        build.run_report("quick", out=tmp_path / "out")
    out = capsys.readouterr().out
    assert "in all (transfer + 4 fine-tuning runs)" in out
    assert not (tmp_path / "out" / "notebooks").exists()


def test_a_report_with_out_keeps_its_figures_there(tmp_path):
    from lab5_utils.files import project_root
    from lab5_utils.report.build import report_folders

    assert report_folders("quick", tmp_path / "r") == (tmp_path / "r", tmp_path / "r" / "figures")
    assert report_folders("quick", tmp_path / "r", tmp_path / "f")[1] == tmp_path / "f"
    assert report_folders("demo") == (project_root() / "reports" / "demo", project_root() / "figures")


def test_a_resumed_sweep_estimates_only_the_runs_still_to_train(tmp_path, monkeypatch):
    from lab5_utils.report import build

    calls = []
    monkeypatch.setattr(estimate, "preflight", lambda cfg, stages, *a, **k: calls.append(
        (stages, k["finetune_runs"])))
    cfg = lab_config("quick", [], str(tmp_path / "runs"))
    for name in ("transfer", "finetune_lr=1e-04"):
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "metrics.json").write_text("{}")
    build._preflight(cfg, sweep_runs([1e-4, 1e-5]), False, False, False, 5, [])
    build._preflight(cfg, sweep_runs([1e-4]), False, False, False, 5, [])  # everything finished
    build._preflight(cfg, sweep_runs([1e-4]), True, False, False, 5, [])  # `auto` adds a run
    assert calls == [(["finetune"], 1), (["finetune"], 1)]
    text = estimate.estimate_text(cfg, T4, TIMING, [estimate.estimate_stage(
        cfg, "finetune", TIMING, 7575, 3787)], finetune_runs=3)
    assert "in all (3 fine-tuning runs): about" in text


@pytest.mark.parametrize("images_per_s, bound", [(100.0, "input"), (1000.0, "step")])
def test_the_slower_of_the_input_pipeline_and_the_step_sets_the_epoch(images_per_s, bound):
    """quick's 7,575 training images: the T4 stand-in steps at 64/0.25 = 256 images/s."""
    cfg = LabConfig.preset("quick")
    timing = Timing({"transfer": 0.25}, 0.1, {}, 5, 64, images_per_s, "pipeline")
    stage = estimate.estimate_stage(cfg, "transfer", timing, 7575, 3787)
    training = 7575 / images_per_s if bound == "input" else 119 * 0.25
    assert stage.bound == bound and stage.seconds_per_epoch == pytest.approx(training + 6.0)
    text = estimate.estimate_text(cfg, T4, timing, [stage])
    assert f"pipeline (augment_on=pipeline) delivers {images_per_s:.0f} images/s" in text
    assert (f"{bound}-bound: the CPU delivers {images_per_s:.0f} images/s, the step takes 0.25 s"
            if bound == "input" else "step-bound: the step takes 0.25 s a batch of 64 (256 "
            f"images/s), the CPU delivers {images_per_s:.0f} images/s") in text
