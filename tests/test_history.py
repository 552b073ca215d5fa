"""Tests of lab5_utils.train.epoch_logs on the original lab's logs and on small logs written here."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest
import tensorflow as tf
from tensorflow.core.framework import summary_pb2
from tensorflow.core.util import event_pb2

from lab5_utils.train.epoch_logs import (
    load_history,
    read_tensorboard,
    summarize_runs,
    truncate_csv,
    truncate_tensorboard,
)

REFERENCES = Path(__file__).resolve().parents[1] / "references" / "original_lab5"
# The metadata tf.summary.scalar attaches: tf.summary.write with it gives the same event
# (Keras 3 form) without needing the tensorboard package, which tf.summary.scalar imports.
SCALARS = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
)


def write_keras3(folder: Path, rows: list[dict[str, float]], first_step: int = 0) -> None:
    """One event file of epoch scalars as tensor summaries, one row per step."""
    writer = tf.summary.create_file_writer(str(folder))
    with writer.as_default():
        for step, row in enumerate(rows, start=first_step):
            for tag, value in row.items():
                tf.summary.write(tag, tf.constant(value, tf.float32), step=step, metadata=SCALARS)
    writer.close()


def write_keras2(
    folder: Path,
    rows: list[dict[str, float]],
    wall_time: float,
    first_step: int = 0,
    name: str | None = None,
) -> Path:
    """One event file of epoch scalars in the `simple_value` form of Keras 2."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (name or f"events.out.tfevents.{int(wall_time)}.host.1.v2")
    with tf.io.TFRecordWriter(str(path)) as writer:
        start = event_pb2.Event(wall_time=wall_time, file_version="brain.Event:2")
        writer.write(start.SerializeToString())
        for step, row in enumerate(rows, start=first_step):
            values = [summary_pb2.Summary.Value(tag=t, simple_value=v) for t, v in row.items()]
            event = event_pb2.Event(
                wall_time=wall_time + step + 1, step=step, summary=summary_pb2.Summary(value=values)
            )
            writer.write(event.SerializeToString())
    return path


def epochs(loss: list[float], acc: list[float]) -> list[dict[str, float]]:
    return [{"epoch_loss": a, "epoch_accuracy": b} for a, b in zip(loss, acc, strict=True)]


def count_events(folder: Path) -> int:
    return sum(
        1 for f in folder.rglob("events.out.tfevents.*") for _ in tf.data.TFRecordDataset(str(f))
    )


def test_reference_runs_reproduce_the_original_report():
    table, problems = summarize_runs(sorted(REFERENCES.iterdir()))
    assert problems == []
    rows = table.set_index("run").to_dict("index")
    assert set(rows) == {
        "augmentation_horizontal",
        "unfreeze_fine-tune(-7)",
        "unfreeze_fine-tune(-8)",
    }
    assert rows["augmentation_horizontal"]["epochs"] == 50
    assert rows["augmentation_horizontal"]["final_val_accuracy"] == 55.31
    assert rows["augmentation_horizontal"]["best_val_accuracy"] == 55.33
    assert rows["augmentation_horizontal"]["best_epoch"] == 42
    assert rows["unfreeze_fine-tune(-7)"]["best_val_accuracy"] == 55.71
    assert rows["unfreeze_fine-tune(-7)"]["best_epoch"] == 9
    assert rows["unfreeze_fine-tune(-8)"]["best_val_accuracy"] == 55.46
    assert rows["unfreeze_fine-tune(-8)"]["epochs"] == 15


def test_reference_train_file_with_graph_reads_as_history():
    start = time.perf_counter()
    history = load_history(REFERENCES / "augmentation_horizontal")
    assert time.perf_counter() - start < 10
    assert list(history.columns) == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy"]
    assert history["epoch"].tolist() == list(range(1, 51))
    assert history["accuracy"].iloc[-1] == pytest.approx(0.66554, abs=1e-5)
    assert history["val_accuracy"].iloc[-1] == pytest.approx(0.55315, abs=1e-5)
    fine_tune = read_tensorboard(REFERENCES / "unfreeze_fine-tune(-7)")
    assert list(fine_tune.columns) == ["epoch", "val_loss", "val_accuracy"]


def test_restarted_step_counter_is_appended_after_earlier_epochs(tmp_path):
    for sub in ("train", "validation"):
        write_keras2(tmp_path / sub, epochs([3.0, 2.0, 1.5], [0.1, 0.2, 0.3]), time.time() - 100)
        write_keras3(tmp_path / sub, epochs([1.2, 1.1], [0.4, 0.5]))
    history = read_tensorboard(tmp_path)
    assert history["epoch"].tolist() == [1, 2, 3, 4, 5]
    assert history["loss"].tolist() == pytest.approx([3.0, 2.0, 1.5, 1.2, 1.1])
    assert history["val_accuracy"].tolist() == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])


