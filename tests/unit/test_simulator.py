"""The fleet simulator: deterministic, ordered, contract-shaped, and realistic enough.

The engine's own tests trust this data, so the properties they rely on are
pinned here: same seed same bytes, event-time order, every valid line a
contract Report/Feedback and every malformed line really malformed, campaigns
that cross tenants, verdicts that never precede the sighting, and rogue
tenants whose lies are valid messages about the files they target. Worlds
drawn per seed must stay within their ranges, hit their drawn shares, and
leave the fixed world (``--fixed``) byte-identical.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import gzip
import hashlib
import itertools
import re
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from rapidloop.base.config import load_config
from rapidloop.cli import main
from rapidloop.tools.sim.params import ROGUE_TARGET_RANKS
from rapidloop.tools.simulator import (
    FEEDBACK,
    REPORT,
    SimParams,
    SimulationError,
    Simulator,
    format_ts,
    parse_ts,
    write_files,
)
from rapidloop.tools.worldparams import VaryRanges, draw_world

SMALL = dict(reports=20000, orgs=12, devices_min=5, devices_max=400, benign_files=500,
             campaigns=5, hashes_per_campaign=3, duration_s=6 * 3600.0)

BEHAVIORS = {"process_injection", "credential_dumping", "ransomware_encryption", "persistence",
             "defense_evasion", "lateral_movement", "c2_beacon", "obfuscated_script",
             "office_child_process", "privilege_escalation", "exfiltration", "discovery"}
FILE_TYPES = {"pe", "script", "document", "archive", "elf", "other"}
FILE_PATHS = {"downloads", "temp", "system", "program_files", "user", "other"}
TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
SHA_RE = re.compile(r"^[0-9a-fA-F]{64}$")


def _ts(value: Any) -> float:
    assert isinstance(value, str) and TS_RE.match(value), value
    return dt.datetime.fromisoformat(value).timestamp()


def check_report(raw: bytes) -> dict[str, Any]:
    """The contract's Report, strictly; raises on anything a consumer should reject."""
    r = orjson.loads(raw)
    assert isinstance(r, dict)
    for key in ("report_id", "org_id", "device_id"):
        assert isinstance(r[key], str) and r[key]
    _ts(r["ts"])
    assert isinstance(r["sha256"], str) and SHA_RE.match(r["sha256"])
    f = r["file"]
    assert isinstance(f, dict)
    assert isinstance(f["name"], str)
    assert isinstance(f["size"], int) and f["size"] >= 0
    assert f["type"] in FILE_TYPES and f["path"] in FILE_PATHS
    assert isinstance(f["signed"], bool) and (f["signer"] is None or isinstance(f["signer"], str))
    assert isinstance(r["behaviors"], list) and set(r["behaviors"]) <= BEHAVIORS
    assert isinstance(r["verdicts"], dict)
    for v in r["verdicts"].values():
        assert isinstance(v, (int, float)) and 0.0 <= v <= 1.0
    assert r["source"] in {"antivirus", "behavior", "edr", "asr", "network"}
    assert r["parent_sha256"] is None or SHA_RE.match(r["parent_sha256"])
    return r


def check_feedback(raw: bytes) -> dict[str, Any]:
    fb = orjson.loads(raw)
    assert isinstance(fb, dict)
    assert isinstance(fb["feedback_id"], str) and fb["feedback_id"]
    _ts(fb["ts"])
    assert isinstance(fb["sha256"], str) and SHA_RE.match(fb["sha256"])
    assert fb["verdict"] in {"malicious", "benign"}
    assert fb["source"] in {"sandbox", "analyst", "org_report"}
    if fb["source"] == "org_report":
        assert isinstance(fb["org_id"], str)
    else:
        assert fb["org_id"] is None
    return fb


def _valid(check: Any, raw: bytes) -> bool:
    try:
        check(raw)
    except Exception:
        return False
    return True


@pytest.fixture(scope="module")
def run() -> tuple[Simulator, list[Any]]:
    sim = Simulator(SimParams.defaults(seed=3, **SMALL))
    return sim, list(sim.events())


@pytest.fixture(scope="module")
def parsed(run: tuple[Simulator, list[Any]]) -> dict[str, Any]:
    _, events = run
    reports, feedback = [], []
    for ev in events:
        if ev.malformed or ev.duplicate:
            continue
        (reports if ev.kind == REPORT else feedback).append(orjson.loads(ev.value))
    first: dict[str, float] = {}
    for r in reports:
        first.setdefault(r["sha256"].lower(), _ts(r["ts"]))
    return {"reports": reports, "feedback": feedback, "first": first}


