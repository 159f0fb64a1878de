# The commands of the project. `make demo` and `make test` are the README's quick start: each sets up
# the virtual environment first (once; again when pyproject.toml or constraints.txt change).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DATA ?= data/synthav
RUNS ?= runs

.PHONY: demo test setup bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

demo: setup  ## main job: SynthAV -> manifest
	$(PY) tools/make_synthetic.py --out $(DATA) --seed 0

test: setup  ## the test suite
	$(PY) -m pytest -n 2 -q

bench: setup  ## decoder benchmark (table + JSON under runs/)
	$(PY) tools/bench_loader.py --out $(RUNS)/bench_loader.json

clean:
	rm -rf $(RUNS) $(DATA)
