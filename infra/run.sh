#!/usr/bin/env bash
# `make run`: the whole loop on one machine, live.
#
# Starts the embedded broker on 127.0.0.1:$RAPIDLOOP_BROKER_PORT (default 9092),
# creates the topics, starts a simulated fleet producing reports and verdicts
# forever, starts the job, and shows decisions as they are made (what, where,
# why) with the job's progress line every few seconds. Ctrl-C stops everything
# this script started, the broker included, and leaves no process behind.
#
# Knobs: RATE (reports/s, default 400), SEED (default 1), WORKERS (default 1).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PY=${PYTHON:-.venv/bin/python}
PORT=${RAPIDLOOP_BROKER_PORT:-9092}
BROKERS=127.0.0.1:$PORT
RATE=${RATE:-400}
SEED=${SEED:-1}
WORKERS=${WORKERS:-1}
export RAPIDLOOP_KAFKA__BROKERS=$BROKERS
mkdir -p .run

pids=()
job=""
cleanup() {
    local why=$1
    trap - INT TERM EXIT
    echo
    echo "make run: stopping..." >&2
    # Ctrl-C reaches the job too (it handles SIGINT itself): let it close its epoch and
    # print its summary rather than send it a second signal, which means "stop at once".
    if [[ $why == signal && -n $job ]]; then
        for _ in $(seq 150); do kill -0 "$job" 2>/dev/null || break; sleep 0.1; done
    fi
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    bash infra/broker.sh stop "$PORT" || true
    echo "make run: stopped (simulator log: .run/simulate.log)" >&2
}
trap 'cleanup signal' INT TERM
trap 'cleanup exit' EXIT

echo "make run: starting the embedded broker on $BROKERS" >&2
bash infra/broker.sh start "$PORT"
"$PY" -m rapidloop.cli topics create --brokers "$BROKERS"

echo "make run: simulated fleet producing $RATE reports/s (log: .run/simulate.log)" >&2
"$PY" -m rapidloop.cli simulate --kafka --brokers "$BROKERS" --forever --rate "$RATE" \
    --seed "$SEED" >.run/simulate.log 2>&1 &
pids+=($!)

echo "make run: starting the job (progress line every 5 s)" >&2
# The embedded broker keeps topics in memory: the previous demo's recovery state
# describes topics that no longer exist, so each demo starts its own.
rm -rf .run/recovery-demo
"$PY" -m rapidloop.cli run --brokers "$BROKERS" --workers "$WORKERS" --progress 5 \
    --recovery-dir .run/recovery-demo &
job=$!
pids+=($!)

# Decisions as they are made, in the foreground: Ctrl-C ends it, and the trap
# above stops everything else (background jobs of a script ignore Ctrl-C).
"$PY" -m rapidloop.cli tail --brokers "$BROKERS" --from-beginning
