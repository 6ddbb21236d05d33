# Quick start: `make run` (the main job on the CPU default) and `make test`.
# Both create or reuse the virtual environment in .venv and install everything.
VENV ?= .venv
PY := $(VENV)/bin/python
MAIN_MODEL ?= ecr-rl
PYTEST_ARGS ?=

.PHONY: install run test bench leaderboard

$(VENV)/.installed: pyproject.toml scripts/install.sh
	scripts/install.sh $(VENV)
	touch $@

install: $(VENV)/.installed

run: install
	$(VENV)/bin/crsbench run $(MAIN_MODEL) --task redial

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

bench: install
	$(PY) bench/run_benchmarks.py

leaderboard: install
	$(VENV)/bin/crsbench leaderboard build
