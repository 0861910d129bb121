# The two commands of the README: `make demo` and `make test`. Everything they
# need (venv, Kafka jars, broker) is installed or started by them.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo test lint unit integration kafka-start kafka-stop clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/appservice-streams demo

kafka-start: setup
	$(BIN)/appservice-streams kafka start

kafka-stop: setup
	$(BIN)/appservice-streams kafka stop

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

unit: setup
	$(BIN)/python -m pytest -q tests/unit

integration: kafka-start
	$(BIN)/python -m pytest -q tests/integration

test: lint kafka-start
	$(BIN)/python -m pytest -q -p no:cacheprovider

clean:
	-$(BIN)/appservice-streams kafka stop
	rm -rf .data .kafka/data