def test_same_seed_same_bytes_and_other_seed_differs() -> None:
    def stream(seed: int) -> list[bytes]:
        return [ev.value for ev in Simulator(SimParams.defaults(seed=seed, **SMALL)).events()]
    a, b, c = stream(5), stream(5), stream(6)
    assert a == b
    assert a != c


def test_files_are_byte_identical_across_runs(tmp_path: Path) -> None:
    for name in ("x", "y"):
        params = SimParams.defaults(seed=9, **{**SMALL, "reports": 5000})
        write_files(Simulator(params), tmp_path / name)
    for fname in ("reports.jsonl.gz", "feedback.jsonl.gz", "truth.jsonl", "world.json"):
        assert (tmp_path / "x" / fname).read_bytes() == (tmp_path / "y" / fname).read_bytes()


def test_exact_report_count_and_noise_shares(run: tuple[Simulator, list[Any]]) -> None:
    sim, events = run
    reports = [ev for ev in events if ev.kind == REPORT]
    assert len(reports) == SMALL["reports"] == sim.stats.reports
    assert sum(ev.malformed for ev in reports) == round(SMALL["reports"] * 0.001)
    assert sum(ev.duplicate for ev in reports) == round(SMALL["reports"] * 0.002)
    assert sim.stats.campaign_reports > 0


def test_event_time_order(run: tuple[Simulator, list[Any]]) -> None:
    sim, events = run
    ts = [ev.t for ev in events if not ev.duplicate]
    assert all(a <= b for a, b in itertools.pairwise(ts))
    # written timestamps may be skewed by the sensor clock jitter, no more
    newest = float("-inf")
    for ev in events:
        if ev.malformed or ev.duplicate:
            continue
        t = _ts(orjson.loads(ev.value)["ts"])
        assert t >= newest - 2 * sim.p.jitter_s - 0.002
        newest = max(newest, t)
    start = sim.p.start
    assert start <= ts[0] and events[-1].t >= start


def test_valid_lines_follow_the_contract(run: tuple[Simulator, list[Any]]) -> None:
    _, events = run
    for ev in events:
        if ev.malformed:
            continue
        check = check_report if ev.kind == REPORT else check_feedback
        obj = check(ev.value)
        assert b"\n" not in ev.value
        assert ev.key == obj["sha256"].lower().encode()


def test_malformed_lines_are_really_malformed(run: tuple[Simulator, list[Any]]) -> None:
    _, events = run
    bad = [ev for ev in events if ev.malformed]
    assert bad
    for ev in bad:
        assert b"\n" not in ev.value and b"\r" not in ev.value
        check = check_report if ev.kind == REPORT else check_feedback
        assert not _valid(check, ev.value), ev.value
        assert ev.key is None or SHA_RE.match(ev.key.decode())
    # a larger run shows every kind of damage
    big = Simulator(SimParams.defaults(seed=4, **{**SMALL, "reports": 60000,
                                                  "malformed_share": 0.01}))
    for _ in big.events():
        pass
    kinds = {k for k in big.stats.malformed_by_reason if not k.startswith("feedback_")}
    assert {"invalid_json", "missing_field", "bad_sha256", "wrong_type", "invalid_utf8"} <= kinds


def test_duplicates_are_redeliveries(run: tuple[Simulator, list[Any]]) -> None:
    _, events = run
    seen: set[bytes] = set()
    for ev in events:
        if ev.kind != REPORT or ev.malformed:
            continue
        if ev.duplicate:
            assert ev.value in seen
        else:
            assert ev.value not in seen
            seen.add(ev.value)
    ids = [orjson.loads(ev.value)["report_id"] for ev in events
           if ev.kind == REPORT and not ev.malformed and not ev.duplicate]
    assert len(ids) == len(set(ids))


def test_campaigns_spread_to_at_least_three_orgs(run: tuple[Simulator, list[Any]],
                                                 parsed: dict[str, Any]) -> None:
    sim, _ = run
    label = {t["sha256"]: t for t in sim.truth()}
    orgs: dict[str, set[str]] = defaultdict(set)
    for r in parsed["reports"]:
        t = label[r["sha256"].lower()]
        if t["label"] == "malicious":
            orgs[t["campaign"]].add(r["org_id"])
    assert len(orgs) == SMALL["campaigns"]
    assert all(len(o) >= 3 for o in orgs.values()), orgs


