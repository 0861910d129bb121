# The two commands of the README: `make demo` and `make test`. Everything they
# need (venv, Kafka jars, broker) is installed or started by them.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

NODE_PEER := tests/peers/node/node_modules/.package-lock.json
# Synapse for the end-to-end tests, in its own venv: its dependencies conflict with ours.
SYNAPSE_VERSION := 1.163.2
SYNAPSE_STAMP := .venv-synapse/.installed-$(SYNAPSE_VERSION)
# The feed module (synapse_module/, its own small distribution: confluent-kafka only) in Synapse's venv.
SYNAPSE_MODULE_STAMP := .venv-synapse/.installed-module

.PHONY: setup demo test lint unit integration kafka-start kafka-stop peers synapse clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

# The npm `matrix-appservice` package, a real appservice the tests talk to.
$(NODE_PEER): tests/peers/node/package-lock.json
	npm ci --prefix tests/peers/node --no-audit --no-fund --loglevel=error
	touch $(NODE_PEER)

peers: $(NODE_PEER)

$(SYNAPSE_STAMP):
	$(PYTHON) -m venv .venv-synapse
	.venv-synapse/bin/pip install --quiet --upgrade pip
	.venv-synapse/bin/pip install --quiet 'matrix-synapse==$(SYNAPSE_VERSION)'
	touch $(SYNAPSE_STAMP)

$(SYNAPSE_MODULE_STAMP): $(SYNAPSE_STAMP) synapse_module/pyproject.toml
	.venv-synapse/bin/pip install --quiet -e ./synapse_module
	touch $(SYNAPSE_MODULE_STAMP)

synapse: $(SYNAPSE_STAMP) $(SYNAPSE_MODULE_STAMP)

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

integration: kafka-start peers synapse
	$(BIN)/python -m pytest -q tests/integration

test: lint kafka-start peers synapse
	$(BIN)/python -m pytest -q -p no:cacheprovider

# The benchmark at tiny sizes (CI, under a minute): every scenario must yield
# figures; targets are not judged. A full run: `$(BIN)/python -m bench`.
.PHONY: bench-quick
bench-quick: kafka-start
	$(BIN)/python -m bench --quick

clean:
	-$(BIN)/appservice-streams kafka stop
	rm -rf .data .kafka/data
