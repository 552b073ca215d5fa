"""Run folders written by earlier versions of lab5 are reused or resumed when every setting that
changes their results is equal, and refused, naming the field, only when one differs.

The fixtures in tests/data are config.json files exactly as earlier versions wrote them: for each
commit, `git show <commit>:lab5_utils/config.py` was loaded as a module and its
`LabConfig.preset(name, run_root=f"runs/{name}").to_json() + "\\n"` saved (what that version's
`run_stage` wrote). 625ef24 is the version before `lab5_version` was recorded; a5f0878 predates
`distribution` and `steps_per_execution` (and wrote `jit_compile` as a bool); 99f4bb1 predates
the test split and the training cache.

tests/data/runs_6aa371c holds two run folders of `lab5 report --preset demo` at 6aa371c, the commit
before lab5_utils moved into sub-packages (issue 26): every file but best.keras and tb/ (the
weights, 17-29 MB), i.e. what decides finished and same settings and what the report reads.
"""

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from lab5_utils.config import LabConfig
from lab5_utils.cost import speed
from lab5_utils.report.analysis import results_table
from lab5_utils.train import rundir, training
from lab5_utils.train.rundir import LEGACY_VALUES, RESULT_NEUTRAL_FIELDS
from lab5_utils.train.training import RunError, run_stage

DATA = Path(__file__).parent / "data"
BEFORE_THE_ROOMS = DATA / "runs_6aa371c"  # written by the flat lab5_utils (see above)


def _old_config(name: str) -> dict:
    return json.loads((DATA / f"config_{name}.json").read_text())


def _finished_run(run_dir: Path, config: dict) -> dict:
    """A finished run folder as far as reuse reads it: config.json, metrics.json, history.csv."""
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    metrics = {"best_val_accuracy": 0.5, "test_accuracy": 0.45}
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    (run_dir / "history.csv").write_text("epoch,loss,accuracy,val_loss,val_accuracy\n"
                                         "0,1.0,0.4,1.1,0.5\n")
    return metrics


def _no_training(monkeypatch):
    def refuse(*args):
        raise AssertionError("run_stage started to load data and train")

    monkeypatch.setattr(training, "load_encoded", refuse)


@pytest.mark.parametrize("version", ["625ef24", "a5f0878"])
def test_a_finished_demo_run_of_an_earlier_version_is_reused_without_training(
        tmp_path, monkeypatch, version):
    old = _old_config(f"{version}_demo")
    assert "lab5_version" not in old  # written before the version was recorded
    metrics = _finished_run(tmp_path / "runs" / "transfer", old)
    _no_training(monkeypatch)
    cfg = LabConfig.preset("demo", run_root=str(tmp_path / "runs"))
    reused = run_stage(cfg, "transfer", reuse=True, verbose=0)
    assert reused.metrics == metrics and list(reused.history["epoch"]) == [1]


def test_a_changed_learning_rate_is_refused_with_the_field_and_both_values(tmp_path, monkeypatch):
    _finished_run(tmp_path / "runs" / "transfer", _old_config("625ef24_demo"))
    _no_training(monkeypatch)
    cfg = LabConfig.preset("demo", run_root=str(tmp_path / "runs"), learning_rate=1e-3)
    with pytest.raises(RunError) as refused:
        run_stage(cfg, "transfer", reuse=True, verbose=0)
    message = str(refused.value)
    assert "learning_rate: 0.01 in the run, 0.001 now" in message
    assert "written by a lab5 version from before lab5_version" in message
    assert "--force (force=True)" in message and "--out DIR" in message
    assert message.count(" in the run") == 1  # nothing else differs


def test_a_field_the_old_file_lacks_counts_at_its_legacy_value(tmp_path):
    """99f4bb1 had no training cache (cache_train's legacy value is off) and no test split."""
    old = _old_config("99f4bb1_demo")
    cfg = LabConfig.preset("demo", run_root=str(tmp_path))
    changed = rundir.differences(old, cfg)
    assert any(c.startswith("cache_train: '' in the run (a field added later") for c in changed)
    assert any(c.startswith("test_split: missing in the run (the run predates the test split")
               for c in changed)
    assert not any(c.startswith("cache_train") for c in rundir.differences(
        old, cfg.replace(cache_train="")))  # off now too: the same crops
    # jit_compile (a bool then), steps_per_execution and distribution cannot change results
    assert not any(c.split(":")[0] in RESULT_NEUTRAL_FIELDS for c in changed)


def test_quick_of_the_previous_version_differs_exactly_where_the_quick_preset_changed(tmp_path):
    old = _old_config("625ef24_quick")
    cfg = LabConfig.preset("quick", run_root=str(tmp_path / "runs"))
    cfg = speed.choose_augment_on(cfg, old)[0]  # augment_on=auto keeps the run's placement
    defaults = {f.name: f.default_factory() if f.default is dataclasses.MISSING else f.default
                for f in dataclasses.fields(LabConfig)}
    now = json.loads(json.dumps(cfg.to_dict()))
    expected = {name for name, value in now.items() if name not in RESULT_NEUTRAL_FIELDS and (
        old[name] != value if name in old else LEGACY_VALUES.get(name, defaults[name]) != value)}
    assert {c.split(":")[0] for c in rundir.differences(old, cfg)} == expected
    _finished_run(tmp_path / "runs" / "transfer", old)
    if not expected:  # today's quick is the previous version's: its finished runs are kept
        assert run_stage(cfg, "transfer", reuse=True, verbose=0).metrics["test_accuracy"] == 0.45
        return
    with pytest.raises(RunError) as refused:
        run_stage(cfg, "transfer", reuse=True, verbose=0)
    assert all(f"{name}: " in str(refused.value) for name in expected)


