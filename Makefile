# Two commands for a newcomer: `make demo` and `make test`. Everything else is set up on the way.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint system-deps bench clean kube-test-server

system-deps:
	@bash hack/system-deps

$(STAMP): pyproject.toml | system-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/reconciler demo $(DEMO_ARGS)

# kube-apiserver + etcd for the tests, built from pinned Go modules once per machine and
# cached under ~/.cache (about 12 minutes on 2 cores the first time, nothing afterwards)
kube-test-server: $(STAMP)
	$(BIN)/python hack/kube-test-server build

test: $(STAMP) system-deps kube-test-server
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check reconciler tests hack
	$(BIN)/ruff format --check reconciler tests hack
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: $(STAMP)
	$(BIN)/python hack/bench.py recovery --experiments 1000 --history 100000

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
