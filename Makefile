# rapidloop: `make run` and `make test` work on a fresh clone.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3.12)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PORT ?= 9092

.PHONY: browser eval install run test test-unit test-integration lint fmt replay-demo clean broker-start broker-stop bench

install: $(STAMP)

# demo: the embedded broker that `make run` and the integration tests start (infra/broker.sh).
# The Makefile is a prerequisite too, so a change of the extras below also reinstalls.
$(STAMP): pyproject.toml Makefile
	@test -n "$(PYTHON)" || { echo "need python3.11 or python3.12 (Bytewax 0.21 wheels)"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev,demo]'
	@touch $(STAMP)

## run: broker + topics + simulated fleet + the job, showing live decisions (Ctrl-C stops all)
run: install
	@PYTHON=$(BIN)/python RAPIDLOOP_BROKER_PORT=$(PORT) bash infra/run.sh

## browser: Debian's Chromium, for the test that renders `explain --html` (skipped without it)
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	  || echo "make: chromium not installed; the explain --html render test will be skipped"

## test: the whole suite; integration tests start their own broker
test: install browser
	$(BIN)/ruff check .
	$(BIN)/pytest -q

test-unit: install
	$(BIN)/pytest -q tests/unit

test-integration: install
	$(BIN)/pytest -q tests/integration

## test-faults: broker faults, hostile input, abuse of the loop, security settings (~70 s)
test-faults: install
	$(BIN)/pytest -q tests/integration/test_faults.py tests/integration/test_security.py \
	  tests/unit/test_fuzz_wire.py tests/unit/test_abuse.py tests/unit/test_security.py

lint: install
	$(BIN)/ruff check .

fmt: install
	$(BIN)/ruff check --fix .

## eval: simulate worlds for several seeds, replay and score each against its truth, apart for
## the tuning seeds and for held-out seeds drawn fresh each run (~1 min per world per core);
## e.g. `make eval EVAL_ARGS="--seeds 123456 --strict"` re-runs a held-out seed
EVAL_ARGS ?= --tuning 1 2 3 --held-out 10
eval: install
	$(BIN)/python -m rapidloop.tools.evalsuite $(EVAL_ARGS)

## replay-demo: simulate a day into out/day and replay it offline
replay-demo: install
	$(BIN)/rapidloop simulate --out out/day --seed 1
	$(BIN)/rapidloop replay --reports out/day/reports.jsonl.gz --feedback out/day/feedback.jsonl.gz \
	  --output out/day/decisions.jsonl --dead-letters out/day/deadletters.jsonl

broker-start: install
	@PYTHON=$(BIN)/python bash infra/broker.sh start $(PORT)

broker-stop:
	@PYTHON=$(BIN)/python bash infra/broker.sh stop $(PORT)

clean:
	rm -rf $(VENV) .run out .pytest_cache .ruff_cache *.egg-info

## bench: throughput, latency, replay and memory benchmarks (table + out/bench/results.json);
## BENCH_QUICK=1 for a short smoke run. About 10 minutes on 2 cores.
bench: install
	$(BIN)/python -m bench.run
