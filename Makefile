# fleetcast: one entry point for a newcomer and for CI.
#   make demo   set up everything, then data -> train -> export -> appliance + dashboard
#   make test   set up everything, lint, run every test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
APPLIANCE_VENV ?= .venv-appliance
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
PKGS := -e ./contract -e ./trainer -e ./exporter -e "./appliance[cpu]" -e ./dashboard
DEV := "pytest>=8" "ruff>=0.6" "pytest-playwright>=0.5" "httpx>=0.27" "websockets>=12"
APPLIANCE_DEV := "pytest>=8" "httpx>=0.27" "websockets>=12" "prometheus-client>=0.20"
# The appliance's tests run only in $(APPLIANCE_VENV), where torch is not installed.
PY_TEST_DIRS = $(wildcard contract/tests trainer/tests exporter/tests dashboard/tests benchmarks/tests)
# CPU build of torch that installs offline on the project's machines (README.md, first section).
TORCH := torch==2.13.0

.PHONY: setup setup-appliance demo test lint test-py test-appliance-notorch bench-quick system-deps clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python contract/pyproject.toml trainer/pyproject.toml exporter/pyproject.toml appliance/pyproject.toml dashboard/pyproject.toml
	$(PIP) install -q $(TORCH)
	$(PIP) install -q $(PKGS) $(DEV)
	touch $@

setup: $(VENV)/.installed

# The appliance alone, as on an edge box: no torch, lightning, pandas or pytorch-forecasting.
$(APPLIANCE_VENV)/.installed: contract/pyproject.toml appliance/pyproject.toml
	$(PYTHON) -m venv $(APPLIANCE_VENV)
	$(APPLIANCE_VENV)/bin/python -m pip install -q --upgrade pip
	$(APPLIANCE_VENV)/bin/python -m pip install -q -e ./contract -e "./appliance[cpu]" $(APPLIANCE_DEV)
	touch $@

setup-appliance: $(APPLIANCE_VENV)/.installed

system-deps:
	./.ci/system-deps

# The demo: a small simulated fleet, a few minutes of CPU training, the ONNX export, then
# the appliance (demo source: the simulator streams live at DEMO_SPEED) and the dashboard.
# Ctrl-C stops both. Sizes are overridable: make demo DEMO_SERVERS=90 DEMO_HOURS=720.
DEMO_SERVERS ?= 30
DEMO_HOURS ?= 120
DEMO_TRAIN ?= --epochs 4 --max-batches-per-epoch 30 --val-batches 5 --eval-windows 300
DEMO_PORT ?= 8000
DASHBOARD_PORT ?= 5006
DEMO_SPEED ?= 60

demo: setup
	$(BIN)/fleetcast generate --servers $(DEMO_SERVERS) --hours $(DEMO_HOURS) --seed 42 --out-dir training/
	$(BIN)/fleetcast validate training/server_metrics.parquet
	$(BIN)/fleetcast train --data training/server_metrics.parquet --out models/ $(DEMO_TRAIN)
	$(BIN)/fleetcast export --bundle models/latest
	@rm -rf state/demo
	@echo "starting the appliance on http://127.0.0.1:$(DEMO_PORT) (demo source, speed $(DEMO_SPEED))"
	@$(BIN)/fleetcast serve --demo --speed $(DEMO_SPEED) --model-dir models/latest \
	    --port $(DEMO_PORT) --state-dir state/demo & pid=$$!; \
	  trap 'kill $$pid 2>/dev/null; wait $$pid 2>/dev/null' EXIT INT TERM; \
	  for i in $$(seq 240); do \
	    $(BIN)/python -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$(DEMO_PORT)/health', timeout=1)" 2>/dev/null && break; \
	    kill -0 $$pid 2>/dev/null || { echo "the appliance exited; see the messages above"; exit 1; }; \
	    sleep 0.5; \
	  done; \
	  echo "appliance ready: http://127.0.0.1:$(DEMO_PORT)/status"; \
	  $(BIN)/fleetcast dashboard --appliance http://127.0.0.1:$(DEMO_PORT) --port $(DASHBOARD_PORT)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test-py: setup
	$(BIN)/python -m pytest $(PY_TEST_DIRS)

test-appliance-notorch: setup-appliance
	$(APPLIANCE_VENV)/bin/python -m pytest appliance/tests

# The benchmark suite's quick mode: loose regression guards, < 2 minutes (docs/BENCHMARKS.md).
bench-quick: setup
	$(BIN)/python benchmarks/run.py --quick

test: system-deps lint test-py test-appliance-notorch bench-quick

clean:
	rm -rf $(VENV) $(APPLIANCE_VENV) .pytest_cache .ruff_cache
