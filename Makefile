# The README's contract: `make run` and `make test` set everything up on a fresh
# Debian machine (virtual environment, pinned packages, Redis, the model) and then run.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
EXPORT := models/servables
MODEL_STAMP := $(EXPORT)/.trained

.PHONY: run test check setup system-run system-test model protos clean-results

run: setup system-run model
	$(BIN)/poochlab sweep experiments/default.toml

# check first: a fresh clone's `make test` fails on a lint or type error
test: setup check system-test model protos
	$(BIN)/python -m pytest

# ruff and mypy over the package (configured in pyproject.toml)
check: setup
	scripts/check.sh

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

# models/warmup_records.py: exports whose warm-up records no longer fit are exported again.
$(MODEL_STAMP): $(STAMP) models/warmup_records.py
	$(BIN)/poochlab train --variant small --if-missing
	$(BIN)/poochlab train --variant large --if-missing
	touch $@

# TF Serving's config messages (serving_configs/schema/*.proto) compiled with grpc_tools' protoc
# into build/tfs_protos/, so tests parse the lab's generated configs with protobuf's own parser.
protos: $(STAMP)
	$(BIN)/python tests/fixtures/tfs_protos.py
