# NeuronMap: the two set-up commands are `make demo` and `make test`; both bootstrap .venv.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# torch is pinned to the CPU wheel through constraints.txt; pyproject.toml keeps torch>=2.2.
PIP_INSTALL := $(PIP) install --quiet --disable-pip-version-check -c constraints.txt

.PHONY: demo test calibration bench bench-peers lint clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.demo-installed: $(VENV)/bin/python pyproject.toml constraints.txt
	$(PIP_INSTALL) torch==2.13.0
	$(PIP_INSTALL) -e ".[demo]"
	touch $@

$(VENV)/.dev-installed: $(VENV)/bin/python pyproject.toml constraints.txt
	$(PIP_INSTALL) torch==2.13.0
	$(PIP_INSTALL) -e ".[dev]"
	touch $@

# Fine-tunes the real all-MiniLM-L6-v2 on templated sentiment data with the HF Trainer and
# NeuronMap's callback; results go to an embedded MLflow sqlite store and a local report.html.
# (`neuronmap demo` is the package's own, smaller demo: a digits MLP in a plain loop.)
demo: $(VENV)/.demo-installed
	$(PY) examples/hf_trainer_sentiment_bias.py --quick --max-steps 30 --eval-steps 15 --out neuronmap-runs/hf-demo

# The doctests run in a second pytest call: --import-mode=importlib (the suite's mode) would import
# each collected module a second time under another name (two Analysis classes).
test: $(VENV)/.dev-installed
	$(PY) -m pytest -q
	$(PY) -m pytest -q --doctest-modules neuronmap --import-mode=prepend -p no:cacheprovider

# Full-size calibration simulations (tests/calibration; make test runs a small version) and the
# table of docs/statistics-and-similarity.md regenerated from docs/calibration/results.json.
calibration: $(VENV)/.dev-installed
	OMP_NUM_THREADS=1 $(PY) -m pytest -q tests/calibration --calibration -m calibration

bench: $(VENV)/.dev-installed
	$(PY) benchmarks/run_all.py

# Question 1 against nnsight and TransformerLens, in a virtual environment of their own.
.venv-peers/.installed: benchmarks/requirements-peers.txt constraints.txt
	$(PYTHON) -m venv .venv-peers
	.venv-peers/bin/python -m pip install --quiet --disable-pip-version-check torch==2.13.0 -c constraints.txt
	.venv-peers/bin/python -m pip install --quiet --disable-pip-version-check -r benchmarks/requirements-peers.txt
	touch $@

bench-peers: .venv-peers/.installed
	.venv-peers/bin/python benchmarks/capture_peers.py --n 128 --repeats 3

lint: $(VENV)/.dev-installed
	$(PY) -m ruff check neuronmap tests
	$(PY) -m mypy neuronmap

clean:
	rm -rf $(VENV) .venv-peers neuronmap-runs .pytest_cache
