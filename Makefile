# ragops — see README.md (and docs/) for what each target does.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Everything runs offline and quiet: no hub downloads, no telemetry (rag_ops.config sets the same).
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export ANONYMIZED_TELEMETRY := False
export DO_NOT_TRACK := 1
export SCARF_NO_ANALYTICS := true
export AIRFLOW__USAGE_DATA_COLLECTION__ENABLED := False

# Embedded demo state lives in the clone, not in $HOME.
DEMO_DATA := $(CURDIR)/.data/demo
DEMO_AIRFLOW := $(CURDIR)/.airflow/demo

.PHONY: venv demo test airflow bench bench-recall bench-drift clean help

help:
	@echo "make demo     set up, run the rag_ingest DAG on the bundled samples, query both stores"
	@echo "make test     set up and run the whole test suite (installs Debian's chromium for the browser test when root)"
	@echo "make airflow  Airflow 3 standalone with the ragops DAGs (UI on http://localhost:8080)"
	@echo "make bench    ingest benchmark (bench/ingest_bench.py)"
	@echo "make bench-recall [DATASET=../shared/datasets/scifact]  recall vs published figures (bench/recall_bench.py)"
	@echo "make bench-drift  drift tests' false positives and detection on SciFact vs Cranfield (bench/drift_bench.py)"

venv: $(STAMP)

# The lock is complete and resolved together: install it with --no-deps (see requirements.txt).
$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	RAGOPS_DATA_DIR=$(DEMO_DATA) AIRFLOW_HOME=$(DEMO_AIRFLOW) $(PY) -m rag_ops.demo

test: $(STAMP)
	bash scripts/ensure-browser.sh
	$(PY) -m pytest tests

airflow: $(STAMP)
	bash scripts/airflow-standalone.sh

bench: $(STAMP)
	$(PY) bench/ingest_bench.py

DATASET ?= ../shared/datasets/scifact
bench-recall: $(STAMP)
	$(PY) bench/recall_bench.py $(DATASET)

bench-drift: $(STAMP)
	$(PY) bench/drift_bench.py

clean:
	rm -rf .data .airflow
