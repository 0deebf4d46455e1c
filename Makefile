# The two commands a new user needs:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Extras: `setup` installs Highway, SMAX and the Vault reader (so that every built-in sweep runs and
# OG-MARL datasets import); the tests add flashbax (to write reference Vaults), MPE (mpe2, a PettingZoo
# environment marlkd does not ship) and the Ray backend.
# torch is installed first at the tested version (pyproject.toml accepts a range).
TORCH       ?= torch==2.13.0
EXTRAS      ?= dev,all
TEST_EXTRAS ?= test,ray

.PHONY: setup setup-test demo test test-fast lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

setup: $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e ".[$(EXTRAS)]" "$(TORCH)"

setup-test: $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e ".[$(TEST_EXTRAS)]" "$(TORCH)"

demo: setup
	$(BIN)/marlkd demo --out demo_out

test: setup-test
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

lint:
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

# The benchmarks quoted in the README, at the sizes quoted there (about 40 minutes on 2 cores).
bench: setup
	$(BIN)/pip install --quiet -e ".[$(EXTRAS),bench]" "$(TORCH)"
	$(BIN)/python benchmarks/bench_envs.py
	$(BIN)/python benchmarks/bench_dt_vs_hf.py --threads 1 --clock cpu --repeats 3 --rounds 3
	$(BIN)/python benchmarks/bench_attention.py --threads 1 --rounds 3
	$(BIN)/python benchmarks/bench_students.py --threads 1 --rounds 3
	$(BIN)/python benchmarks/bench_cost.py --threads 1 --steps 10 --rounds 2
	$(BIN)/python benchmarks/bench_sweep.py --profile-only --profile-precision fp32 bf16 --seeds 10 --quality good
	$(BIN)/python benchmarks/bench_sweep.py --cells idt madt bc --seeds 10 --steps 200 --quality good --repeats 2
	@echo 'the equality check at the sweep budget (about 15 more CPU-minutes): python benchmarks/bench_sweep.py --cells idt --seeds 10 --quality good'

clean:
	rm -rf $(VENV) demo_out .pytest_cache
