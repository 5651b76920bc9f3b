# The two entry points: `make demo` runs the main job, `make test` runs the tests.
# Both create .venv and install what they need on a fresh machine; each installs only its own extras.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# setuptools warns on every editable install (a boxed note about same-named folders): not news to a user.
PIP := PYTHONWARNINGS=ignore::UserWarning $(PY) -m pip install --quiet --disable-pip-version-check
PYTEST_ARGS ?= -m "not slow"

.PHONY: demo test test-all venv clean bench

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# One stamp per set of extras: the demo needs the package alone, the tests add pytest, hypothesis, OpenCV.
$(VENV)/.installed-base: pyproject.toml | $(PY)
	$(PIP) -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(PY)
	$(PIP) -e '.[test]'
	touch $@

venv: $(VENV)/.installed-base

test: $(VENV)/.installed-test
	$(PY) -m pytest $(PYTEST_ARGS)

test-all: $(VENV)/.installed-test
	$(PY) -m pytest

demo: $(VENV)/.installed-base
	$(PY) -m jaxviz demo

# The benchmark suite against eager PyTorch, torch.compile and Lucent (8 to 20 min on a 2-core CPU):
# writes $(BENCH_OUT).json, .md and .png; BENCH_ARGS picks pieces, e.g. BENCH_ARGS="--only dgn_am --batches 1,8".
# torch-lucent goes in without its declared dependencies (its torchvision would be a CUDA build).
BENCH_OUT ?= benchmarks/results/cpu-$(shell date +%F)
BENCH_ARGS ?=

$(VENV)/.installed-bench: pyproject.toml | $(PY)
	$(PIP) -e '.[bench]'
	$(PIP) --no-deps torch-lucent==0.1.8
	touch $@

bench: $(VENV)/.installed-bench
	$(PY) -m benchmarks.suite --out $(BENCH_OUT) --cache-dir $(VENV)/jax-cache $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
