"""One line for every bad input: a file `replay`, `explain` or `capture` cannot use stops the
command with one line naming the file and what is wrong, a non-zero exit, no traceback and no
output that looks complete; a bad *line* in a good file stays a dead letter and the run goes on.

Every case runs the real command in a subprocess (a Rust panic or a traceback would show on
its stderr). Inputs are hand-written JSONL of a few lines; the capture cases need no broker
(tests/integration/test_bad_inputs.py has the ones that do).
"""

from __future__ import annotations

import gzip
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from rapidloop.flows.file_io import OverlongLine, read_lines
from rapidloop.schemas.model import Decision
from rapidloop.schemas.wire import RAW_TEXT_CAP, Limits, encode_decision

from ..conftest import ROOT, free_port
from .helpers import sha

LIMIT = Limits().max_message_bytes   # the default [limits] max_message_bytes
HUGE = 5 * 1024 * 1024               # "a 5 MB line"


def report(i: int, name: str = "a.exe") -> bytes:
    return orjson.dumps({
        "report_id": f"r-{i}", "ts": f"2026-11-28T00:{i // 60 % 60:02d}:{i % 60:02d}Z",
        "org_id": "org-1", "device_id": "org-1/d", "sha256": sha(i), "source": "edr",
        "file": {"name": name, "size": 1, "type": "pe", "signed": False}, "behaviors": []})


def verdict(i: int) -> bytes:
    return orjson.dumps({"feedback_id": f"f-{i}", "ts": f"2026-11-28T00:00:{i % 60:02d}Z",
                         "sha256": sha(i), "verdict": "malicious", "source": "sandbox"})


def decision(i: int) -> bytes:
    return encode_decision(Decision(f"d-{i}", sha(i), "block", "global", None, None, 0.9, {},
                                    ["test"], "m", 1.8e9, None, 1.8e9))


def jsonl(lines: list[bytes]) -> bytes:
    return b"".join(line + b"\n" for line in lines)


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rapidloop.cli", *args], cwd=cwd or ROOT,
                          capture_output=True, text=True, timeout=120)


def one_line(p: subprocess.CompletedProcess[str], command: str) -> str:
    """The single stderr line of a failed command (asserted: one line, no traceback/panic)."""
    assert p.returncode != 0, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert "Traceback" not in p.stderr and "panicked" not in p.stderr
    assert lines[0].startswith(f"rapidloop {command}: "), lines[0]
    return lines[0]


def outputs(tmp: Path) -> list[str]:
    """Anything a replay wrote (complete or not) in ``tmp``."""
    return sorted(p.name for p in tmp.iterdir() if p.name.startswith(("out", "dead")))


# ---------------------------------------------------------------- replay: whole files

def _bad_file(tmp: Path, case: str) -> tuple[Path, Path | None, str]:
    """(reports, feedback, expected words) for one kind of unusable input file."""
    good = [report(i) for i in range(30)]
    reports, feedback = tmp / "reports.jsonl", None
    if case == "binary with NUL bytes":
        reports.write_bytes(bytes(range(256)) * 40)   # line breaks and NULs throughout
        expected = "binary data, not JSON lines: line 1 has a NUL byte at byte 0; none of its " \
                   "first 20 lines is JSON text"
    elif case == "only NUL bytes":
        reports.write_bytes(b"\0" * 5000)
        expected = "binary data, not JSON lines: line 1 has a NUL byte at byte 0"
    elif case == "not UTF-8 (Latin-1)":
        reports.write_bytes(jsonl([report(i, "résumé.exe") for i in range(30)]).replace(
            "é".encode(), b"\xe9"))
        expected = "not UTF-8 text (binary, or another encoding such as Latin-1): line 1 has " \
                   "byte 0xe9"
    elif case == "one giant line":
        reports.write_bytes(b'{"pad":"' + b"p" * HUGE)
        expected = f"one line of {HUGE + 8:,} bytes with no line break"
    elif case == "gzip not named .gz":
        reports.write_bytes(gzip.compress(jsonl(good)))
        expected = "gzip-compressed but not named .gz"
    elif case == "feedback given as reports":
        reports.write_bytes(jsonl([verdict(i) for i in range(30)]))
        expected = "holds feedback, not reports: of its first 20 lines, 20 are feedback and " \
                   "none is a report (given as --reports: --reports and --feedback swapped?)"
    elif case == "reports given as feedback":
        reports.write_bytes(jsonl(good))
        feedback = tmp / "feedback.jsonl.gz"
        feedback.write_bytes(gzip.compress(jsonl(good[:3])))
        expected = "holds reports, not feedback: of its 3 lines, 3 are reports and none is a " \
                   "verdict (given as --feedback"
    else:   # a replay's decisions given as its input
        reports.write_bytes(jsonl([decision(i) for i in range(5)]))
        expected = "holds decisions, not reports: of its 5 lines, 5 are decisions"
    return reports, feedback, expected


