# Two commands on a fresh machine:  `make reproduce`  (the main job)  and  `make test`.
# Both create .venv on first use and reuse it afterwards.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
DATASET ?= synthfer
DATA_ROOT ?=
REPRO_ARGS ?=
PYTEST_ARGS ?=

.PHONY: venv reproduce reference test lab bench clean-venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,align,export]'
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (adadf)" >/dev/null
	@touch $(STAMP)

reproduce: $(STAMP)
	$(VENV)/bin/adadf reproduce --dataset $(DATASET) $(if $(DATA_ROOT),--data-root $(DATA_ROOT)) $(REPRO_ARGS)

# after `make reproduce`: make results/$(DATASET) the committed reference (refuses quick, incomplete or dirty-tree runs)
reference: $(STAMP)
	$(VENV)/bin/adadf reproduce --dataset $(DATASET) --promote

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# The whole repository (results included) in the file browser; the start page is notebooks/.
# JupyterLab comes with the dev extra (the browser test, tests/test_browser.py, drives it).
lab: $(STAMP)
	$(VENV)/bin/jupyter lab --notebook-dir=. --LabApp.default_url=/lab/tree/notebooks $(if $(filter 0,$(shell id -u)),--allow-root)

bench: $(STAMP)
	$(PY) benchmarks/bench_train.py

clean-venv:
	rm -rf $(VENV)
