# eventstack: the commands a developer and CI run. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# checkov pins an older boto3 than requirements.txt: its own venv, inside .venv (tests/infra/test_checkov.py)
CHECKOV_VENV := $(VENV)/checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed
PIP_FLAGS := --disable-pip-version-check --progress-bar off
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export CDK_DISABLE_CLI_TELEMETRY := true
STAGE ?= dev
# The one CDK CLI: pinned, and --yes so npx installs it without asking (and without a terminal)
CDK_VERSION := 2.1148.0
CDK := npx --yes aws-cdk@$(CDK_VERSION)
# `make run ARGS="--port 8100 --aws-port 5100"`, `make cdk ARGS="diff -c stage=dev"`
ARGS ?=
# `make bench` writes here (ignored by git); `make bench BENCH_OUT=bench/results` replaces the committed results
BENCH_OUT ?= bench/out

.PHONY: help setup test test-fast test-e2e lint typecheck run docker-run synth bootstrap deploy destroy cdk bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

setup: $(STAMP) $(CHECKOV_STAMP) ## create .venv and install everything (does nothing when up to date)

$(STAMP): requirements.txt requirements-local.txt lambdas/requirements.txt pyproject.toml
	@echo "make setup: installing eventstack's pinned Python dependencies into $(VENV): about 2 minutes the first time, the last minute silent while pip unpacks (later runs skip this)"
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "eventstack needs Python 3.11+")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) -r requirements.txt -e .
	@touch $(STAMP)
	@echo "make setup: $(VENV) is ready"

$(CHECKOV_STAMP): requirements-checkov.txt | $(STAMP)
	@echo "make setup: installing checkov into $(CHECKOV_VENV), its own venv: about 40 s the first time"
	@test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install $(PIP_FLAGS) -r requirements-checkov.txt
	@touch $(CHECKOV_STAMP)
	@echo "make setup: $(CHECKOV_VENV) is ready"

# pytest in two processes, each test file whole in one of them (the fuzz module's summary test reads what
# its fuzzing test counted in the same process): run serially, the suite had grown past 30 minutes on 2 cores
test: setup ## lint, type-check and run the whole test suite
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) -m pytest -n 2 --dist loadfile

test-fast: setup ## unit and integration tiers only
	$(PY) -m pytest -m "unit or integration"

test-e2e: setup ## the e2e tier only (the local runtime over HTTP, the docs' walkthroughs)
	$(PY) -m pytest -m e2e

lint: setup ## ruff and mypy
	$(PY) -m ruff check .
	$(PY) -m mypy

run: setup ## start the local stack (API on :8000, AWS emulation on :5000); flags: ARGS="--port 8100 ..."
	$(VENV)/bin/eventstack local $(ARGS)

docker-run: ## the local stack in a container (compose.yaml; needs a Docker engine), same ports as `make run`
	docker compose up --build

synth: setup ## synthesize the CloudFormation templates into cdk.out
	$(PY) app.py

bootstrap: setup ## bootstrap the AWS account (once per account and region)
	$(CDK) bootstrap --no-notices

deploy: setup ## deploy every stack of STAGE (default dev)
	$(CDK) deploy --all --no-notices -c stage=$(STAGE)

destroy: setup ## destroy every stack of STAGE
	$(CDK) destroy --all --no-notices -c stage=$(STAGE)

cdk: setup ## the pinned CDK CLI with ARGS, e.g. ARGS="deploy eventstack-dev-posts -c stage=dev"
	$(CDK) $(ARGS)

bench: setup ## run the benchmarks; results go to BENCH_OUT (default bench/out/, not committed)
	$(PY) -m bench --out $(BENCH_OUT)

clean: ## remove build output (keeps .venv)
	rm -rf cdk.out .pytest_cache .mypy_cache .ruff_cache
