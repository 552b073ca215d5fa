"""`lab5_utils.report.console`: the console shows lab5's lines; engines' log lines go to a log file."""

import os
import re
import sys

import pytest

from lab5_utils import cli
from lab5_utils.report import console

# Lines as TensorFlow 2.21, an older TensorFlow, absl, Jupyter and the debugger write them.
ENGINE = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796643855.377161    5252 port.cc:153] oneDNN custom operations are on.",
    "E0000 00:00:1796643866.838336    5333 util.cc:131] oneDNN supports DT_UINT8 only on AVX-512.",
    "W1207 11:44:13.123456  140 cuda_dnn.cc:8310] Unable to register cuDNN factory",
    "2024-03-01 10:11:12.345678: I tensorflow/core/util/port.cc:113] oneDNN custom operations",
    "[IPKernelApp] WARNING | Kernel is running over TCP without encryption.",
    "0.00s - Debugger warning: It seems that frozen modules are being used",
]
PERSON = [
    "[lab5] transfer stage, lr=0.01, run dir runs/demo/transfer",
    "10/10 - 13s - 1s/step - accuracy: 0.1533 - loss: 2.9220 - val_accuracy: 0.2300",
    "Epoch 1/4",
    "[report 0:54] 02_transfer_learning: done (0:50)",
    "[lab5] Skipped 1 file(s) in photos: IMG_0001.HEIC (HEIC/HEIF image)",
    "/x/keras/src/trainers/trainer.py:12: UserWarning: a library's warning",
    "E0000 is not a log line without its time, thread and file",
]


@pytest.mark.parametrize("line", ENGINE)
def test_engine_log_lines_are_recognised_by_their_format(line):
    assert console.is_engine_line(line + "\n")


@pytest.mark.parametrize("line", PERSON)
def test_lab5s_lines_keras_lines_and_warnings_are_not_engine_lines(line):
    assert not console.is_engine_line(line + "\n")


def _run_command(tmp_path, verbose):
    """What a command does: C++-style writes to fd 2, a plain C-level line, Python's stderr and
    stdout; its log goes to a folder that appears only later (a run folder, made after the
    checks)."""
    run_dir = tmp_path / "run"
    with console.sorted_console("train", verbose) as sorter:
        sorter.log.to(run_dir / "lab5.log")
        os.write(2, f"{ENGINE[0]}\n{ENGINE[1]}\n".encode())
        os.write(2, f"{ENGINE[4]}\n".encode())
        os.write(2, b"a C-level line\n")
        print("[lab5] Skipped 1 file(s) in photos", file=sys.stderr)
        print("Epoch 1/1")
        run_dir.mkdir()
        print("[lab5] transfer done")
    return run_dir / "lab5.log"


def test_the_console_hides_engine_lines_and_the_log_keeps_everything(tmp_path, capfd):
    log = _run_command(tmp_path, verbose=False)
    out, err = capfd.readouterr()
    assert out == "Epoch 1/1\n[lab5] transfer done\n"
    shown = err.splitlines()
    assert "a C-level line" in shown and "[lab5] Skipped 1 file(s) in photos" in shown
    assert not [line for line in shown if console.is_engine_line(line)]
    assert shown[-1] == f"[lab5] log: {log} (3 lines of engine logs not shown; --verbose shows them)"
    logged = log.read_text()
    for line in (*ENGINE[:2], ENGINE[4], "a C-level line", "Epoch 1/1",
                 "[lab5] Skipped 1 file(s) in photos", "[lab5] transfer done"):
        assert logged.count(line) == 1, line
    assert logged.startswith("--- lab5 train, ")


def test_verbose_shows_the_engine_lines_too(tmp_path, capfd):
    log = _run_command(tmp_path, verbose=True)
    err = capfd.readouterr().err
    assert ENGINE[0] in err and ENGINE[1] in err and ENGINE[4] in err
    assert err.splitlines()[-1] == f"[lab5] log: {log}"
    assert ENGINE[1] in log.read_text()


def test_a_command_without_a_folder_logs_to_the_temp_folder(capfd):
    with console.sorted_console("predict"):
        os.write(2, f"{ENGINE[2]}\n".encode())
    fallback = console.fallback_log("predict")
    assert capfd.readouterr().err == f"[lab5] log: {fallback} (1 line of engine logs not shown; " \
                                     "--verbose shows them)\n"
    assert ENGINE[2] in fallback.read_text()


def test_a_log_whose_folder_is_replaced_is_written_again_in_full(tmp_path):
    import shutil

    log = console.LogFile("header\n")
    log.add("before the folder\n")
    log.to(tmp_path / "run" / "lab5.log")
    (tmp_path / "run").mkdir()
    log.add("first\n")
    shutil.rmtree(tmp_path / "run")  # --force: the run folder is made again
    (tmp_path / "run").mkdir()
    log.add("second\n")
    assert log.close(tmp_path / "unused.log") == tmp_path / "run" / "lab5.log"
    assert (tmp_path / "run" / "lab5.log").read_text() == "header\nbefore the folder\nfirst\nsecond\n"