@pytest.mark.slow
def test_an_unfinished_run_of_the_previous_version_is_resumed(trained_lab, tmp_path):
    """Slow: it needs a trained run folder (the session's tiny lab): the copy, left as a kill before
    metrics.json leaves it and given the config.json the previous version wrote for the same
    settings, is finished by evaluating its best model, without training again."""
    cfg, transfer, _ = trained_lab
    run_dir = tmp_path / "transfer"
    shutil.copytree(transfer.run_dir, run_dir)
    for name in ("metrics.json", "test_predictions.npz"):
        (run_dir / name).unlink()
    tiny = {k: now for k, (_, now) in LabConfig.preset("demo").diff(cfg).items()}
    old = _old_config("625ef24_demo") | tiny  # the old preset with the same overrides
    (run_dir / "config.json").write_text(json.dumps(old, indent=2, sort_keys=True) + "\n")
    kept = {p: p.read_bytes() for p in (run_dir / "history.csv", run_dir / "best.keras")}
    again = run_stage(cfg, "transfer", run_dir=run_dir, verbose=0)
    assert {p: p.read_bytes() for p in kept} == kept  # no epoch trained again
    assert again.metrics["test_accuracy"] == transfer.metrics["test_accuracy"]
    assert json.loads((run_dir / "config.json").read_text())["lab5_version"]


@pytest.mark.parametrize("dataset", ["synthetic", "folder"])
def test_the_validation_cache_holds_the_pixels_an_uncached_pass_computes(tmp_path, dataset):
    """Why cache_validation is not compared: a run's results do not depend on it."""
    import numpy as np

    from lab5_utils.data.benchdata import write_food_like_folder
    from lab5_utils.data.pipeline import make_pipeline
    from lab5_utils.data.splits import load_encoded

    if dataset == "folder":  # large JPEGs: decoded at a reduced DCT scale
        write_food_like_folder(tmp_path / "food", 8)
        dataset = f"folder:{tmp_path / 'food'}"
    cfg = LabConfig.preset("demo", dataset=dataset, image_size=64, num_classes=5,
                           synthetic_val_per_class=4, run_root=str(tmp_path))
    val = load_encoded(cfg)[1]
    cached, plain = (np.concatenate([x.numpy() for x, _ in make_pipeline(
        val, cfg.replace(cache_validation=cache), training=False)]) for cache in ("memory", ""))
    np.testing.assert_array_equal(cached, plain)


def _runs_from_before_the_rooms(tmp_path: Path) -> LabConfig:
    shutil.copytree(BEFORE_THE_ROOMS, tmp_path / "runs")
    return LabConfig.preset("demo", run_root=str(tmp_path / "runs"))


def test_runs_written_before_the_package_moved_are_finished_and_reused_without_training(
        tmp_path, monkeypatch):
    cfg = _runs_from_before_the_rooms(tmp_path)
    _no_training(monkeypatch)
    for stage, lr in (("transfer", None), ("finetune", 1e-4)):
        run_dir = training.default_run_dir(cfg, stage, lr)
        assert rundir.is_finished(run_dir), run_dir
        reused = run_stage(cfg, stage, learning_rate=lr, reuse=True, verbose=0)
        assert reused.metrics == json.loads((run_dir / "metrics.json").read_text())
        assert len(reused.history) == (cfg.transfer_epochs if stage == "transfer"
                                       else cfg.finetune_epochs)


def test_an_unfinished_run_from_before_the_move_passes_the_check_a_resume_makes(tmp_path):
    """A kill before metrics.json: the resume compares the folder's config.json with today's
    settings (the weights it would then load are left out of the fixture; the slow test above
    resumes a trained folder). A changed setting is still refused."""
    cfg = _runs_from_before_the_rooms(tmp_path)
    run_dir = training.default_run_dir(cfg, "finetune", 1e-4)
    (run_dir / "metrics.json").unlink()
    assert not rundir.is_finished(run_dir)
    recorded = json.loads((run_dir / "config.json").read_text())
    stage_cfg = training.stage_config(cfg, "finetune", 1e-4)
    stage_cfg = speed.choose_augment_on(stage_cfg, recorded)[0]  # auto keeps the run's placement
    rundir.check_same_config(run_dir, stage_cfg, "unfinished")
    with pytest.raises(RunError, match="label_smoothing: 0.0 in the run, 0.1 now"):
        rundir.check_same_config(run_dir, stage_cfg.replace(label_smoothing=0.1), "unfinished")


def test_runs_from_before_the_move_appear_in_the_sweeps_results_table(tmp_path):
    cfg = _runs_from_before_the_rooms(tmp_path)
    table = results_table(cfg).set_index("run")
    assert list(table.index) == ["transfer", "finetune_lr=1e-04"]
    assert (table["status"] == "finished").all()
    metrics = json.loads((BEFORE_THE_ROOMS / "finetune_lr=1e-04" / "metrics.json").read_text())
    assert table.loc["finetune_lr=1e-04", "test accuracy (%)"] == pytest.approx(
        100 * metrics["test_accuracy"])
    assert 0 <= table.loc["finetune_lr=1e-04", "McNemar p"] <= 1  # test_predictions.npz paired
