# The commands of the project. `make demo` and `make test` are the README's quick start: each sets up
# the virtual environment first (once; again when pyproject.toml or constraints.txt change).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DATA ?= data/synthav
RUNS ?= runs

.PHONY: help demo test lint setup bench clean

help:  ## this list
	@awk -F ':.*## ' '/^[a-z]+:.*## / {printf "  make %-6s  %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $@

setup: $(VENV)/.installed  ## the virtual environment in .venv (the other targets make it when needed)

demo: setup  ## main job: SynthAV -> pretrain (Shuffle and Learn) -> linear probe and kNN vs random init
	$(PY) tools/make_synthetic.py --out $(DATA) --seed 0
	$(PY) tools/pretrain.py --out $(RUNS)/demo --resume auto data.synthav_dir=$(DATA)
	$(PY) tools/transfer.py --checkpoint $(RUNS)/demo --protocol linear --compare-random synthav_dir=$(DATA)
	$(PY) tools/transfer.py --checkpoint $(RUNS)/demo --protocol knn --compare-random synthav_dir=$(DATA)

test: setup  ## the test suite, then its 15 slowest tests
	$(PY) -m pytest -n 2 -q --durations=15

lint: setup  ## ruff check (pinned in constraints.txt, rules in pyproject.toml)
	$(VENV)/bin/ruff check .

bench: setup  ## benchmarks (tables + JSON under runs/): decoders, losses, training steps, motion profiles, shards, learning
	$(PY) tools/bench_loader.py --out $(RUNS)/bench_loader.json
	$(PY) tools/bench_losses.py --out $(RUNS)/bench_losses.json
	$(PY) tools/bench_train.py --synthav-dir $(DATA) --out $(RUNS)/bench_train.json
	$(PY) tools/bench_motion.py --data $(dir $(DATA)) --out $(RUNS)/bench_motion.json
	$(PY) tools/bench_shards.py --data $(dir $(DATA)) --out $(RUNS)/bench_shards.json
	$(PY) tools/bench_learning.py --data-dir $(DATA) --out $(RUNS)/bench_learning.json

clean:  ## delete the runs and the generated SynthAV (runs/, data/synthav)
	rm -rf $(RUNS) $(DATA)
