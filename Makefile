# streamlearn: the two commands of the README are `make demo` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup demo up down status test unit lint check-protos protos bench kafka-start kafka-stop compose-test gpu-check

setup:  ## create or reuse the environment (cached outside the clone) and link .venv
	@scripts/bootstrap.sh

demo: setup  ## the whole system on embedded defaults: local Kafka, the services, a live demo stream
	@scripts/system-deps.sh
	$(VENV)/bin/streamlearn demo

test: setup check-protos lint  ## everything CI runs: contracts current, lint, all test suites
	@scripts/system-deps.sh --tests
	@scripts/kustomize.sh >/dev/null
	@scripts/run-tests.sh $(PYTEST_ARGS)

unit: setup  ## fast feedback: unit tests only (no broker)
	@scripts/kustomize.sh >/dev/null
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check shared services streamlearn bench tests scripts
	$(VENV)/bin/ruff format --check shared services streamlearn bench tests scripts
	$(VENV)/bin/mypy shared services streamlearn bench

check-protos: setup
	$(PY) scripts/protos.py --check

protos: setup  ## regenerate the committed protobuf/gRPC code
	$(PY) scripts/protos.py

bench: setup  ## every benchmark, side by side with its baseline
	$(VENV)/bin/streamlearn bench --all

up: setup  ## start the broker and the four services in the background
	@scripts/system-deps.sh
	$(VENV)/bin/streamlearn up

down: setup
	$(VENV)/bin/streamlearn down

status: setup
	$(VENV)/bin/streamlearn status

kafka-start: setup
	$(VENV)/bin/streamlearn kafka start

kafka-stop: setup
	$(VENV)/bin/streamlearn kafka stop

gpu-check: setup  ## GPU figures beside the CPU when CUDA is present; says so plainly otherwise
	$(PY) scripts/gpu-check.py

compose-test: setup  ## docker-compose.yml for real: engine, images built here, stack healthy, loop proven
	@scripts/compose-test.sh
