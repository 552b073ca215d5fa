"""Resources of runs: the table, the exact optimizer state, the training's own memory, and the
sentence about it for both signs of the measurement."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from lab5_utils.cost.resources import (
    RESOURCE_COLUMNS,
    TrainingMemory,
    optimizer_state_mb,
    resource_table,
    stage_means,
)
from lab5_utils.report.narrative import memory_text


def write_run(root, name, **metrics):
    (root / name).mkdir()
    (root / name / "metrics.json").write_text(json.dumps(metrics))


def test_optimizer_state_is_gradient_plus_two_adam_moments_per_weight():
    assert optimizer_state_mb(2**20) == 12.0  # 4 bytes each for the gradient, m and v


def test_resource_table_and_stage_means(tmp_path):
    write_run(tmp_path, "t1", stage="transfer", learning_rate=1e-3, trainable_params=100,
              optimizer_state_mb=0.1, training_memory_mb=400.0, memory_kind="rss",
              seconds_per_epoch=2.0)
    write_run(tmp_path, "f1", stage="finetune", learning_rate=1e-5, trainable_params=5000,
              optimizer_state_mb=5.0, training_memory_mb=500.0, memory_kind="rss")
    write_run(tmp_path, "f2", stage="finetune", trainable_params=5000, optimizer_state_mb=5.0,
              training_memory_mb=700.0, memory_kind="rss")
    (tmp_path / "no_metrics").mkdir()
    table = resource_table(sorted(tmp_path.iterdir()))
    assert list(table.columns) == RESOURCE_COLUMNS and list(table["run"]) == ["f1", "f2", "t1"]
    assert math.isnan(table.set_index("run").loc["f2", "learning_rate"])
    pd.testing.assert_frame_equal(resource_table(tmp_path), table)  # the parent folder: same rows
    means = stage_means(table)
    assert means["finetune"]["training_memory_mb"] == 600.0
    assert means["transfer"]["trainable_params"] == 100


def test_stage_means_refuses_what_cannot_be_compared(tmp_path):
    assert stage_means(resource_table([tmp_path])) is None
    write_run(tmp_path, "t", stage="transfer", trainable_params=1, optimizer_state_mb=0.0,
              training_memory_mb=400.0, memory_kind="rss")
    assert stage_means(resource_table(tmp_path)) is None  # no finetune run
    write_run(tmp_path, "g", stage="finetune", trainable_params=9, optimizer_state_mb=1.0,
              training_memory_mb=300.0, memory_kind="gpu")
    assert stage_means(resource_table(tmp_path)) is None  # measured two ways
    assert "could not be compared" in memory_text(None)


def _stages(transfer_mb, finetune_mb, params=(1_000, 4_000_000)):
    return {stage: {"trainable_params": n, "optimizer_state_mb": optimizer_state_mb(n),
                    "training_memory_mb": mb}
            for stage, n, mb in zip(("transfer", "finetune"), params, (transfer_mb, finetune_mb))}


def test_memory_sentence_agrees_with_the_numbers_whichever_way_they_go():
    state = optimizer_state_mb(4_000_000) - optimizer_state_mb(1_000)  # 45.76 MB more state
    more = memory_text(_stages(100.0, 300.0))
    assert f"({state:+.2f} MB, exact)" in more and "(+200 MB)" in more
    assert "covers the extra optimizer state" in more
    fewer = memory_text(_stages(300.0, 250.0))
    assert "(-50 MB)" in fewer and "shows no increase" in fewer
    assert "covers" not in fewer and "more memory than" not in fewer
    small = memory_text(_stages(100.0, 110.0))
    assert "(+10 MB)" in small and "smaller than the extra optimizer state" in small
    same = memory_text(_stages(100.0, 300.0, params=(5, 5)))
    assert "trains no more parameters" in same


def test_training_memory_measures_what_the_block_allocates():
    with TrainingMemory() as quiet:
        pass
    with TrainingMemory() as busy:
        block = np.ones(64 * 2**20 // 8)  # 64 MiB touched
        block += 1
    del block
    assert quiet.kind == busy.kind == "RSS peak during training"
    assert quiet.mb < 16 and busy.mb == pytest.approx(64, abs=16)


def test_the_memory_text_counts_the_ema_copy_only_when_there_is_one():
    stages = _stages(100.0, 300.0)
    assert "EMA" not in memory_text(stages)
    stages["finetune"]["ema_state_mb"] = 5.6
    assert "the EMA's averaged copy of those weights adds 5.60 MB" in memory_text(stages)