@pytest.mark.parametrize("case", ["binary with NUL bytes", "only NUL bytes",
                                  "not UTF-8 (Latin-1)", "one giant line", "gzip not named .gz",
                                  "feedback given as reports", "reports given as feedback",
                                  "decisions given as reports"])
def test_an_unusable_input_file_stops_the_replay_in_one_line(tmp_path: Path, case: str) -> None:
    reports, feedback, expected = _bad_file(tmp_path, case)
    args = ["replay", "--reports", str(reports), "--output", str(tmp_path / "out.jsonl"),
            "--dead-letters", str(tmp_path / "dead.jsonl")]
    if feedback is not None:
        args += ["--feedback", str(feedback)]
    line = one_line(cli(*args), "replay")
    bad = feedback or reports
    assert line.startswith(f"rapidloop replay: {bad}: {expected}"), line
    assert line.endswith("— stopped before replaying anything")
    assert outputs(tmp_path) == [], "output left behind"


# ---------------------------------------------------------------- replay: bad lines

def test_a_bad_line_in_a_good_file_is_a_dead_letter_with_a_specific_reason(
        tmp_path: Path) -> None:
    lines = [report(i) for i in range(30)]
    lines[3] = report(3, "résumé.exe").replace("é".encode(), b"\xe9")   # Latin-1, not UTF-8
    lines[7] = lines[7].replace(b'"edr"', b'"e\x00r"')                  # a NUL byte
    lines[11] = b"\x00" * 40                                             # a line of NULs
    reports = tmp_path / "reports.jsonl"
    reports.write_bytes(jsonl(lines))
    p = cli("replay", "--reports", str(reports), "--output", str(tmp_path / "out.jsonl"),
            "--dead-letters", str(tmp_path / "dead.jsonl"))
    assert p.returncode == 0, p.stderr
    dead = {d["offset"]: d["error"]
            for d in map(orjson.loads, (tmp_path / "dead.jsonl").read_bytes().splitlines())}
    assert sorted(dead) == [4, 8, 12]
    assert dead[4].startswith("message is not valid UTF-8: invalid continuation byte at byte")
    assert dead[8].startswith("message is not valid JSON: unexpected control character in "
                              "string")
    assert dead[12].startswith("message is not valid JSON")
    assert outputs(tmp_path) == ["dead.jsonl", "out.jsonl"]


def test_a_5mb_line_is_a_dead_letter_read_in_bounded_memory(tmp_path: Path) -> None:
    """The limit is the one for Kafka messages (limits.max_message_bytes): the line is dead-
    lettered as too large, quoting a preview, and the run goes on."""
    huge = b'{"report_id":"r-big","pad":"' + b"p" * HUGE + b'"}'
    lines = [report(i) for i in range(10)] + [huge] + [report(i) for i in range(10, 20)]
    reports = tmp_path / "reports.jsonl.gz"
    reports.write_bytes(gzip.compress(jsonl(lines)))
    p = cli("replay", "--reports", str(reports), "--output", str(tmp_path / "out.jsonl"),
            "--dead-letters", str(tmp_path / "dead.jsonl"))
    assert p.returncode == 0, p.stderr
    assert "replayed 21 messages" in p.stderr and "dead letters 1;" in p.stderr
    [dead] = map(orjson.loads, (tmp_path / "dead.jsonl").read_bytes().splitlines())
    assert dead["offset"] == 11
    assert dead["error"] == f"message is {len(huge)} bytes, more than the limit of {LIMIT}"
    assert dead["raw"] == (huge[:RAW_TEXT_CAP].decode() + f"... [truncated: {len(huge)} "
                           f"bytes in all, first {RAW_TEXT_CAP} kept]")


