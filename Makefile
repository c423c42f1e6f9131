# `make demo` and `make test` each set everything up on a fresh machine (Python 3.10+).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python

.PHONY: demo seeds docs results bench accel-check scale test check lint format install install-test native clean

# The oneDNN GRU kernel (jaxgru.onednn, ExecutionOptions(kernel="onednn")), built against the
# oneDNN wheels every install below brings. demo, test, check and bench build it first.
NATIVE := jaxgru/_native/libjaxgru_onednn.so

# The demo trains configs/default.toml into runs/demo (replacing an earlier demo run).
demo: $(VENV)/.installed $(NATIVE)
	rm -rf runs/demo
	$(VENV)/bin/jaxgru train configs/default.toml --set run.dir=runs/demo

seeds: $(VENV)/.installed
	$(PY) experiments/seed_questions.py

docs: $(VENV)/.installed-test
	cd experiments && ../$(PY) gru_math_doc.py

results: $(VENV)/.installed-test
	$(PY) experiments/reproduce_configs.py
	$(PY) experiments/keras_fit_parity.py
	$(PY) experiments/convert_agreement.py

# jaxgru against Keras (TF, TF+XLA, JAX), Flax, Equinox and PyTorch; writes docs/benchmarks.md.
bench: $(VENV)/.installed-bench $(NATIVE)
	$(PY) experiments/benchmark.py

# On a GPU/TPU machine: the JAX-only tier with float32 matmuls, then the benchmark, on the
# backend JAX finds; writes docs/results/accelerator.md. Never a dependency of the tests.
accel-check: $(VENV)/.installed-bench $(VENV)/.installed-check
	$(PY) experiments/accelerator_check.py

# Peak memory against sequence length (remat on and off) and bfloat16 speed; docs/scale.md.
scale: $(VENV)/.installed
	$(PY) experiments/scale.py

test: $(VENV)/.installed-test $(NATIVE)
	$(VENV)/bin/ruff check jaxgru tests experiments conftest.py
	$(VENV)/bin/ruff format --check jaxgru tests experiments conftest.py
	$(PY) -m pytest -q -n auto --durations=25

# The fast tier: JAX only (no TensorFlow, torch, ONNX, Flax, Equinox); minutes, not tens.
# Its programs are tiny, so compiling them costs more than running them: XLA's backend
# optimisations and its CPU fusion emitters are off there (the CPU time halves; make test
# keeps XLA's defaults, as users run it).
CHECK_TIER := not oracle and not multiprocess and not benchmark
CHECK_XLA_FLAGS := --xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false
check: $(VENV)/.installed-check $(NATIVE)
	$(VENV)/bin/ruff check jaxgru tests experiments conftest.py
	XLA_FLAGS="$(CHECK_XLA_FLAGS) $$XLA_FLAGS" \
		$(PY) -m pytest -q -n auto -m "$(CHECK_TIER)"

format: $(VENV)/.installed-test
	$(VENV)/bin/ruff format jaxgru tests experiments
	$(VENV)/bin/ruff check --fix jaxgru tests experiments

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test
native: $(NATIVE)

$(NATIVE): jaxgru/_native/gru_onednn.cc jaxgru/_native/build.sh | $(VENV)/.installed
	sh jaxgru/_native/build.sh $(PY)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e ".[native]"
	touch $@

$(VENV)/.installed-bench: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e ".[bench]"
	touch $(VENV)/.installed $@

$(VENV)/.installed-check: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e ".[check]"
	touch $(VENV)/.installed $@

$(VENV)/.installed-test: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(VENV)/.installed $(VENV)/.installed-check $@

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info runs jaxgru/_native/*.so*