def test_event_files_are_ordered_by_first_wall_time_not_by_name(tmp_path):
    folder = tmp_path / "validation"
    write_keras2(folder, epochs([1.0, 0.9], [0.3, 0.4]), 1000.0, name="events.out.tfevents.9.b.v2")
    write_keras2(folder, epochs([0.8], [0.5]), 2000.0, name="events.out.tfevents.1.a.v2")
    history = read_tensorboard(tmp_path)
    assert history["val_accuracy"].tolist() == pytest.approx([0.3, 0.4, 0.5])


def test_resumed_run_replaces_the_redone_epochs(tmp_path):
    write_keras3(tmp_path / "train", epochs([4.0, 3.0, 2.0, 1.9], [0.1, 0.2, 0.3, 0.31]))
    write_keras3(tmp_path / "train", epochs([2.5, 1.8, 1.7], [0.33, 0.4, 0.45]), first_step=2)
    history = read_tensorboard(tmp_path)
    assert history["epoch"].tolist() == [1, 2, 3, 4, 5]
    assert history["accuracy"].tolist() == pytest.approx([0.1, 0.2, 0.33, 0.4, 0.45])


def test_validation_only_run(tmp_path):
    write_keras3(tmp_path / "validation", epochs([1.0, 0.5], [0.6, 0.7]))
    history = load_history(tmp_path)
    assert list(history.columns) == ["epoch", "val_loss", "val_accuracy"]
    assert history["val_loss"].tolist() == pytest.approx([1.0, 0.5])


def test_non_scalar_and_non_epoch_entries_are_skipped(tmp_path):
    train = tmp_path / "train"
    text = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="text")
    )
    images = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="images")
    )
    writer = tf.summary.create_file_writer(str(train))
    with writer.as_default():
        tf.summary.graph(tf.Graph())
        for step in range(2):
            tf.summary.write("epoch_note", tf.constant("a note"), step=step, metadata=text)
            tf.summary.write("epoch_image", tf.constant(["2", "2", "png"]), step, metadata=images)
            tf.summary.write("epoch_flag", tf.constant([1.0, 2.0]), step=step, metadata=SCALARS)
            tf.summary.write("batch_loss", tf.constant(9.0), step=step + 10, metadata=SCALARS)
            tf.summary.write("epoch_steps_per_second", 3.0, step=step, metadata=SCALARS)
            tf.summary.write("epoch_categorical_accuracy", 0.5 + step / 10, step, metadata=SCALARS)
            tf.summary.write("epoch_top5_accuracy", 0.8, step=step, metadata=SCALARS)
            tf.summary.write("epoch_learning_rate", 1e-3, step=step, metadata=SCALARS)
    writer.close()
    history = read_tensorboard(tmp_path)
    assert list(history.columns) == ["epoch", "accuracy", "top5", "lr"]
    assert history["epoch"].tolist() == [1, 2]
    assert history["accuracy"].tolist() == pytest.approx([0.5, 0.6])
    assert history["lr"].tolist() == pytest.approx([1e-3, 1e-3])


def test_torn_last_record_of_a_killed_run_is_ignored(tmp_path):
    path = write_keras2(tmp_path / "train", epochs([2.0, 1.0], [0.3, 0.4]), time.time())
    path.write_bytes(path.read_bytes()[:-7])
    assert read_tensorboard(tmp_path)["loss"].tolist() == pytest.approx([2.0])


def test_project_tb_layout_and_missing_logs(tmp_path):
    write_keras3(tmp_path / "run" / "tb" / "train", epochs([1.0], [0.5]))
    assert load_history(tmp_path / "run")["accuracy"].tolist() == pytest.approx([0.5])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty.*history.csv.*train/"):
        load_history(tmp_path / "empty")


def test_summarize_runs_reports_unreadable_paths_and_names_duplicates(tmp_path):
    for parent, acc in (("a", [0.5, 0.7, 0.6]), ("b", [0.2, 0.1])):
        write_keras3(tmp_path / parent / "run" / "validation", epochs([1.0] * len(acc), acc))
    (tmp_path / "empty").mkdir()
    paths = [tmp_path / "a/run", tmp_path / "b/run", tmp_path / "empty", tmp_path / "gone"]
    table, problems = summarize_runs(paths)
    assert table["run"].tolist() == [str(tmp_path / "a/run"), str(tmp_path / "b/run")]
    row = table.iloc[0].to_dict()
    assert {k: row[k] for k in list(row)[:5]} == {
        "run": str(tmp_path / "a/run"),
        "epochs": 3,
        "best_val_accuracy": 70.0,
        "best_epoch": 2,
        "final_val_accuracy": 60.0,
    }
    assert pd.isna(row["test_accuracy"]) and pd.isna(row["test_images"])  # logs only: no test
    (tmp_path / "a/run/metrics.json").write_text('{"test_accuracy": 0.655, "num_test": 200}')
    row = summarize_runs(paths[:1])[0].iloc[0]
    assert (row["test_accuracy"], row["test_images"]) == (65.5, 200)  # a lab5 run: its test result
    assert len(problems) == 2
    assert str(tmp_path / "empty") in problems[0]
    assert str(tmp_path / "gone") in problems[1]


