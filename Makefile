# The two front doors: `make demo` (end to end on synthetic data) and `make test` (the whole suite).
# Each bootstraps .venv idempotently: PyTorch first, then the project.
# TORCH_INDEX: the package index torch comes from; empty = pip's default index (on the project's own machines that
# resolves to a CPU build on disk). Where the default index would pull the multi-GB CUDA build, use PyTorch's CPU-only
# index: make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
DEMO_DATA ?= data/demo
ARTIFACTS ?= artifacts
PYTEST_ARGS ?=
TORCH_INDEX ?=
TORCH_VERSION ?= 2.13.0

.PHONY: venv demo test lint typecheck bench clean serve up down

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==$(TORCH_VERSION) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install -q -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $(STAMP)

# Epochs of the transformer and the neural engine in the demo: on the synthetic data both rank above EASE from about
# epoch 10 on; 20 leave a clear margin in about a minute of training for all four engines on 2 cores (README.md).
DEMO_EPOCHS ?= 20

demo: $(STAMP)
	$(VENV)/bin/recengine data synth -o $(DEMO_DATA)
	$(VENV)/bin/recengine train --engine popularity --data $(DEMO_DATA)
	$(VENV)/bin/recengine train --engine ease --data $(DEMO_DATA)
	$(VENV)/bin/recengine train --engine transformer --data $(DEMO_DATA) --epochs $(DEMO_EPOCHS)
	$(VENV)/bin/recengine train --engine neural --data $(DEMO_DATA) --epochs $(DEMO_EPOCHS)
	$(VENV)/bin/recengine models
	@echo 'serving on http://127.0.0.1:8000 — try: curl "http://127.0.0.1:8000/api/v1/recommendations?user_id=u1&k=5"'
	$(VENV)/bin/recengine serve

serve: $(STAMP)
	$(VENV)/bin/recengine serve

test: $(STAMP)
	$(PY) -m pytest --cov=recengine --cov-report=term --cov-fail-under=90 $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) benchmarks/quality.py

clean:
	rm -rf $(DEMO_DATA) $(ARTIFACTS) .pytest_cache .coverage

# The whole stack in Docker (api replicas behind nginx, Redis, Prometheus, Grafana, MLflow); see docs/operations.md.
COMPOSE ?= docker compose -f deploy/docker-compose.yml

up:
	$(COMPOSE) up -d --build
	@echo "API http://localhost:8000  Grafana http://localhost:3000  Prometheus http://localhost:9090  MLflow http://localhost:5000"

down:
	$(COMPOSE) down
