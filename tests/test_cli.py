import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lab5_utils.cli import COMMANDS, main

REFERENCES = Path(__file__).parents[1] / "references" / "original_lab5"


def test_help_for_the_command_and_every_subcommand():
    out = subprocess.run([sys.executable, "-m", "lab5_utils.cli", "--help"],
                         capture_output=True, text=True)
    assert out.returncode == 0 and all(name in out.stdout for name in COMMANDS)
    for name in COMMANDS:
        with pytest.raises(SystemExit) as done:
            main([name, "--help"])
        assert done.value.code == 0


@pytest.mark.parametrize("lr", ["0", "-1e-3", "nan", "inf", "fast"])
def test_train_refuses_bad_learning_rates_by_name(lr, capsys, tmp_path):
    with pytest.raises(SystemExit) as done:
        main(["train", "--lr", lr, "--run-dir", str(tmp_path / "run")])
    assert done.value.code == 2
    assert "--lr" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_train_refuses_bad_settings_with_a_suggestion(capsys, tmp_path):
    assert main(["train", "--set", "learning_rat=1e-3", "--run-dir", str(tmp_path / "r")]) == 2
    assert "Did you mean 'learning_rate'" in capsys.readouterr().err
    assert main(["train", "--preset", "huge"]) == 2
    assert "demo, quick, full" in capsys.readouterr().err


def test_lr_find_refuses_an_unknown_unfreeze_mode(capsys):
    assert main(["lr-find", "--set", "unfreeze=half"]) == 2
    assert "unfreeze='half'" in capsys.readouterr().err


def test_compare_prints_the_original_labs_numbers(capsys):
    runs = [str(REFERENCES / name) for name in
            ("augmentation_horizontal", "unfreeze_fine-tune(-7)", "unfreeze_fine-tune(-8)")]
    assert main(["compare", *runs]) == 0
    out = capsys.readouterr().out
    assert "55.31" in out and "55.71" in out and "55.46" in out
    assert main(["compare", "--csv", runs[0]]) == 0
    assert capsys.readouterr().out.startswith("run,epochs,best_val_accuracy")


def test_compare_names_a_folder_without_logs(capsys, tmp_path):
    assert main(["compare", str(tmp_path)]) == 1
    assert str(tmp_path) in capsys.readouterr().err


@pytest.mark.slow
def test_predict_ranks_classes_and_reports_unreadable_files(trained_lab, capsys, tmp_path):
    """Slow: predicts with the shared tiny training's model (`trained_lab`) and its Grad-CAM."""
    _, transfer, _ = trained_lab
    photo = tmp_path / "photo.jpg"
    Image.fromarray(np.full((300, 200, 3), 120, np.uint8)).save(photo)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    out = tmp_path / "explained"
    code = main(["predict", str(photo), str(broken), "--model",
                 str(transfer.run_dir / "best.keras"), "--top", "3", "--explain", str(out)])
    captured = capsys.readouterr()
    assert code == 1 and "broken.jpg" in captured.err
    header, row = captured.out.splitlines()
    assert header.split() == ["image", "top-1", "top-2", "top-3", "overlay"]
    assert row.startswith(str(photo)) and row.endswith(str(out / "photo.png"))
    probs = [float(cell.split("(")[1].rstrip("%)")) for cell in row.split()[1:-1] if "(" in cell]
    assert len(probs) == 3 and probs == sorted(probs, reverse=True)
    assert all(0 <= p <= 100 for p in probs) and row.count("class_0") == 3
    # lab5's EfficientNet-B0: its Grad-CAM overlay, in the photo's proportions
    assert [p.name for p in out.iterdir()] == ["photo.png"]
    assert Image.open(out / "photo.png").size == (200, 300)


def test_train_strict_stops_on_a_truncated_image_and_names_it(capsys, tmp_path):
    photos = tmp_path / "photos"
    for name in ("cat", "dog"):
        (photos / name).mkdir(parents=True)
        Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(photos / name / "ok.jpg")
    whole = (photos / "dog" / "ok.jpg").read_bytes()
    (photos / "dog" / "cut.jpg").write_bytes(whole[: len(whole) // 2])
    run = tmp_path / "run"
    assert main(["train", "--set", f"dataset=folder:{photos}", "--strict", "--run-dir", str(run)]) == 2
    err = capsys.readouterr().err
    assert "cut.jpg: truncated JPEG" in err and "strict_data" in err
    assert not run.exists()


@pytest.mark.slow
def test_the_cli_prints_lab5s_warnings_as_one_plain_line(capsys, tmp_path):
    """Slow: a whole `lab5 train` (one epoch at 32 px), the warning shown as a user sees it."""
    photos = tmp_path / "photos"
    for i, name in enumerate(("cat", "dog")):
        (photos / name).mkdir(parents=True)
        for j in range(3):
            pixels = np.full((40, 40, 3), 60 + 100 * i + 5 * j, np.uint8)
            Image.fromarray(pixels).save(photos / name / f"{j}.jpg")
    (photos / "dog" / "IMG_0001.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(64))
    shown = warnings.showwarning
    assert main(["train", "--set", f"dataset=folder:{photos}", "--set", "image_size=32",
                 "--set", "validation_split=0.34", "--epochs", "1",
                 "--run-dir", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "Skipped" in line]
    assert len(lines) == 1 and lines[0].startswith("[lab5] Skipped 1 file(s) in ")
    assert "IMG_0001.HEIC (HEIC/HEIF image" in lines[0] and "convert them to JPEG" in lines[0]
    assert "UserWarning" not in err and "warnings.warn(" not in err  # no file, line, source
    assert warnings.showwarning is shown  # notebooks and other callers keep normal warnings
