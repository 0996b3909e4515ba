"""The per-report shortcuts give what the plain code gave: the accusation memo (and the
strongest verdict the correlator hands it), the fast path's hex check, the RFC 3339 shape
check, naive Bayes's log tables kept between labels."""

from __future__ import annotations

import math
import random

from rapidloop.base.config import load_config
from rapidloop.operators.accusation import Accusation
from rapidloop.operators.classifiers import NB_CUTS, CutBernoulliNB
from rapidloop.operators.features import FEATURE_NAMES, PATH_KEY, behavior_key
from rapidloop.operators.filestate import FileState
from rapidloop.schemas.model import BEHAVIORS, FILE_PATHS, FileInfo, Report
from rapidloop.schemas.timefmt import _parse_general, parse_ts
from rapidloop.schemas.wire import _HEX, _hex64_fast


def _plain_accuses(acc: Accusation, r: Report, parent_flagged: float = 0.0) -> bool:
    """``Accusation.accuses`` as it was before the memo."""
    if any(b in acc.strong for b in r.behaviors):
        return True
    if not r.behaviors and not r.verdicts:
        return False
    f = r.file
    own = {behavior_key(b): 1.0 for b in r.behaviors}
    own["verdict_max"] = max(r.verdicts.values(), default=0.0)
    own["signed"] = 1.0 if f.signed else 0.0
    own[PATH_KEY.get(f.path) or f"path_{f.path}"] = 1.0
    own["parent_flagged"] = parent_flagged
    return acc.prior.score(own) >= acc.threshold


def _random_report(rnd: random.Random) -> Report:
    behaviors = tuple(rnd.sample(BEHAVIORS, rnd.choice((0, 0, 1, 2))))
    verdicts = {name: round(rnd.random(), rnd.choice((1, 3))) for name in
                rnd.sample(("static_ml", "av_signature", "reputation"), rnd.randrange(3))}
    f = FileInfo("x.exe", 1, "pe", rnd.random() < 0.5, None, rnd.choice(FILE_PATHS))
    return Report("r", 0.0, "org", "dev", "a" * 64, "edr", f, behaviors, verdicts)


def test_accusation_memo_answers_as_the_prior_does():
    acc = Accusation.from_config(load_config(env={}))
    rnd = random.Random(5)
    reports = [_random_report(rnd) for _ in range(3000)]
    for r in reports + reports:   # the second pass is answered from the memo
        for flagged in (0.0, 1.0):
            assert acc.accuses(r, flagged) == _plain_accuses(acc, r, flagged)
    assert any(acc.accuses(r) for r in reports) and not all(acc.accuses(r) for r in reports)


def _plain_hex64(value: str) -> str | None:
    low = value.lower()
    return None if low.strip(_HEX) else low


def test_hex64_fast_is_the_lower_strip_rule():
    rnd = random.Random(2)
    probes = ["a" * 64, "A" * 64, "0123456789abcdef" * 4, "0123456789ABCDEF" * 4,
              "g" * 64, "İ" + "a" * 63, "K" + "a" * 63, "\u212a" + "a" * 63, " " + "a" * 63]
    probes += ["".join(rnd.choice("0123456789abcdefABCDEFxyz-") for _ in range(64))
               for _ in range(500)]
    for p in probes:
        assert _hex64_fast(p) == _plain_hex64(p), p


def test_parse_ts_shape_check_agrees_with_the_general_parser():
    good = ["2026-11-28T00:00:06.270Z", "2026-11-28T23:59:59Z", "2024-02-29T12:00:00.000Z"]
    for s in good:
        assert parse_ts(s) == _parse_general(s)
    bad = ["2026-11-28 00:00:06.270Z", "2026/11/28T00:00:06.270Z", "2026-11-28T00-00:06.270Z",
           "2026-11-28T00:00-06.270Z", "2026-W48-6T00:00:06.27Z", "2026-13-28T00:00:06.270Z"]
    for s in bad:
        try:
            _parse_general(s)
        except ValueError:
            pass
        else:
            raise AssertionError(f"the general parser accepts {s!r}")
        try:
            parse_ts(s)
        except ValueError:
            continue
        raise AssertionError(f"parse_ts accepts {s!r}")


def test_accusation_with_the_callers_top_verdict_answers_alike():
    acc = Accusation.from_config(load_config(env={}))
    rnd = random.Random(11)
    for r in [_random_report(rnd) for _ in range(2000)]:
        top = max(r.verdicts.values(), default=0.0)
        assert acc.accuses(r, 0.0, top) == _plain_accuses(acc, r)


def test_file_state_observe_returns_the_reports_strongest_verdict():
    rnd = random.Random(12)
    state = FileState((600.0, 3600.0, 86400.0), 64, 64)
    for _ in range(200):
        r = _random_report(rnd)
        assert state.observe(r, 4, 8) == max(r.verdicts.values(), default=0.0)


def _full_tables(nb: CutBernoulliNB) -> dict[object, tuple[float, dict[str, float]]]:
    """``CutBernoulliNB._build_tables`` as it was before it kept the unchanged classes' part:
    River's expressions, every class and feature recomputed."""
    counts = nb.class_counts
    n = sum(counts.values())
    tables = {}
    for c in counts:
        base = math.log(counts[c] / n)
        den = counts[c] + nb.alpha * 2
        delta = {}
        for f, seen in nb.feature_counts.items():
            p = (seen.get(c, 0.0) + nb.alpha) / den
            off = math.log(1e-9 + 1.0 - p)
            base += off
            delta[f] = math.log(1e-9 + p) - off
        tables[c] = (base, delta)
    return tables


def test_naive_bayes_tables_kept_between_labels_are_the_full_rebuild():
    rnd = random.Random(13)
    nb = CutBernoulliNB(cuts=NB_CUTS)
    for i in range(300):
        x = {f: rnd.choice((0.0, 0.3, 0.7, 1.0, rnd.random())) for f in FEATURE_NAMES}
        nb.learn_one(x, rnd.random() < 0.3)
        if i % 3:   # also several labels between two scorings
            continue
        got, want = nb._build_tables(), _full_tables(nb)
        assert list(got) == list(want)
        for c, (base, delta) in want.items():
            assert got[c][0] == base and list(got[c][1].items()) == list(delta.items())
    state = nb.snapshot()
    fresh = CutBernoulliNB(cuts=NB_CUTS)
    fresh._build_tables()
    fresh.restore(state)   # a restore starts the kept parts over
    assert fresh._build_tables() == _full_tables(nb)
