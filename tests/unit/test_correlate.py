"""File state and correlation, without Bytewax or Kafka."""


from rapidloop.base.config import load_config
from rapidloop.operators.classifiers import dense
from rapidloop.operators.correlate import KIND, Correlator, Sighting, Verdict
from rapidloop.operators.features import FEATURE_NAMES
from rapidloop.operators.settings import Settings
from rapidloop.operators.snapshot import decode, encode, envelope, loads_plain

from .helpers import T0, feedback, report, sha

CFG = load_config(env={})
H = sha(0x42)


def run(c, events):
    return c.process(list(enumerate(events)), 0.0)


def test_prevalence_windows_and_features():
    c = Correlator.from_config(CFG)
    events = [report(H, org=f"org-{i % 3}", device=f"d{i}", ts=T0 + 60 * i,
                     behaviors=("persistence",), verdict=0.4 + 0.1 * (i % 2)) for i in range(6)]
    out, copies = run(c, events)
    assert copies == [] and len(out) == 6
    last = out[-1][1]
    assert isinstance(last, Sighting)
    assert last.orgs_in_windows == [3, 3, 3] and last.orgs_ever == 3
    f = last.features
    assert f["verdict_max"] == 0.5 and f["beh_persistence"] == 1.0
    assert f["type_pe"] == 1.0 and f["path_downloads"] == 1.0
    st = c.files[H]
    assert st.n_reports == 6 and st.first_seen == T0 and st.last_seen == T0 + 300
    # dense and in the learners' order, so scoring need not copy it (classifiers.dense)
    assert list(f) == list(FEATURE_NAMES) and dense(f) is f


def test_ten_minute_window_slides():
    c = Correlator.from_config(CFG)
    run(c, [report(H, org="a", ts=T0), report(H, org="b", ts=T0 + 60)])
    out, _ = run(c, [report(H, org="c", ts=T0 + 3600)])
    s = out[0][1]
    assert s.orgs_in_windows[0] == 1      # 10 min: only c
    assert s.orgs_in_windows[1] == 3      # 1 h, inclusive: a (exactly 1 h ago), b and c
    assert s.orgs_in_windows[2] == 3


def test_duplicates_are_counted_not_reobserved():
    c = Correlator.from_config(CFG)
    r = report(H, report_id="same")
    out, _ = run(c, [r, r, r])
    assert len(out) == 1 and c.duplicates == 2 and c.files[H].n_reports == 1


def test_verdicts_carry_features_and_trusted_ones_are_copied():
    c = Correlator.from_config(CFG)
    out, copies = run(c, [report(H, verdict=0.9), feedback(H, "malicious", "sandbox"),
                          feedback(H, "benign", "org_report", org="org-1"),
                          feedback(sha(7), "malicious", "sandbox")])
    verdicts = [v for _, v in out if isinstance(v, Verdict)]
    assert [v.features is not None for v in verdicts] == [True, True, False]
    assert [(i, v.owner) for i, v in copies] == [(1, False)]   # only the trusted, joined one


def test_cold_files_evicted_after_idle_ttl():
    c = Correlator.from_config(CFG)
    run(c, [report(H, ts=T0)])
    ttl = CFG.state.idle_ttl_s
    run(c, [report(sha(9), ts=T0 + ttl + CFG.state.sweep_interval_s + 1)])
    assert H not in c.files and sha(9) in c.files and c.evicted == 1


def _restored(c: Correlator) -> Correlator:
    (state,) = decode(encode([envelope(KIND, c.snapshot())]), KIND)
    return Correlator.from_snapshot(Settings.from_config(CFG), state)


def test_state_snapshots():
    c = Correlator.from_config(CFG)
    run(c, [report(H, org=f"o{i}", ts=T0 + i) for i in range(20)])
    c2 = _restored(c)
    assert c2.files[H].orgs.counts(T0 + 20) == c.files[H].orgs.counts(T0 + 20)


def test_a_restored_snapshot_carries_on_exactly():
    """Snapshots drop derived parts (sorted times, the id table, the ring's set):
    a correlator restored mid-stream must go on to produce exactly the same outputs."""
    events = [report(sha(i % 5), org=f"org-{i % 4}", device=f"d{i % 7}", ts=T0 + 37 * i,
                     behaviors=("persistence",) if i % 3 else (), verdict=(i % 10) / 10)
              for i in range(60)]
    events.insert(30, feedback(sha(1), "malicious", "sandbox", ts=T0 + 37 * 30))
    straight, resumed = Correlator.from_config(CFG), Correlator.from_config(CFG)
    first, _ = run(straight, events)
    head, _ = resumed.process(list(enumerate(events))[:25], 0.0)
    resumed = _restored(resumed)
    tail, _ = resumed.process(list(enumerate(events))[25:], 0.0)
    assert [(i, o.features) for i, o in first] == [(i, o.features) for i, o in head + tail]
    assert resumed.duplicates == straight.duplicates == 0


def _saved_files(c: Correlator) -> dict:
    """The files a snapshot of ``c`` holds, as (hash → row), read back as a restore does."""
    (state,) = decode(encode([envelope(KIND, c.snapshot())]), KIND)
    return {sha: row for sha, row in (loads_plain(blob) for blob in state["files"])}


def test_snapshots_pickle_again_only_the_files_events_touched():
    """A snapshot keeps each file's pickle until an event touches the file: at every
    snapshot the saved rows must equal the rows made afresh, through reports, trusted
    and untrusted verdicts, verdicts on unknown files, duplicates and evictions."""
    c = Correlator.from_config(CFG)
    ttl = CFG.state.idle_ttl_s
    step = 0
    for epoch in range(12):
        events = []
        for _ in range(40):
            step += 1
            ts = T0 + 600 * step + (ttl + CFG.state.sweep_interval_s + 1) * (epoch >= 8)
            events.append(report(sha(step % 23 + 30 * (epoch >= 8)), org=f"org-{step % 5}",
                                 device=f"d{step % 11}", ts=ts, report_id=f"r{step % 400}",
                                 behaviors=("persistence",) if step % 3 else (),
                                 verdict=(step % 10) / 10))
            if step % 17 == 0:
                events.append(feedback(sha(step % 23), "malicious" if step % 2 else "benign",
                                       "sandbox" if step % 4 else "org_report",
                                       org="org-1", ts=ts))
            if step % 29 == 0:
                events.append(feedback(sha(900 + step), "malicious", "sandbox", ts=ts))
        kept = dict(c._saved or {})
        run(c, events)
        touched = set(c._touched)
        saved = _saved_files(c)
        assert saved == {sha_: st.row() for sha_, st in c.files.items()}
        for sha_, blob in kept.items():   # untouched files: the very same bytes, not pickled again
            if sha_ not in touched:
                assert c._saved[sha_] is blob
    assert c.evicted > 0 and c.duplicates > 0


def test_a_snapshot_of_the_first_layout_is_migrated():
    """Version 1 held the hashes and the row tuples in two lists."""
    c = Correlator.from_config(CFG)
    run(c, [report(sha(i % 4), org=f"o{i % 3}", ts=T0 + i) for i in range(12)])
    state = {**c.snapshot()}
    state["files"] = (list(c.files), [st.row() for st in c.files.values()])
    old = encode([{**envelope(KIND, state), "version": 1}])
    (migrated,) = decode(old, KIND)
    c2 = Correlator.from_snapshot(Settings.from_config(CFG), migrated)
    assert {s: st.row() for s, st in c2.files.items()} == {
        s: st.row() for s, st in c.files.items()}
