"""The notebooks as stored: clean, parameterised, and failing clearly on a bad learning rate.

That every notebook runs top to bottom is checked by the sweep in test_report.py.
"""

import nbformat
import papermill as pm
import pytest

from lab5_utils.files import project_root
from lab5_utils.report.build import NOTEBOOKS

FOLDER = project_root() / "notebooks"
COMMON = {"preset", "settings", "run_root", "figures_dir", "drive_dir"}
TRAINING = {"allow_cpu", "estimate_steps"}
PARAMETERS = {  # what `run_report` passes to each notebook
    "01_data_exploration": COMMON,
    "02_transfer_learning": COMMON | TRAINING | {"force"},
    "03_fine_tuning": COMMON | TRAINING | {"learning_rate", "force"},
    "04_analysis": COMMON | {"lrs", "failed", "suggested_lr", "lr_finder_csv"},
}


@pytest.fixture(params=NOTEBOOKS)
def notebook(request):
    return request.param, nbformat.read(FOLDER / f"{request.param}.ipynb", as_version=4)


def test_stored_without_outputs_and_valid(notebook):
    _, nb = notebook
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
    assert nb.metadata.kernelspec.name == "python3"


def test_exactly_one_parameters_cell_that_papermill_reads(notebook, caplog):
    name, nb = notebook
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0].cell_type == "code"
    inferred = {p["name"] for p in pm.inspect_notebook(str(FOLDER / f"{name}.ipynb")).values()}
    assert PARAMETERS[name] <= inferred
    assert "Unable to parse" not in caplog.text
    assert 'preset = "demo"' in tagged[0].source  # "Run all" works offline


def test_first_cell_explains_presets_and_the_demo_weights(notebook):
    _, nb = notebook
    intro = nb.cells[0]
    assert intro.cell_type == "markdown"
    for phrase in ('preset = "full"', 'weights="calibrated"', "randomly initialised",
                   "not comparable with ImageNet transfer learning"):
        assert phrase in intro.source.replace("**", "").replace("\n", " ")
    assert "drive_dir" in intro.source and "allow_cpu = True" in intro.source  # the Colab note


def test_the_setup_cell_is_the_same_in_all_four_and_made_from_the_repository_url():
    from lab5_utils.hosts import colab

    cells = {name: nbformat.read(FOLDER / f"{name}.ipynb", as_version=4).cells[1].source
             for name in NOTEBOOKS}
    assert set(cells.values()) == {colab.setup_cell(colab.REPO_URL)}
    assert f'"{colab.REPO_URL}"' in cells["01_data_exploration"]
    assert len(cells["01_data_exploration"].splitlines()) <= 20  # a few lines


@pytest.mark.slow
def test_fine_tuning_rejects_a_bad_learning_rate_before_loading_anything(tmp_path):
    """Slow: executes the notebook with papermill (a Jupyter kernel that imports TensorFlow);
    the check itself, `check_learning_rate`, is also tested fast."""
    with pytest.raises(pm.PapermillExecutionError) as caught:
        pm.execute_notebook(
            str(FOLDER / "03_fine_tuning.ipynb"), str(tmp_path / "out.ipynb"),
            parameters={"learning_rate": float("nan"), "run_root": str(tmp_path / "runs")},
            kernel_name="python3", progress_bar=False,
        )
    assert caught.value.ename == "ValueError"
    assert "learning_rate=nan is not valid: expected a finite number > 0" in caught.value.evalue
    assert not (tmp_path / "runs").exists()


def test_every_name_a_code_cell_uses_is_defined_or_imported_above_it():
    """ruff's undefined-name check over the four notebooks (the package's lint skips them): a
    module renamed or moved but still called by its old name in a later cell fails here, in the
    fast tier, rather than in the report's run."""
    import subprocess
    import sys
    from pathlib import Path

    ruff = Path(sys.executable).parent / "ruff"
    paths = [str(FOLDER / f"{name}.ipynb") for name in PARAMETERS]
    found = subprocess.run([str(ruff), "check", "--no-force-exclude", "--isolated",
                            "--select", "F821", *paths], capture_output=True, text=True)
    assert found.returncode == 0, found.stdout


def test_the_python3_kernel_is_this_interpreter_even_without_a_kernelspec():
    """CI needs no `ipykernel install`: jupyter_client falls back to ipykernel's own spec."""
    import sys

    from jupyter_client.kernelspec import KernelSpecManager

    assert KernelSpecManager(kernel_dirs=[]).get_kernel_spec("python3").argv[0] == sys.executable


@pytest.mark.parametrize("sweep", [None, "dropout=0.2,0.5"])
def test_every_parameter_lab5_report_passes_is_one_the_notebook_declares(tmp_path, monkeypatch,
                                                                         sweep):
    """The names `run_report` really passes (recorded, nothing executed) against the names each
    notebook's parameters cell declares: a misspelt one would be ignored by papermill."""
    from concurrent.futures import Future

    from lab5_utils.report import execute
    from lab5_utils.report.build import run_report

    passed: dict[str, set] = {}

    def record(self, job, parameters, skip=""):
        passed.setdefault(job.source, set()).update(parameters)
        job.status = "done"
        future = Future()
        future.set_result(job)
        return future

    monkeypatch.setattr(execute.NotebookExecutor, "submit", record)
    run_report(out=tmp_path / "out", figures_dir=tmp_path / "figures", sweep=sweep)
    assert set(passed) == set(NOTEBOOKS)
    for name, names in passed.items():
        declared = {p["name"] for p in pm.inspect_notebook(str(FOLDER / f"{name}.ipynb")).values()}
        assert names <= declared, (name, names - declared)
