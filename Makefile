# Two commands for a newcomer: `make demo` and `make test`. Everything else is set up on the way.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# the venv with the test and lint tools ($(VENV)/.installed: the package alone, for the demo)
STAMP  := $(VENV)/.installed-dev

.PHONY: demo test lint system-deps demo-deps bench clean kube-test-server gitops-test-operators image image-test

# Debian packages: the demo needs git and python3-venv; the tests add their servers
demo-deps:
	@bash hack/system-deps demo

system-deps:
	@bash hack/system-deps test

$(VENV)/.installed: pyproject.toml | demo-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	@touch $@

$(STAMP): $(VENV)/.installed | system-deps
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

demo: $(VENV)/.installed
	$(BIN)/reconciler demo $(DEMO_ARGS)

# kube-apiserver + etcd for the tests, built from pinned Go modules once per machine and
# cached under ~/.cache (about 12 minutes on 2 cores the first time, nothing afterwards)
kube-test-server: $(STAMP)
	$(BIN)/python hack/kube-test-server build

# Flux's source-controller and kustomize-controller (and Argo CD's application controller
# and repo server) for the e2e tests beside a real GitOps operator: built the same way, once
# per machine, cached under ~/.cache (see README "Development" for the times)
gitops-test-operators: $(STAMP)
	$(BIN)/python hack/gitops-test-operators build all

# two workers: most e2e tests wait on servers; PYTEST_WORKERS=0 runs them in this process
PYTEST_WORKERS ?= 2
test: $(STAMP) system-deps kube-test-server gitops-test-operators
	$(BIN)/pytest --numprocesses $(PYTEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check reconciler tests hack
	$(BIN)/ruff format --check reconciler tests hack
	$(BIN)/mypy
	$(BIN)/lint-imports

# The container image: hack/build-image builds it with podman (making debian:bookworm-slim
# with debootstrap when it is neither local nor pullable); hack/image-test runs it as the pod
# does and fails when it is not under IMAGE_MAX_MB (the goal; README "Build the image").
IMAGE        ?=
IMAGE_MAX_MB ?= 200

image:
	bash hack/build-image $(if $(IMAGE),--tag $(IMAGE))

image-test: image
	bash hack/image-test $(if $(IMAGE),--tag $(IMAGE)) --max-size-mb $(IMAGE_MAX_MB)

# The figures of the README's Performance section (about 8 minutes on 2 cores)
bench: $(STAMP)
	$(BIN)/python hack/bench.py promote --runs 15
	$(BIN)/python hack/bench.py race --rate 5 --seconds 20 --promotions 100 --transport git
	$(BIN)/python hack/bench.py race --rate 5 --seconds 20 --promotions 100 --transport https
	$(BIN)/python hack/bench.py tick --experiments 1000 --runs 5
	$(BIN)/python hack/bench.py memory --experiments 10000
	$(BIN)/python hack/bench.py recovery --experiments 1000 --history 100000
	$(BIN)/python hack/bench.py stats --runs 1000

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
