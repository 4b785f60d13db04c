# Set-up and the two everyday commands. The CPU build of PyTorch is installed first so that pip does
# not pull a multi-GB CUDA build on machines without a GPU; GPU users: `make setup TORCH=torch`.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup run test lint notebook

$(BIN)/dragon-lightning: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)" || $(BIN)/pip install --quiet torch --index-url https://download.pytorch.org/whl/cpu
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

setup: $(BIN)/dragon-lightning

run: setup
	$(BIN)/dragon-lightning fit --config configs/color_mlp.yaml

# One worker per CPU core; a test file stays on one worker, so its module fixtures are built once.
# The quick part alone: make test PYTEST_ARGS='-m "not slow"'.
test: setup
	$(BIN)/python -m pytest -q -n auto --dist loadfile $(PYTEST_ARGS)

# What CI checks before the tests (configured in pyproject.toml; .pre-commit-config.yaml runs the same).
lint: setup
	$(BIN)/ruff check dragon_lightning tests benchmarks examples notebooks
	$(BIN)/ruff format --check dragon_lightning tests benchmarks examples notebooks
	$(BIN)/mypy
	$(BIN)/lint-imports

# The tutorial notebook in JupyterLab, from this project's venv (the notebook extra, installed once). The venv's
# bin goes first on PATH, so the kernel finds tensorboard (%tensorboard) and dragon-lightning as the tests do.
notebook: setup
	$(BIN)/pip install --quiet -e ".[notebook]"
	cd notebooks && PATH="$(abspath $(BIN)):$$PATH" ../$(BIN)/jupyter lab dragon_tutorial.ipynb
