# Everything runs inside a local .venv that the first target creates (Python >= 3.10 needed).
# TF_EXTRA picks the TensorFlow build pip installs: cpu (default, small) or gpu (CUDA wheels).
# Colab/conda users with TensorFlow already installed: `pip install -e .` and call `lab5` directly.
PYTHON ?= python3
VENV ?= .venv
TF_EXTRA ?= cpu
PRESET ?= demo
REPORT_LANG ?= en
PY := $(VENV)/bin/python
LAB5 := $(VENV)/bin/lab5
# Two workers, one test file each (TensorFlow's tracing runs on one core): a long file holds a
# worker, so split a file rather than let it grow past a few minutes.
PYTEST := $(PY) -m pytest -q -n 2 --dist loadfile --durations=10

.PHONY: install report demo test test-slow test-all bench lint clean messages

# The report's languages (lab5_utils/locale/<lang>/LC_MESSAGES/lab5.po): compiled on install.
CATALOGS := $(patsubst %.po,%.mo,$(wildcard lab5_utils/locale/*/LC_MESSAGES/lab5.po))

install: $(VENV)/.installed $(CATALOGS)

%.mo: %.po $(VENV)/.installed
	$(PY) -m lab5_utils.report.catalogs compile

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[$(TF_EXTRA),dev]"
	touch $@

report: install  ## the whole lab: notebooks 01-04, LR sweep, figures/ and the HTML report
	$(LAB5) report --preset $(PRESET) --jobs 2 --lang $(REPORT_LANG)

demo: install  ## both training stages on the demo preset, without notebooks
	$(LAB5) train --stage transfer --preset demo
	$(LAB5) train --stage finetune --preset demo

# A test that trains a model, runs a notebook or starts a process is marked @pytest.mark.slow
# (its docstring says why it cannot be fast); every other test is in the fast tier.
test: install  ## the fast tier: the import layers, units, every bad-input check, small integrations (minutes)
	$(VENV)/bin/lint-imports --no-cache
	$(PYTEST) -m "not slow"

test-slow: install  ## the slow tier only: training, kills and resumes, notebooks, XLA, Colab
	$(PYTEST) -m slow

test-all: install  ## both tiers in one pytest run (what CI runs, in two steps)
	$(PYTEST)

bench: install
	$(LAB5) bench

messages: install  ## after adding or changing a message: extract them all, merge into every .po
	$(PY) -m lab5_utils.report.catalogs extract
	$(PY) -m lab5_utils.report.catalogs update
	$(PY) -m lab5_utils.report.catalogs check || echo "translate the entries listed above, then: make install"

lint: install
	$(VENV)/bin/ruff check lab5_utils tests
	$(VENV)/bin/lint-imports --no-cache

clean:  ## removes run outputs and reports, never the .venv
	rm -rf runs reports .pytest_cache
