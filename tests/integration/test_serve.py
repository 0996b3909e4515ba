"""`rapidloop serve` as a process, asked over real HTTP (urllib) and rendered by chromium.

The world is the unit test's (tests/unit/test_serve.py): global, org-A, org-B and
device decisions, some lapsed. Tenant A's stream and page hold global decisions and
A's, never B's; the operator's hold everything; a bad token is a 401. With
``--from-kafka`` the server follows the compacted feed on the test broker.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from rapidloop.operators.activefeed import target_key
from rapidloop.schemas.timefmt import format_ts
from rapidloop.schemas.wire import read_decision

from ..conftest import TopicMaker
from ..unit.test_active import dec
from ..unit.test_serve import OP, TOKENS, WANT, A, B, h, seen, write_world
from .test_kafka_io import config_file, produce

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
START_S = 30.0


@contextlib.contextmanager
def serving(tmp_path: Path, *args: str) -> Iterator[str]:
    """``rapidloop serve ARGS --port 0`` as a child process; its base URL. Stopped with
    SIGTERM at the end, which must end it cleanly (exit 0)."""
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "rapidloop.cli", "serve", *args,
                                 "--port", "0"], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_S
        while not (m := re.search(r"listening on (http://[\d.]+:\d+)", log.read_text())):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield m.group(1)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
    text = log.read_text()
    assert code == 0 and "rapidloop serve: stopped" in text, text
    for token in TOKENS:
        assert token not in text   # never logged, not even from a ?token= URL


def get(url: str, token: str | None = None, method: str = "GET"
        ) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, method=method)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


@pytest.fixture
def base(tmp_path: Path) -> Iterator[str]:
    decisions, tokens = write_world(tmp_path)
    with serving(tmp_path, "--decisions", str(decisions), "--tokens", str(tokens)) as url:
        yield url


def test_each_tenants_stream_over_http(base: str) -> None:
    stream = f"{base}/v1/decisions/stream"
    for token in (A, B, OP):
        status, headers, body = get(f"{stream}?startup=true", token)
        assert status == 200 and headers["Content-Type"] == "application/json"
        assert headers["Cache-Control"] == "no-store"
        got = json.loads(body)
        assert seen(got) == WANT[token] and got["deleted"] == []
    assert b"org-b" not in get(f"{stream}?startup=true", A)[2]
    assert b"org-a" not in get(f"{stream}?startup=true", B)[2]
    # a static file: the next calls have nothing new, and say so with lists, never null
    assert json.loads(get(stream, A)[2]) == {"new": [], "deleted": []}
    for token in (None, "wrong-token-0123456789", A[:-1]):
        status, headers, body = get(f"{stream}?startup=true", token)
        assert status == 401 and headers["Content-Type"] == "application/json"
        assert list(json.loads(body)) == ["message"] and body.count(b"\n") == 1
    assert get(f"{stream}?token={A}")[0] == 401      # the stream takes headers only
    status, headers, _ = get(f"{base}/", A, method="POST")
    assert status == 405 and headers["Allow"] == "GET"
    assert get(f"{base}/{'x' * 5000}", A)[0] == 414


def test_the_page_for_a_tenant(base: str) -> None:
    status, headers, body = get(f"{base}/?token={A}")
    page = body.decode()
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert "org-b" not in page and h(3) not in page and h(4) not in page
    assert "&lt;script&gt;" in page and "<script>" not in page
    links = re.findall(r'href="(/explain/\w+\?token=[\w-]+)"', page)
    assert len(links) == len(WANT[A])
    status, headers, story = get(base + links[0].replace("&amp;", "&"))
    assert status == 200 and b"rapidloop explain" in story
    assert get(f"{base}/explain/{h(3)}?token={A}")[0] == 404   # B's file: not in A's view
    assert get(f"{base}/?token={A}&org=org-b")[0] == 403


def _not_blank(png: Path) -> tuple[int, int]:
    """(distinct colours, dark pixels) of a screenshot: a blank page has 1 and 0."""
    from PIL import Image

    with Image.open(png) as im:
        colours = im.convert("RGB").getcolors(maxcolors=1 << 24) or []
    return len(colours), sum(n for n, px in colours if sum(px) < 3 * 128)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (`make browser`)")
def test_the_page_renders_in_headless_chromium(base: str, tmp_path: Path) -> None:
    shot = tmp_path / "page.png"
    with tempfile.TemporaryDirectory(prefix="rapidloop-chromium-") as profile:
        proc = subprocess.Popen(
            [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={profile}", f"--screenshot={shot}",
             "--window-size=1400,700", f"{base}/?token={A}"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            output, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            output = b"(timed out)"
        finally:   # chromium's helper processes: end the group it started
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert shot.is_file(), output.decode(errors="replace")[-2000:]
    colours, dark = _not_blank(shot)
    assert colours > 2 and dark > 1000, (colours, dark)


# ---------------------------------------------------------------- --from-kafka

@pytest.mark.integration
def test_serve_follows_the_compacted_feed(broker: str, kafka_topics: TopicMaker,
                                          tmp_path: Path) -> None:
    (act,) = kafka_topics("active")
    cfg = config_file(tmp_path, {"active_topic": act})
    _, tokens = write_world(tmp_path)
    now = time.time()

    def record(d: dict[str, Any] | None, key_of: dict[str, Any]) -> tuple[bytes, Any]:
        return target_key(read_decision(key_of)).encode(), None if d is None else orjson.dumps(d)

    ago = format_ts(now - 60)
    glob = dec(h(1), "global", "block", ago)
    own = dec(h(2), "org", "block", ago, org="org-a")
    other = dec(h(3), "org", "block", ago, org="org-b")
    soon = dec(h(5), "org", "block", ago, org="org-a", expires=format_ts(now + 8))
    produce(broker, act, [record(d, d) for d in (glob, own, other, soon)])
    with serving(tmp_path, "--from-kafka", "--brokers", broker, "--config", cfg,
                 "--tokens", str(tokens), "--quiet") as url:
        stream = f"{url}/v1/decisions/stream"
        first = json.loads(get(f"{stream}?startup=true", A)[2])
        assert seen(first) == {("1", "global"), ("2", "org"), ("5", "org")}
        assert seen(json.loads(get(f"{stream}?startup=true", OP)[2])) == {
            ("1", "global"), ("2", "org"), ("3", "org"), ("5", "org")}
        # org-a's block lifted (a tombstone), a new global block: the next call says so
        fresh = dec(h(7), "global", "block", format_ts(time.time()))
        produce(broker, act, [record(None, own), record(fresh, fresh)])
        new: set[tuple[str, str]] = set()
        deleted: set[tuple[str, str]] = set()
        deadline = time.monotonic() + 30
        while ("5", "org") not in deleted:   # ...and the block that lapses by the wall clock
            assert time.monotonic() < deadline, (new, deleted)
            delta = json.loads(get(stream, A)[2])
            new |= seen(delta)
            deleted |= seen(delta, "deleted")
            time.sleep(0.2)
        assert new == {("7", "global")} and deleted == {("2", "org"), ("5", "org")}