def test_a_crash_shows_the_end_of_the_log_and_the_traceback(monkeypatch, capfd):
    def crash(args):
        os.write(2, f"{ENGINE[3]}\n".encode())
        print("[lab5] about to fail")
        raise KeyError("boom")

    monkeypatch.setitem(cli.COMMANDS, "compare", (crash, "a command that crashes"))
    assert cli.main(["compare", "x"]) == 1
    err = capfd.readouterr().err
    assert "lab5 compare: failed\n    the last 3 lines of its log (named below):\n" in err
    assert f"    {ENGINE[3]}\n" in err and "    [lab5] about to fail\n" in err  # in the tail
    assert "Traceback (most recent call last)" in err and "KeyError: 'boom'" in err
    assert err.splitlines()[-1].startswith(f"[lab5] log: {console.fallback_log('compare')}")


def test_readmes_sample_of_make_report_has_the_closing_lines_and_no_engine_line():
    from lab5_utils.files import project_root

    readme = (project_root() / "README.md").read_text()
    section = readme.split("### What the console shows, and the logs", 1)[1]
    sample = section.split("```text\n", 1)[1].split("```", 1)[0].splitlines()
    makefile = (project_root() / "Makefile").read_text()
    recipe = re.search(r"^report:.*\n\t(.+)$", makefile, re.M)[1]  # the command make echoes
    for name, value in {"LAB5": ".venv/bin/lab5", "PRESET": "demo", "REPORT_LANG": "en"}.items():
        recipe = recipe.replace(f"$({name})", value)
    assert sample[0] == recipe
    assert not [line for line in sample if console.is_engine_line(line.split(" | ", 1)[-1])]
    assert re.fullmatch(r"\[report\] 7 of 7 notebooks succeeded in [\d:]+; report: (\S+)/"
                        r"lab5_report.html; logs: \1/logs", sample[-2])
    assert re.fullmatch(r"\[lab5\] log: \S+/logs/lab5.log \(\d+ lines of engine logs not shown; "
                        r"--verbose shows them\)", sample[-1])


def test_a_notebooks_cell_output_is_sorted_and_a_failure_shows_its_logs_end(tmp_path, monkeypatch,
                                                                             capsys):
    """`lab5 report`'s executor with papermill stood in: the cells print an engine's line and
    lab5's lines, then one raises."""
    import time

    import nbformat
    import papermill

    from lab5_utils.config import lab_config
    from lab5_utils.report import execute

    def execute_notebook(source, target, stdout_file, stderr_file, **kwargs):
        stderr_file.write(f"{ENGINE[1]}\n")
        stdout_file.write("[lab5] transfer stage, lr=0.01\nEpoch 1/4")  # the last line unfinished
        nbformat.write(nbformat.v4.new_notebook(), target)
        raise papermill.PapermillExecutionError(3, 4, "cfg['lr']", "KeyError", "'lr'", [
            "\x1b[31mTraceback:\x1b[0m", "  cell 3", "\x1b[31mKeyError\x1b[0m: 'lr'"])

    monkeypatch.setattr(papermill, "execute_notebook", execute_notebook)
    nbformat.write(nbformat.v4.new_notebook(), tmp_path / "02_transfer_learning.ipynb")
    cfg = lab_config("demo", run_root=str(tmp_path / "runs"))
    executor = execute.NotebookExecutor(cfg, tmp_path / "out", tmp_path, tmp_path / "figures",
                                        time.time(), jobs=1, reuse=False)
    job = executor.submit(execute.job("02_transfer_learning", "2."), {}).result()
    assert job.status == "failed" and job.error == "KeyError: 'lr'"
    log = tmp_path / "out" / "logs" / "02_transfer_learning.log"
    out = capsys.readouterr().out.splitlines()
    assert "  02_transfer_learning | [lab5] transfer stage, lr=0.01" in out
    assert "  02_transfer_learning | Epoch 1/4" in out
    assert not [line for line in out if ENGINE[1] in line.split(" | ")[-1]
                and line.startswith("  02_")]  # not shown as the notebook's line
    failed = next(i for i, line in enumerate(out) if "02_transfer_learning: FAILED: KeyError" in line)
    assert out[failed + 1] == f"    the last 7 lines of its log {log}:"
    assert out[failed + 2:failed + 9] == [f"    {line}" for line in log.read_text().splitlines()]
    assert out[-1] == "    KeyError: 'lr'"
    assert ENGINE[1] in log.read_text() and "\x1b[" not in log.read_text()