def csv_logger_file(path: Path, first_epoch: int, logs: list[dict[str, float]]) -> None:
    """A history file written by the real keras.callbacks.CSVLogger."""
    import keras

    logger = keras.callbacks.CSVLogger(str(path))
    logger.on_train_begin()
    for epoch, row in enumerate(logs, start=first_epoch):
        logger.on_epoch_end(epoch, row)
    logger.on_train_end()


def test_load_history_from_csv_logger_keeps_continued_epoch_numbers(tmp_path):
    logs = [
        {
            "loss": 1.0 - i / 10,
            "accuracy": 0.5 + i / 10,
            "top5": 0.8,
            "lr": 1e-5,
            "val_loss": 1.1,
            "val_accuracy": 0.5531,
            "val_top5": 0.79,
        }
        for i in range(3)
    ]
    csv_logger_file(tmp_path / "history.csv", 2, logs)
    assert (
        (tmp_path / "history.csv")
        .read_text()
        .startswith("epoch,accuracy,loss,lr,top5,val_accuracy,val_loss,val_top5")
    )
    history = load_history(tmp_path)
    assert list(history.columns) == [
        "epoch",
        "loss",
        "accuracy",
        "val_loss",
        "val_accuracy",
        "top5",
        "val_top5",
        "lr",
    ]
    assert history["epoch"].tolist() == [3, 4, 5]
    assert history["accuracy"].tolist() == pytest.approx([0.5, 0.6, 0.7])
    assert history["val_accuracy"].iloc[0] == 0.5531


def test_load_history_maps_learning_rate_and_drops_empty_val_columns(tmp_path):
    csv_logger_file(tmp_path / "history.csv", 0, [{"loss": 1.0, "learning_rate": 0.01}])
    assert "val_loss" in (tmp_path / "history.csv").read_text()  # CSVLogger writes NA there
    history = load_history(tmp_path)
    assert list(history.columns) == ["epoch", "loss", "lr"]
    assert history["lr"].tolist() == [0.01]


def test_truncate_tensorboard_drops_only_later_epochs(tmp_path):
    rows = epochs([5.0, 4.0, 3.0, 2.0, 1.0], [0.1, 0.2, 0.3, 0.4, 0.5])
    for sub in ("train", "validation"):
        write_keras3(tmp_path / sub, rows)
    text = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="text")
    )
    writer = tf.summary.create_file_writer(str(tmp_path / "train"))
    with writer.as_default():
        tf.summary.write("batch_loss", 7.0, step=40, metadata=SCALARS)
        tf.summary.write("epoch_note", tf.constant("kept"), step=4, metadata=text)
    writer.close()
    before = count_events(tmp_path)

    assert truncate_tensorboard(tmp_path, keep_epochs=3) == 8
    assert count_events(tmp_path) == before - 8
    history = read_tensorboard(tmp_path)
    assert history["epoch"].tolist() == [1, 2, 3]
    assert history["loss"].tolist() == pytest.approx([5.0, 4.0, 3.0])
    assert history["val_accuracy"].tolist() == pytest.approx([0.1, 0.2, 0.3])
    assert list(tmp_path.rglob(".*")) == []  # no temporary file left behind
    assert truncate_tensorboard(tmp_path, keep_epochs=3) == 0


def test_truncate_csv_drops_only_later_epochs(tmp_path):
    path = tmp_path / "history.csv"
    csv_logger_file(path, 0, [{"loss": 1.0 / (i + 1), "val_loss": 2.0} for i in range(5)])
    lines = path.read_bytes().splitlines(keepends=True)
    assert truncate_csv(path, keep_epochs=3) == 2
    assert path.read_bytes() == b"".join(lines[:4])
    assert load_history(tmp_path)["epoch"].tolist() == [1, 2, 3]
    assert truncate_csv(path, keep_epochs=3) == 0
    assert truncate_csv(tmp_path / "missing.csv", keep_epochs=1) == 0


def test_real_tf_summary_scalar_text_and_image(tmp_path):
    pytest.importorskip("tensorboard")
    writer = tf.summary.create_file_writer(str(tmp_path / "train"))
    with writer.as_default():
        for step in range(2):
            tf.summary.scalar("epoch_loss", 1.0 - step / 4, step=step)
            tf.summary.text("epoch_note", "skipped", step=step)
            tf.summary.image("epoch_sample", tf.zeros([1, 4, 4, 3]), step=step)
    writer.close()
    history = read_tensorboard(tmp_path)
    assert list(history.columns) == ["epoch", "loss"]
    assert history["loss"].tolist() == pytest.approx([1.0, 0.75])