def test_droppers_link_their_payloads(run: tuple[Simulator, list[Any]],
                                      parsed: dict[str, Any]) -> None:
    sim, _ = run
    truth = {t["sha256"]: t for t in sim.truth()}
    payloads = [r for r in parsed["reports"] if r["parent_sha256"]]
    if not any(c["family"] in ("loader", "dropper") for c in sim.campaigns):
        pytest.skip("no dropper family in this seed")
    assert payloads
    seen_on: dict[tuple[str, str], float] = {}
    for r in parsed["reports"]:
        seen_on.setdefault((r["sha256"].lower(), r["device_id"]), _ts(r["ts"]))
    for r in payloads:
        parent = truth[r["parent_sha256"]]
        assert parent["label"] == "malicious" and parent["role"] == "dropper"
        assert (r["parent_sha256"], r["device_id"]) in seen_on


def test_verdicts_follow_first_sighting(run: tuple[Simulator, list[Any]],
                                        parsed: dict[str, Any]) -> None:
    sim, _ = run
    first = parsed["first"]
    truth = {t["sha256"]: t for t in sim.truth()}
    lo, _hi = sim.p.sandbox_delay_s
    by_source: dict[str, int] = defaultdict(int)
    wrong = 0
    rogues = set(sim.world()["rogues"]["orgs"])
    for fb in parsed["feedback"]:
        by_source[fb["source"]] += 1
        assert _ts(fb["ts"]) >= first[fb["sha256"]] - sim.p.jitter_s
        if fb["org_id"] in rogues:
            continue   # lies, checked in test_rogue_tenants_lie_validly
        if fb["source"] == "sandbox":
            assert _ts(fb["ts"]) >= first[fb["sha256"]] + lo - sim.p.jitter_s - 0.002
            wrong += fb["verdict"] != truth[fb["sha256"]]["label"]
        elif fb["source"] == "org_report":
            assert truth[fb["sha256"]]["kind"] == "hard_negative" and fb["verdict"] == "benign"
        else:
            assert fb["verdict"] == truth[fb["sha256"]]["label"]
    assert by_source["sandbox"] > 50
    verdicts = {fb["verdict"] for fb in parsed["feedback"] if fb["source"] == "sandbox"}
    assert verdicts == {"malicious", "benign"}
    assert wrong <= max(3, 0.05 * by_source["sandbox"])


