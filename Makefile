# The README's contract: `make run` and `make test` set everything up on a fresh
# Debian machine (virtual environment, pinned packages, Redis, the model) and then run.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
EXPORT := models/servables
MODEL_STAMP := $(EXPORT)/.trained

.PHONY: run test setup system-run system-test model clean-results

run: setup system-run model
	$(BIN)/poochlab sweep experiments/default.toml

test: setup system-test model
	$(BIN)/python -m pytest

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

system-run:
	scripts/ensure-system-packages.sh run

system-test:
	scripts/ensure-system-packages.sh test

# Train and export both variants once; later exports are explicit (`poochlab train`).
model: $(MODEL_STAMP)

$(MODEL_STAMP): $(STAMP)
	$(BIN)/poochlab train --variant small --if-missing
	$(BIN)/poochlab train --variant large --if-missing
	touch $@
