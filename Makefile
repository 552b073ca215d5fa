# Everything runs inside a local .venv that the first target creates (Python >= 3.10 needed).
# TF_EXTRA picks the TensorFlow build pip installs: cpu (default, small) or gpu (CUDA wheels).
# Colab/conda users with TensorFlow already installed: `pip install -e .` and call `lab5` directly.
PYTHON ?= python3
VENV ?= .venv
TF_EXTRA ?= cpu
PRESET ?= demo
PY := $(VENV)/bin/python
LAB5 := $(VENV)/bin/lab5

.PHONY: install report demo test bench lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[$(TF_EXTRA),dev]"
	touch $@

report: install  ## the whole lab: notebooks 01-04, LR sweep, figures/ and the HTML report
	$(LAB5) report --preset $(PRESET) --jobs 2

demo: install  ## both training stages on the demo preset, without notebooks
	$(LAB5) train --stage transfer --preset demo
	$(LAB5) train --stage finetune --preset demo

test: install  ## two workers, one test file each: TensorFlow's tracing runs on one core
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=10

bench: install
	$(LAB5) bench

lint: install
	$(VENV)/bin/ruff check lab5_utils tests

clean:  ## removes run outputs and reports, never the .venv
	rm -rf runs reports .pytest_cache