def test_world_shape(run: tuple[Simulator, list[Any]], parsed: dict[str, Any]) -> None:
    sim, _ = run
    sizes = sim.org_sizes
    assert max(sizes) >= 10 * min(sizes)  # very different fleet sizes
    devices = {r["device_id"] for r in parsed["reports"]}
    assert all(re.match(r"^org-\d{3}-dev-\d{5}$", d) for d in devices)
    truth = list(sim.truth())
    hard = [t for t in truth if t["kind"] == "hard_negative"]
    assert hard and max(t["orgs"] for t in hard) >= 6   # some tools are everywhere
    apps = sorted((t["reports"] for t in truth if t["label"] == "benign"), reverse=True)
    assert apps[0] > 20 * apps[len(apps) // 2]          # heavy-tailed popularity
    inhouse = [t for t in truth if t["kind"] == "inhouse"]
    assert all(t["orgs"] == 1 for t in inhouse)


def test_forever_keeps_bringing_new_campaigns() -> None:
    params = SimParams.defaults(seed=2, epochs=None,
                                **{**SMALL, "reports": 2000, "duration_s": 3600.0})
    sim = Simulator(params)
    events = list(itertools.islice(sim.events(), 7000))
    assert events[-1].t > params.start + 2 * params.duration_s
    assert len(sim.campaigns) >= 3 * SMALL["campaigns"]
    assert len({c["campaign"] for c in sim.campaigns}) == len(sim.campaigns)


def test_live_start_changes_traffic_not_world() -> None:
    a = Simulator(SimParams.defaults(seed=1, **SMALL))
    b = Simulator(SimParams.defaults(seed=1, start=parse_ts("2030-01-01T00:00:00Z"), **SMALL))
    assert [f.sha for f in a.benign] == [f.sha for f in b.benign]
    next(a.events())
    next(b.events())
    assert a.campaigns[0]["waves"][0]["sha256"] != b.campaigns[0]["waves"][0]["sha256"]


def test_time_helpers() -> None:
    t = parse_ts("2026-11-29T01:02:03.456Z")
    assert format_ts(t) == "2026-11-29T01:02:03.456Z"
    assert format_ts(parse_ts("2026-11-29T01:02:03.9996Z")) == "2026-11-29T01:02:04.000Z"
    assert parse_ts("2026-11-29T02:02:03.456+01:00") == t
    assert parse_ts("2026-11-29T01:02:03.456") == t
    with pytest.raises(SimulationError):
        parse_ts("tomorrow")


def test_bad_params_are_rejected() -> None:
    for bad in ({"reports": 0}, {"orgs": 0}, {"devices_min": 50, "devices_max": 10},
                {"sandbox_share": 1.5}, {"sandbox_delay_s": (10.0, 5.0)}):
        with pytest.raises(SimulationError):
            SimParams.defaults(**bad)


def test_simulate_settings_have_their_defaults_in_defaults_toml_only() -> None:
    settings = load_config(env={}).simulate.as_dict()
    fields = {f.name: f for f in dataclasses.fields(SimParams)}
    shared = sorted(set(settings) & set(fields))
    assert len(shared) > 20   # [simulate] shapes most of the world
    repeated = [name for name in shared if fields[name].default is not dataclasses.MISSING
                or fields[name].default_factory is not dataclasses.MISSING]
    assert repeated == [], f"defaults repeated in code: {repeated}"
    p = SimParams.defaults()
    assert p.orgs == settings["orgs"] and p.start == parse_ts(settings["start"])
    assert p.sandbox_delay_s == tuple(float(v) for v in settings["sandbox_delay_s"])
    without_orgs = SimpleNamespace(**{k: v for k, v in settings.items() if k != "orgs"})
    with pytest.raises(SimulationError, match=r"simulate\.orgs is not set"):
        SimParams.from_config(without_orgs)
    assert SimParams.from_config(without_orgs, orgs=7).orgs == 7


def _read_lines(path: Path) -> list[bytes]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        return fh.read().split(b"\n")


def test_cli_out_writes_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "day"
    rc = main(["simulate", "--out", str(out), "--reports", "3000", "--orgs", "8",
               "--campaigns", "3", "--duration", "2h", "--seed", "11"])
    assert rc == 0
    summary = capsys.readouterr().out.strip()
    assert "\n" not in summary and "3000 reports" in summary and "reports/s" in summary
    lines = _read_lines(out / "reports.jsonl.gz")
    assert lines[-1] == b"" and len(lines) - 1 == 3000
    valid = [orjson.loads(x) for x in lines[:-1] if _valid(check_report, x)]
    assert len(valid) >= 2980
    first, last = min(_ts(r["ts"]) for r in valid), max(_ts(r["ts"]) for r in valid)
    assert first >= parse_ts("2026-11-28T00:00:00Z") - 10
    assert last <= parse_ts("2026-11-28T02:00:00Z") + 10
    fb = [x for x in _read_lines(out / "feedback.jsonl.gz")[:-1]]
    assert fb and sum(_valid(check_feedback, x) for x in fb) >= len(fb) - 3
    truth = [orjson.loads(x) for x in (out / "truth.jsonl").read_bytes().splitlines()]
    labels = {t["sha256"]: t["label"] for t in truth}
    assert {"malicious", "benign"} == set(labels.values())
    assert all(r["sha256"].lower() in labels for r in valid)
    world = orjson.loads((out / "world.json").read_bytes())
    assert len(world["orgs"]) == 8 and len(world["campaigns"]) == 3


def test_cli_plain_files_and_start(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "plain"
    assert main(["simulate", "--out", str(out), "--no-gzip", "--reports", "500", "--orgs", "4",
                 "--campaigns", "1", "--duration", "90m",
                 "--start", "2027-01-01T00:00:00Z"]) == 0
    lines = (out / "reports.jsonl").read_bytes().splitlines()
    assert len(lines) == 500
    good = [orjson.loads(x) for x in lines if _valid(check_report, x)]
    assert min(r["ts"] for r in good) >= "2026-12-31T23:59:50"
    assert (out / "feedback.jsonl").exists()


@pytest.mark.parametrize("argv, needle", [
    (["--duration", "soon"], "--duration"),
    (["--duration", "0s"], "--duration"),
    (["--reports", "0"], "--reports"),
    (["--start", "yesterday"], "--start"),
    (["--forever"], "--kafka"),
    (["--rate", "10"], "--kafka"),
])
def test_cli_bad_arguments_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    argv: list[str], needle: str) -> None:
    rc = main(["simulate", "--out", str(tmp_path / "o"), *argv])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and "\n" not in err and needle in err


def test_cli_needs_an_output(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["simulate"])
    assert exc.value.code == 2


def test_kafka_unreachable_is_one_line(capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # nothing listens on port 1; the check fails cleanly before any producer is made
    monkeypatch.setenv("RAPIDLOOP_KAFKA__CONNECT_TIMEOUT_S", "1.0")
    rc = main(["simulate", "--kafka", "--brokers", "127.0.0.1:1", "--reports", "10"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0
    assert err and err[-1].startswith("rapidloop simulate:") and "127.0.0.1:1" in err[-1]


def test_feedback_kind_constant() -> None:
    assert FEEDBACK == "feedback" and REPORT == "report"


# --- rogue tenants, sandbox bias, fleet sizes ----------------------------------------------

def test_rogue_tenants_lie_validly(run: tuple[Simulator, list[Any]],
                                   parsed: dict[str, Any]) -> None:
    """One flooder and one whitewasher, ordinary-looking, lying in valid contract messages."""
    sim, _ = run
    rogues = sim.world()["rogues"]
    assert len(rogues["flooders"]) == 1 and len(rogues["whitewashers"]) == 1
    assert rogues["orgs"] == rogues["flooders"] + rogues["whitewashers"]
    assert all(re.match(r"^org-\d{3}$", o) for o in rogues["orgs"])
    flooder, whitewasher = rogues["flooders"][0], rogues["whitewashers"][0]
    truth = {t["sha256"]: t for t in sim.truth()}
    targets, whitewashed = set(rogues["targets"]), set(rogues["whitewashed"])
    assert len(targets) == sim.p.rogue_targets and whitewashed
    # targets: popular benign software, mostly signed; whitewashed: real campaign malware
    assert all(truth[s]["label"] == "benign" and truth[s]["kind"] == "app" for s in targets)
    assert sum(truth[s]["signer"] is not None for s in targets) >= len(targets) // 2
    lo, hi = ROGUE_TARGET_RANKS   # popular: among the most reported software
    ranks = {f.sha: i for i, f in enumerate(sim.catalog.ranked)}
    assert all(lo <= ranks[s] < hi for s in targets)
    fleet = {o["org_id"]: o["devices"] for o in sim.world()["orgs"]}
    assert all(truth[s]["label"] == "malicious" and truth[s]["rogue"] == "whitewashed"
               for s in whitewashed)
    # The flood: every benign report claiming near-certain malice is the flooder's.
    scary = [r for r in parsed["reports"] if truth[r["sha256"].lower()]["label"] == "benign"
             and r["verdicts"].get("static_ml", 0.0) >= 0.9]
    assert len(scary) >= 200
    assert {r["org_id"] for r in scary} == {flooder}
    assert {r["sha256"].lower() for r in scary} == targets
    many = min(10, fleet[flooder])
    assert len({r["device_id"] for r in scary}) >= many        # many devices, one tenant
    assert all(set(r["behaviors"]) & {"ransomware_encryption", "credential_dumping",
                                      "process_injection"} for r in scary)
    # The whitewash: clean claims about real malware from the whitewasher's devices.
    clean = [r for r in parsed["reports"] if r["org_id"] == whitewasher
             and r["sha256"].lower() in whitewashed and not r["behaviors"]
             and r["verdicts"].get("static_ml", 1.0) < 0.09]
    assert len(clean) >= 50
    assert len({r["device_id"] for r in clean}) >= min(10, fleet[whitewasher])
    assert all(r["parent_sha256"] is None for r in clean)
    # Their feedback: org_report lies (the flooder's malicious about targets, the
    # whitewasher's benign about malware); being ordinary orgs they may also file the
    # honest reports any tenant files. Truth keeps the true labels.
    rogue_fb = [fb for fb in parsed["feedback"] if fb["org_id"] in rogues["orgs"]]
    assert rogue_fb and all(fb["source"] == "org_report" for fb in rogue_fb)
    lies = []
    for fb in rogue_fb:
        t = truth[fb["sha256"]]
        if fb["verdict"] == "malicious":
            assert fb["org_id"] == flooder and fb["sha256"] in targets
            lies.append(fb)
        elif t["label"] == "malicious":
            assert fb["org_id"] == whitewasher and fb["sha256"] in whitewashed
            lies.append(fb)
        else:
            assert t["kind"] == "hard_negative"   # an honest false-positive report
    assert {fb["org_id"] for fb in lies} == set(rogues["orgs"])
    assert sim.stats.rogue_reports == rogues["reports"] > 0
    # malformed and redelivered copies are extra lines, not extra feedback
    assert sim.stats.rogue_feedback == rogues["feedback"] == len(lies)


def test_rogues_are_deterministic_and_seeded() -> None:
    def rogues(seed: int) -> dict[str, Any]:
        sim = Simulator(SimParams.defaults(seed=seed, **{**SMALL, "reports": 8000}))
        for _ in sim.events():
            pass
        return sim.world()["rogues"]
    a, b, c = rogues(5), rogues(5), rogues(6)
    assert a == b
    assert (a["orgs"], a["targets"]) != (c["orgs"], c["targets"])


def test_no_rogues_when_switched_off() -> None:
    sim = Simulator(SimParams.defaults(seed=3, **{**SMALL, "reports": 5000, "rogue_flooders": 0,
                                         "rogue_whitewashers": 0}))
    for _ in sim.events():
        pass
    r = sim.world()["rogues"]
    assert r["orgs"] == r["targets"] == r["whitewashed"] == [] and r["reports"] == 0
    assert sim.stats.reports == 5000


def test_rogues_stay_a_minority_in_tiny_worlds() -> None:
    sim = Simulator(SimParams.defaults(seed=1, **{**SMALL, "orgs": 4, "reports": 3000}))
    for _ in sim.events():
        pass
    assert len(sim.world()["rogues"]["orgs"]) == 1
    assert sim.stats.reports == 3000


def test_sandbox_prefers_suspicious_files(run: tuple[Simulator, list[Any]],
                                          parsed: dict[str, Any]) -> None:
    first: dict[str, dict[str, Any]] = {}
    for r in parsed["reports"]:
        first.setdefault(r["sha256"].lower(), r)
    sandboxed = {fb["sha256"] for fb in parsed["feedback"] if fb["source"] == "sandbox"}

    def suspicious(r: dict[str, Any]) -> bool:
        return bool(r["behaviors"]) or r["verdicts"].get("static_ml", 0.0) >= 0.5
    sus = [s for s, r in first.items() if suspicious(r)]
    calm = [s for s, r in first.items() if not suspicious(r)]
    sus_rate = sum(s in sandboxed for s in sus) / len(sus)
    calm_rate = sum(s in sandboxed for s in calm) / len(calm)
    # shares 0.6 and 0.1, on ~50 suspicious hashes: wide bounds, a clear ratio
    assert 0.3 <= sus_rate <= 0.9 and 0.04 <= calm_rate <= 0.18, (sus_rate, calm_rate)
    assert sus_rate >= 3 * calm_rate


def test_hundreds_of_orgs_with_heavy_tailed_fleets() -> None:
    sim = Simulator(SimParams.defaults(seed=1))   # the defaults: building the world is cheap
    sizes = sorted(sim.org_sizes)
    assert len(sizes) == 300 == len(set(sim.org_ids))
    assert sizes[-1] == sim.p.devices_max and sizes[0] >= sim.p.devices_min
    median = sizes[len(sizes) // 2]
    assert median <= 50 and sizes[-1] >= 50 * median       # many small, a few huge
    assert sum(sizes[-len(sizes) // 10:]) >= sum(sizes) / 2  # top decile holds most devices


# --- worlds drawn per seed (simulate.vary) -------------------------------------------------

def _ranges() -> VaryRanges:
    return VaryRanges.from_config(load_config(env={}).simulate)


def _drawn(seed: int, **fixed: Any) -> SimParams:
    """The world `rapidloop simulate --seed N` draws; ``fixed`` as if given on the command line."""
    cfg = load_config(env={})
    return draw_world(SimParams.from_config(cfg.simulate, seed=seed, **fixed), _ranges(),
                      keep=set(fixed))


@pytest.fixture(scope="module")
def varied() -> tuple[Simulator, list[Any]]:
    # seed 3 draws a behaviour glitch, 50 campaigns, hard negatives in 27 % of reports
    sim = Simulator(_drawn(3, reports=40000))
    return sim, list(sim.events())


def test_seeds_draw_different_worlds_within_the_ranges() -> None:
    ranges = _ranges()
    worlds = [_drawn(seed) for seed in range(1, 31)]
    for p in worlds:
        assert p.varied
        for f in dataclasses.fields(ranges):
            if f.name in ("glitch_share", "glitch_s", "sandbox_delay_s"):
                continue
            lo, hi = getattr(ranges, f.name)
            assert lo <= getattr(p, f.name) <= hi, (f.name, getattr(p, f.name))
        lo, hi = ranges.sandbox_delay_s
        assert lo <= p.sandbox_delay_s[0] <= p.sandbox_delay_s[1] <= hi
        assert p.duration_s == 86400.0 and p.reports == 200000   # as configured
        if p.glitch_mode is not None:
            assert ranges.glitch_s[0] <= p.glitch_s <= ranges.glitch_s[1]
            assert 0 <= p.glitch_start_s <= p.duration_s - p.glitch_s
    # different seeds, different worlds, spread over the ranges
    assert len({(p.orgs, p.campaigns, p.label_noise) for p in worlds}) == len(worlds)
    assert max(p.campaigns for p in worlds) - min(p.campaigns for p in worlds) >= 150
    assert 5 <= sum(p.glitch_mode is not None for p in worlds) <= 25
    assert sum(p.rogue_flooders + p.rogue_whitewashers > 0 for p in worlds) >= 20
    # the same seed draws the same world; a command-line value wins, the rest stay
    assert _drawn(7) == _drawn(7)
    pinned = _drawn(7, orgs=8, campaigns=3)
    assert (pinned.orgs, pinned.campaigns) == (8, 3)
    assert pinned.label_noise == _drawn(7).label_noise


def test_varied_cli_same_seed_same_bytes(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    for name, seed in (("a", "5"), ("b", "5"), ("c", "6")):
        assert main(["simulate", "--out", str(tmp_path / name), "--seed", seed,
                     "--reports", "15000"]) == 0
    assert "varied world: orgs" in capsys.readouterr().out
    for fname in ("reports.jsonl.gz", "feedback.jsonl.gz", "truth.jsonl", "world.json"):
        assert (tmp_path / "a" / fname).read_bytes() == (tmp_path / "b" / fname).read_bytes()
    a, c = (orjson.loads((tmp_path / n / "world.json").read_bytes()) for n in "ac")
    assert a["params"] != c["params"]


def test_drawn_params_are_recorded_in_world_json(tmp_path: Path) -> None:
    assert main(["simulate", "--out", str(tmp_path), "--seed", "3", "--reports", "5000"]) == 0
    world = orjson.loads((tmp_path / "world.json").read_bytes())
    p = world["params"]
    want = _drawn(3, reports=5000)
    assert p["varied"] is True
    for name in ("orgs", "campaigns", "hashes_per_campaign", "hard_negative_reports",
                 "sandbox_coverage", "label_noise", "analyst_share", "silent_share",
                 "rogue_flooders", "rogue_whitewashers", "glitch_mode", "org_size_alpha"):
        assert p[name] == getattr(want, name), name
    assert p["sandbox_delay_s"] == list(want.sandbox_delay_s)
    assert "sandbox_share" not in p   # detonation goes by coverage in drawn worlds
    assert len(world["orgs"]) == want.orgs and len(world["campaigns"]) == want.campaigns
    assert world["glitch"]["mode"] == "behavior" == want.glitch_mode
    assert world["glitch"]["org_id"] in {o["org_id"] for o in world["orgs"]}


def test_varied_world_hits_its_drawn_shares(varied: tuple[Simulator, list[Any]]) -> None:
    sim, events = varied
    p = sim.p
    kind = {f.sha: f.kind for f in sim.files()}
    lines = [ev for ev in events if ev.kind == REPORT]
    assert len(lines) == p.reports
    hard = sum(1 for ev in lines if ev.key is not None
               and kind.get(ev.key.decode()) == "hard_negative")
    assert p.hard_negative_reports is not None and p.sandbox_coverage is not None
    assert abs(hard / len(lines) - p.hard_negative_reports) < 0.02
    # popular across orgs: some hard negatives are seen in tens of orgs
    truth = list(sim.truth())
    assert sum(t["orgs"] >= 20 for t in truth if t["kind"] == "hard_negative") >= 10
    sandboxed = {orjson.loads(ev.value)["sha256"] for ev in events if ev.kind == FEEDBACK
                 and not ev.malformed and b'"source":"sandbox"' in ev.value}
    assert abs(len(sandboxed) / len(truth) - p.sandbox_coverage) < 0.03
    assert len(sim.campaigns) == p.campaigns
    assert {len(c["waves"]) for c in sim.campaigns} == {p.hashes_per_campaign}


def test_varied_lines_follow_the_contract(varied: tuple[Simulator, list[Any]]) -> None:
    _, events = varied
    for ev in events:
        check = check_report if ev.kind == REPORT else check_feedback
        if ev.malformed:
            assert not _valid(check, ev.value), ev.value
        else:
            assert ev.key == check(ev.value)["sha256"].lower().encode()


def test_silent_sensors_and_the_glitch(varied: tuple[Simulator, list[Any]]) -> None:
    sim, events = varied
    p = sim.p
    glitch = sim.world()["glitch"]
    t0, t1 = parse_ts(glitch["start"]), parse_ts(glitch["end"])
    assert t1 - t0 == pytest.approx(p.glitch_s, abs=0.002)
    label = {f.sha: f.label for f in sim.files()}
    rogues = set(sim.world()["rogues"]["orgs"])
    in_glitch = 0
    no_scores = honest = 0
    for ev in events:
        if ev.kind != REPORT or ev.malformed or ev.duplicate:
            continue
        r = orjson.loads(ev.value)
        if r["org_id"] in rogues:
            continue
        honest += 1
        no_scores += r["verdicts"] == {}
        if r["org_id"] == glitch["org_id"] and t0 <= ev.t < t1:
            in_glitch += 1
            assert p.glitch_behavior in r["behaviors"]
    assert in_glitch == glitch["reports"] >= 20
    assert no_scores / honest >= p.silent_share   # silent devices, on top of scoreless sources
    # the glitch changed what sensors said, not what the files are
    assert sum(lab == "benign" for lab in label.values()) > sum(
        lab == "malicious" for lab in label.values())


def test_fixed_mode_is_byte_identical_to_before(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """`--fixed` (or simulate.vary = false) is the world of the fixed settings, unchanged.

    The digests are of `rapidloop simulate --seed 1 --reports 20000` written before worlds
    were drawn per seed; a deliberate change to the fixed world updates them.
    """
    digests = {
        "reports.jsonl": "67ddd9a83d6004bc32004acfc372e0992e4ed54306f13cbbc6102bcb3021f476",
        "feedback.jsonl": "94d0a0034192409073e4ad66c06a4ebfe7ea2567ebb672a1bd19a8c94123bb46",
        "truth.jsonl": "7ff25b647924f51cf756f49a1fe73595e9152a93c1b82f1a5b02bdd48648e047",
        "world.json": "a993c71dcad242b3f1353384fcc4cb322bad7b0554753cc8764f0059a04e6a2d",
    }
    args = ["--seed", "1", "--reports", "20000", "--no-gzip"]
    assert main(["simulate", "--out", str(tmp_path / "flag"), "--fixed", *args]) == 0
    monkeypatch.setenv("RAPIDLOOP_SIMULATE__VARY", "false")
    assert main(["simulate", "--out", str(tmp_path / "env"), *args]) == 0
    for run in ("flag", "env"):
        for fname, digest in digests.items():
            assert hashlib.sha256((tmp_path / run / fname).read_bytes()).hexdigest() == digest
    world = orjson.loads((tmp_path / "flag" / "world.json").read_bytes())
    assert "varied" not in world["params"] and "glitch" not in world
    assert not SimParams.defaults().varied   # code building SimParams itself gets the fixed world


def test_bad_vary_range_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAPIDLOOP_SIMULATE__VARY_ORGS", "[400, 100]")
    rc = main(["simulate", "--out", str(tmp_path / "o"), "--reports", "100"])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and "\n" not in err and "vary_orgs" in err
