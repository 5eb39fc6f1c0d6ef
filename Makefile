# eventstack: the commands a developer and CI run. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# checkov pins an older boto3 than requirements.txt: its own venv, inside .venv (tests/infra/test_checkov.py)
CHECKOV_VENV := $(VENV)/checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export CDK_DISABLE_CLI_TELEMETRY := true
STAGE ?= dev
CDK := npx --yes aws-cdk@2.1148.0

.PHONY: help setup test test-fast lint typecheck run synth bootstrap deploy destroy bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

setup: $(STAMP) $(CHECKOV_STAMP) ## create .venv and install everything (does nothing when up to date)

$(STAMP): requirements.txt lambdas/requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "eventstack needs Python 3.11+")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -e .
	@touch $(STAMP)

$(CHECKOV_STAMP): requirements-checkov.txt | $(STAMP)
	@test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-checkov.txt
	@touch $(CHECKOV_STAMP)

test: setup ## lint, type-check and run the whole test suite
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) -m pytest

test-fast: setup ## unit and integration tiers only
	$(PY) -m pytest -m "unit or integration"

lint: setup ## ruff and mypy
	$(PY) -m ruff check .
	$(PY) -m mypy

run: setup ## start the local stack (API on :8000, AWS emulation on :5000)
	$(VENV)/bin/eventstack local

synth: setup ## synthesize the CloudFormation templates into cdk.out
	$(PY) app.py

bootstrap: setup ## bootstrap the AWS account (once per account and region)
	$(CDK) bootstrap --no-notices

deploy: setup ## deploy every stack of STAGE (default dev)
	$(CDK) deploy --all --no-notices -c stage=$(STAGE)

destroy: setup ## destroy every stack of STAGE
	$(CDK) destroy --all --no-notices -c stage=$(STAGE)

bench: setup ## run the benchmarks; results go to bench/results/
	$(PY) -m bench

clean: ## remove build output (keeps .venv)
	rm -rf cdk.out .pytest_cache .mypy_cache .ruff_cache