def test_an_overlong_line_is_never_held_whole(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(b"a\r\n" + b"x" * HUGE + b"\r\n" + b"b\n" + b"y" * (LIMIT + 10))
    with open(path, "rb") as f:
        got = list(read_lines(f, LIMIT))
    assert [n for n, _ in got] == [1, 2, 3, 4]
    assert got[0][1] == b"a" and got[2][1] == b"b"
    for (_, line), size in ((got[1], HUGE), (got[3], LIMIT + 10)):
        assert len(line) == size            # what the parser judges it by
        if size > RAW_TEXT_CAP + 2:
            assert isinstance(line, OverlongLine)
            assert len(bytes(line)) <= max(LIMIT, RAW_TEXT_CAP) + 2   # what is held


# ---------------------------------------------------------------- replay: interrupted

@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_replay_leaves_no_output(tmp_path: Path, sig: signal.Signals) -> None:
    reports = tmp_path / "reports.jsonl"
    reports.write_bytes(jsonl([report(i) for i in range(600)]))   # 10 minutes of event time
    out = tmp_path / "out.jsonl"
    p = subprocess.Popen([sys.executable, "-m", "rapidloop.cli", "replay", "--reports",
                          str(reports), "--output", str(out), "--dead-letters",
                          str(tmp_path / "dead.jsonl"), "--pace", "20x"],
                         cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not Path(f"{out}.partial").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)   # well into the paced replay (30 s at 20x)
        p.send_signal(sig)
        _, err = p.communicate(timeout=60)
    finally:
        p.kill()
    assert p.returncode == 128 + sig, err
    lines = err.strip().splitlines()
    assert lines == [f"rapidloop replay: interrupted ({sig.name}); no output written"], err
    assert outputs(tmp_path) == []


# ---------------------------------------------------------------- explain --from

@pytest.mark.parametrize("case, expected", [
    ("reports", "holds reports, not decisions: of its 3 lines, 3 are reports and none is a "
                "decision (--from takes a replay's decisions, or a capture or input directory)"),
    ("feedback", "holds feedback, not decisions"),
    ("binary", "binary data, not JSON lines: line 1 has a NUL byte at byte 0"),
    ("other JSON", "holds no decisions: none of its 2 lines is one (line 1: a decision needs "
                   "'decision_id')"),
])
def test_explain_from_a_file_of_the_wrong_kind_is_one_line(tmp_path: Path, case: str,
                                                           expected: str) -> None:
    src = tmp_path / "decisions.jsonl"
    src.write_bytes({"reports": jsonl([report(i) for i in range(3)]),
                     "feedback": jsonl([verdict(i) for i in range(3)]),
                     "binary": b"\0\1\2\3" * 100,
                     "other JSON": b'{"a": 1}\n{"b": 2}\n'}[case])
    line = one_line(cli("explain", sha(1), "--from", str(src)), "explain")
    assert line.startswith(f"rapidloop explain: {src}: {expected}"), line


def test_explain_checks_the_files_of_an_input_directory_and_decisions(tmp_path: Path) -> None:
    world = tmp_path / "world"
    world.mkdir()
    (world / "reports.jsonl").write_bytes(jsonl([verdict(i) for i in range(3)]))
    line = one_line(cli("explain", sha(1), "--from", str(world)), "explain")
    assert line == (f"rapidloop explain: {world / 'reports.jsonl'}: holds feedback, not "
                    "reports: of its 3 lines, 3 are feedback and none is a report")
    (world / "reports.jsonl").write_bytes(jsonl([report(i) for i in range(3)]))
    line = one_line(cli("explain", sha(1), "--from", str(world), "--decisions",
                        str(world / "reports.jsonl")), "explain")
    assert "holds reports, not decisions" in line and "(--decisions takes a replay's" in line
    empty = tmp_path / "empty.jsonl"   # a replay that decided nothing: a story, not an error
    empty.write_bytes(b"")
    p = cli("explain", sha(1), "--from", str(empty))
    assert p.returncode == 0 and "nothing about this file" in p.stdout, p.stderr


# ---------------------------------------------------------------- capture (no broker)

def test_capture_to_an_unwritable_place_is_one_line_before_the_broker(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    t0 = time.monotonic()
    line = one_line(cli("capture", "--since", "1h", "--out", str(blocker / "cap"),
                        "--brokers", f"127.0.0.1:{free_port()}"), "capture")
    assert line == f"rapidloop capture: cannot write {blocker / 'cap' / '.partial'}: " \
                   "Not a directory"
    assert time.monotonic() - t0 < 10   # the broker (unreachable) was not waited for


@pytest.fixture
def silent_broker() -> Iterator[str]:
    """A port that accepts connections and never answers: a capture waits on it."""
    srv = socket.create_server(("127.0.0.1", 0))
    conns: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                conns.append(srv.accept()[0])
            except TimeoutError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield f"127.0.0.1:{srv.getsockname()[1]}"
    stop.set()
    t.join()
    for c in conns:
        c.close()
    srv.close()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_capture_leaves_nothing(tmp_path: Path, silent_broker: str,
                                               sig: signal.Signals) -> None:
    out = tmp_path / "cap"
    p = subprocess.Popen([sys.executable, "-m", "rapidloop.cli", "capture", "--since", "1h",
                          "--out", str(out), "--brokers", silent_broker],
                         cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not (out / ".partial").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        p.send_signal(sig)
        _, err = p.communicate(timeout=30)
    finally:
        p.kill()
    assert p.returncode == 128 + sig, err
    assert err.strip().splitlines() == [f"rapidloop capture: interrupted ({sig.name}); no "
                                        f"capture written to {out}"], err
    assert not out.exists()


def test_an_unfinished_capture_is_named_as_such(tmp_path: Path) -> None:
    out = tmp_path / "cap"
    (out / ".partial").mkdir(parents=True)   # what a capture killed outright leaves
    line = one_line(cli("capture", "--since", "1h", "--out", str(out), "--brokers",
                        f"127.0.0.1:{free_port()}"), "capture")
    assert line == (f"rapidloop capture: {out} holds an unfinished capture (.partial, no "
                    "manifest.json); delete it first")
    p = cli("replay", "--capture", str(out), "--output", str(tmp_path / "out.jsonl"))
    assert "is not a capture (no manifest.json; an unfinished capture has none)" in \
        one_line(p, "replay")
