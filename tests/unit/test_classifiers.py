"""The classifier ensemble: hand-over from the prior, online learning, determinism, cost.

The labelled stream is synthetic but shaped like the loop's: loud malware
(high sensor verdicts, bad behaviours, unsigned, bursting across orgs),
stealthy malware (low verdicts, beaconing and persistence), ordinary benign
software, and hard negatives (admin tools: credential dumping or lateral
movement, but signed, old and prevalent) that the hand-set prior gets wrong.
"""

from __future__ import annotations

import itertools
import math
import pickle
import random
import time

import pytest
from river import naive_bayes

from rapidloop.base.config import load_config
from rapidloop.operators.classifiers import (
    NB_CUTS,
    CutBernoulliNB,
    Ensemble,
    dense,
    evidence_bound,
)
from rapidloop.operators.features import FEATURE_NAMES
from rapidloop.operators.settings import ModelSettings
from rapidloop.operators.snapshot import loads_plain
from rapidloop.operators.stacking import LOGIT_CLIP, logit

Sample = tuple[dict[str, float], bool, str]

ADMIN = ("credential_dumping", "lateral_movement", "process_injection",
         "privilege_escalation", "discovery", "persistence")
LOUD = ("ransomware_encryption", "process_injection", "credential_dumping", "defense_evasion",
        "c2_beacon", "persistence", "exfiltration", "lateral_movement")
STEALTH = ("c2_beacon", "persistence", "defense_evasion", "obfuscated_script", "exfiltration",
           "office_child_process", "discovery")
BENIGN_BEH = ("discovery", "persistence", "office_child_process")


def synthetic_file(rng: random.Random, noise: float = 0.01) -> Sample:
    """One labelled feature vector, sparse like the correlator's (absent keys are 0)."""
    f: dict[str, float] = {}

    def behave(pool: tuple[str, ...], k_max: int, lo: float) -> None:
        for b in rng.sample(pool, rng.randint(1, k_max)):
            f["beh_" + b] = rng.uniform(lo, 1.0)

    u = rng.random()
    if u < 0.5:     # ordinary software
        kind, malicious, verdict, signed = "benign", False, rng.betavariate(1.2, 8), 0.75
        if rng.random() < 0.3:
            behave(BENIGN_BEH, 1, 0.05)
        ftype = rng.choice(("pe", "document", "other", "script", "archive"))
        path = rng.choice(("program_files", "system", "user", "downloads"))
        orgs, age_h, burst = rng.randint(1, 40), rng.uniform(24, 2000), 0.1
    elif u < 0.65:  # admin tools: the prior's false positives
        kind, malicious, verdict, signed = "hard", False, rng.uniform(0.1, 0.75), 0.85
        behave(ADMIN, 3, 0.3)
        ftype, path = rng.choice(("pe", "script")), rng.choice(("program_files", "user", "system"))
        orgs, age_h, burst = rng.randint(3, 40), rng.uniform(48, 3000), 0.1
    elif u < 0.85:  # loud malware
        kind, malicious, verdict, signed = "loud", True, rng.uniform(0.55, 1.0), 0.1
        behave(LOUD, 4, 0.3)
        ftype, path = rng.choice(("pe", "script", "elf")), rng.choice(("temp", "downloads", "user"))
        orgs, age_h, burst = rng.randint(1, 12), rng.uniform(0.01, 24), 0.8
    else:           # stealthy malware: the prior's misses
        kind, malicious, verdict, signed = "stealth", True, rng.uniform(0.0, 0.45), 0.15
        behave(STEALTH, 3, 0.2)
        ftype = rng.choice(("script", "document", "pe"))
        path = rng.choice(("temp", "downloads", "user"))
        orgs, age_h, burst = rng.randint(1, 5), rng.uniform(0.01, 48), 0.5
        if rng.random() < 0.4:
            f["parent_flagged"] = 1.0
    f["verdict_max"] = verdict
    f["verdict_mean"] = verdict * rng.uniform(0.5, 1.0)
    f["n_verdict_sources"] = math.log1p(int(verdict * 4 * rng.random()))
    f["n_behaviors"] = float(sum(1 for k in f if k.startswith("beh_")))
    f["signed"] = 1.0 if rng.random() < signed else 0.0
    f["type_" + ftype] = 1.0
    f["path_" + path] = 1.0
    f["log_size"] = math.log1p(rng.randint(1000, 50_000_000)) / 20
    f["has_parent"] = 1.0 if ("parent_flagged" in f or rng.random() < 0.5) else 0.0
    devices = orgs * rng.randint(1, 30)
    o24 = max(1, int(orgs * rng.uniform(0.3, 1.0)))
    o1h = min(o24, max(1, int(o24 * rng.uniform(burst * 0.5, burst + 0.2))))
    o10 = min(o1h, max(1, int(o1h * rng.uniform(burst * 0.5, 1.0))))
    f.update(log_devices=math.log1p(devices), log_orgs=math.log1p(orgs),
             orgs_24h=math.log1p(o24), orgs_1h=math.log1p(o1h), orgs_10m=math.log1p(o10),
             devices_1h=math.log1p(max(1, int(devices * rng.uniform(burst * 0.3, burst + 0.2)))),
             log_age_h=math.log1p(age_h), log_reports=math.log1p(devices * rng.uniform(1, 3)),
             org_trust=rng.uniform(0.3, 0.9))
    if rng.random() < noise:
        malicious = not malicious
    return f, malicious, kind


def synthetic_stream(n: int, seed: int = 3) -> list[Sample]:
    rng = random.Random(seed)
    return [synthetic_file(rng) for _ in range(n)]


def trained(n: int, seed: int = 3, env: dict[str, str] | None = None) -> Ensemble:
    ens = Ensemble.from_config(load_config(env=env or {}))
    for f, y, _ in synthetic_stream(n, seed):
        ens.learn(f, y)
    return ens


PROBES = [f for f, _, _ in synthetic_stream(300, seed=99)]


@pytest.fixture(scope="module")
def ens_400() -> Ensemble:
    return trained(400)


# -- hand-over -------------------------------------------------------------------------


def test_before_labels_the_score_is_the_prior():
    ens = Ensemble.from_config(load_config(env={}))
    assert ens.labels_seen == 0 and ens.learner_weight == 0.0 and ens.model_version == "ens-0"
    for f in PROBES[:50]:
        score, per_model = ens.score(f)
        assert score == pytest.approx(ens.prior.score(f), abs=1e-5)
        assert per_model["prior"] == ens.prior.score(f)
        assert set(per_model) == {"prior", "logreg", "tree", "nb"}
        assert all(0.0 <= p <= 1.0 for p in per_model.values())


STACK = {"RAPIDLOOP_MODELS__COMBINER": '"stack"'}


def test_stack_learners_get_no_say_until_each_class_has_enough_labels():
    cfg = load_config(env=STACK)
    need = cfg.models.min_class_labels
    ens = Ensemble.from_config(cfg)
    malicious = [(f, y) for f, y, _ in synthetic_stream(400) if y]
    benign = [(f, y) for f, y, _ in synthetic_stream(400) if not y]
    for f, y in malicious[:50]:   # plenty of one class, none of the other
        ens.learn(f, y)
    assert ens.learner_weight == 0.0
    assert ens.stacker.active == ("prior",)
    for f, y in benign[:need - 1]:
        ens.learn(f, y)
    assert ens.learner_weight == 0.0
    ens.learn(*benign[need - 1])
    n = 50 + need
    assert ens.labels_seen == n and ens.model_version == f"ens-{n}"
    assert ens.learner_weight == 1.0 and ens.stacker.active == ens.experts
    score, per_model = ens.score(PROBES[0])
    assert score == pytest.approx(ens.stacker.predict(ens._opinions(per_model)))


def test_sum_gives_every_learner_a_say_once_both_classes_were_seen():
    ens = Ensemble.from_config(load_config(env={}))
    assert ens.stacker.active == ens.experts and ens.learner_weight == 0.0
    stream = synthetic_stream(200)
    for wanted in (True, False):
        f, y, _ = next(item for item in stream if item[1] is wanted)
        ens.learn(f, y)
    assert ens.learner_weight == 1.0
    score, per_model = ens.score(PROBES[0])
    heard = ens._opinions(per_model)
    assert score == pytest.approx(ens.stacker.predict(heard))
    # one slope for every expert: the log-odds add up, then are calibrated
    assert len(set(ens.stacker.weights.values())) == 1
    # ...each learner heard no surer than two labels allow: log(2) + log(2)
    bound = evidence_bound(1, 1)
    for name in ens.names:
        assert abs(logit(heard[name])) <= bound + 1e-9
        if abs(logit(per_model[name])) <= bound:
            assert heard[name] == per_model[name]
    assert heard["prior"] == per_model["prior"]   # the prior is not a learner


def test_the_evidence_bound_lets_go_as_labels_accumulate():
    assert evidence_bound(1, 95) < evidence_bound(10, 95) < evidence_bound(10, 950)
    assert evidence_bound(400, 4000) > LOGIT_CLIP   # then it bounds nothing


def test_trimmed_drops_the_learner_that_raised_the_score_most(ens_400: Ensemble):
    for f in PROBES[:100]:
        score, per_model = ens_400.score(f)
        trimmed = ens_400.trimmed(per_model)
        assert trimmed <= score
        eager = max(("logreg", "tree", "nb"), key=lambda n: per_model[n])
        if per_model[eager] > 0.5:
            alone = {**per_model, eager: 0.5}   # that learner's log-odds at 0
            assert trimmed == pytest.approx(ens_400.stacker.predict(alone))


def test_min_class_labels_follows_the_config():
    cfg = load_config(env={"RAPIDLOOP_MODELS__MIN_CLASS_LABELS": "1", **STACK})
    ens = Ensemble.from_config(cfg)
    for f, y, _ in synthetic_stream(20):
        ens.learn(f, y)
    assert ens.learner_weight == 1.0


# -- learning --------------------------------------------------------------------------


def test_learns_the_stream_prequentially(ens_400: Ensemble):
    m = ens_400.metrics()
    assert set(m) == {"logreg", "tree", "nb", "prior", "ensemble"}
    for name in ("logreg", "nb", "ensemble"):
        assert m[name]["auc"] > 0.9, (name, m[name])
    assert m["tree"]["auc"] > 0.8, m["tree"]   # a Hoeffding tree needs many labels per split
    assert m["ensemble"]["auc"] > m["prior"]["auc"]
    # The combiner has learned to lean on the learners, not on the prior alone.
    assert all("weight" in m[k] for k in ens_400.experts)
    assert sum(abs(m[k]["weight"]) for k in ens_400.names) > 0.1


@pytest.mark.parametrize("combiner", ["sum", "stack"])
def test_learners_fix_what_the_prior_gets_wrong(combiner: str):
    ens = trained(1500, env={"RAPIDLOOP_MODELS__COMBINER": f'"{combiner}"'})
    rng = random.Random(5)
    scores: dict[str, list[tuple[float, float]]] = {"hard": [], "stealth": []}
    while min(len(v) for v in scores.values()) < 100:
        f, _, kind = synthetic_file(rng, noise=0.0)
        if kind in scores:
            scores[kind].append((ens.score(f)[0], ens.prior.score(f)))
    hard, stealth = scores["hard"], scores["stealth"]
    # benign files the prior finds suspicious go down, stealthy malware goes up
    assert sum(s for s, _ in hard) < 0.75 * sum(p for _, p in hard)
    assert sum(s for s, _ in stealth) > 1.5 * sum(p for _, p in stealth)
    assert sum(s > p for s, p in stealth) / len(stealth) > 0.85
    if combiner == "stack":   # a weight per expert can overrule the prior file by file
        assert sum(s < p for s, p in hard) / len(hard) > 0.85


def test_metrics_are_nan_until_both_classes_were_seen():
    ens = Ensemble.from_config(load_config(env={}))
    assert all(math.isnan(row["auc"]) for row in ens.metrics().values())
    f, _, _ = synthetic_stream(1)[0]
    ens.learn(f, True)
    assert math.isnan(ens.metrics()["logreg"]["auc"])
    ens.learn(f, False)
    assert not math.isnan(ens.metrics()["logreg"]["auc"])


def test_explain_adds_the_learners_view_once_they_count(ens_400: Ensemble):
    f = {"verdict_max": 0.95, "beh_ransomware_encryption": 1.0, "signed": 1.0}
    fresh = Ensemble.from_config(load_config(env={}))
    fresh.score(f)
    assert fresh.explain(f) == ["sensor verdict 0.95", "ransomware_encryption behaviour"]
    ens_400.score(f)
    reasons = ens_400.explain(f)
    said = [r for r in reasons if r.startswith("classifiers trained on 400 verdicts add +")]
    assert len(said) == 1 and said[0].endswith("to the log-odds"), reasons
    assert [r for r in reasons if r not in said] == ["sensor verdict 0.95",
                                                     "ransomware_encryption behaviour"]
    # not the vector just scored: the prior's reasons only
    assert ens_400.explain(dict(f)) == ["sensor verdict 0.95", "ransomware_encryption behaviour"]


def test_input_is_robust_to_sparse_unknown_and_extreme_features(ens_400: Ensemble):
    for f in ({}, {"unknown_feature": 3.0}, {k: 1e9 for k in FEATURE_NAMES},
              {k: -1e9 for k in FEATURE_NAMES}):
        score, per_model = ens_400.score(f)
        assert 0.0 <= score <= 1.0 and all(0.0 <= p <= 1.0 for p in per_model.values())
    assert ens_400.score({"unknown_feature": 3.0}) == ens_400.score({})
    broken = {"verdict_max": math.nan, "log_orgs": math.inf, "signed": 1.0}
    assert ens_400.score(broken) == ens_400.score({"signed": 1.0})


def test_non_finite_features_do_not_poison_the_learners():
    ens = trained(100)
    before = [ens.score(f) for f in PROBES[:20]]
    ens.learn({"verdict_max": math.nan, "orgs_1h": -math.inf}, True)
    after = [ens.score(f) for f in PROBES[:20]]
    assert all(not math.isnan(s) for s, _ in after) and after != before


def test_score_many_matches_score(ens_400: Ensemble):
    assert ens_400.score_many(PROBES[:30]) == [ens_400.score(f) for f in PROBES[:30]]


def test_cut_naive_bayes_is_rivers_bernoulli_nb_on_the_cut_flags():
    ours, rivers = CutBernoulliNB(cuts=NB_CUTS), naive_bayes.BernoulliNB(true_threshold=0.5)

    def flags(f: dict[str, float]) -> dict[str, float]:
        return {k: 1.0 if v > NB_CUTS.get(k, 0.0) else 0.0 for k, v in dense(f).items()}

    for i, (f, y, _) in enumerate(synthetic_stream(200)):
        ours.learn_one(dense(f), y)
        rivers.learn_one(flags(f), y)
        if i % 20 == 0:
            for p in PROBES[:10]:
                assert ours.predict_proba_one(dense(p)).get(True, 0.0) == pytest.approx(
                    rivers.predict_proba_one(flags(p)).get(True, 0.0), rel=1e-9, abs=1e-12)


def test_cut_naive_bayes_counts_are_rivers_learn_one_exactly():
    """The written-out ``learn_one`` leaves River's very counts: same keys in the same
    order, same values of the same types (a first flag is stored as a bool)."""
    ours, rivers = CutBernoulliNB(cuts=NB_CUTS), naive_bayes.BernoulliNB(true_threshold=0.5)
    for f, y, _ in synthetic_stream(300):
        x = dense(f)
        ours.learn_one(x, y)
        on = set(ours._on(x))
        rivers.learn_one({k: 1.0 if k in on else 0.0 for k in x}, y)

    def typed(counts: dict) -> list:
        return [(k, v, type(v)) for k, v in counts.items()]

    assert typed(ours.class_counts) == typed(rivers.class_counts)
    assert list(ours.feature_counts) == list(rivers.feature_counts)
    for name, counts in rivers.feature_counts.items():
        assert typed(ours.feature_counts[name]) == typed(counts), name


def test_logit_clips_as_max_min_did():
    def reference(p: float) -> float:
        if p <= 0.0:
            return -LOGIT_CLIP
        if p >= 1.0:
            return LOGIT_CLIP
        return max(-LOGIT_CLIP, min(LOGIT_CLIP, math.log(p / (1.0 - p))))

    rnd = random.Random(3)
    probes = [0.5, 1e-300, 1e-6, 6e-6, 1 - 1e-6, 1 - 1e-16, 0.25, math.nan,
              *(rnd.random() for _ in range(2000))]
    for p in probes:
        got, want = logit(p), reference(p)
        assert got == want or (math.isnan(got) and math.isnan(want)), p
        assert math.copysign(1.0, got) == math.copysign(1.0, want), p


# -- determinism, persistence, bounds --------------------------------------------------


def test_same_labels_same_order_same_scores():
    a, b = trained(300), trained(300)
    assert a.model_version == b.model_version == "ens-300"
    assert [a.score(f) for f in PROBES] == [b.score(f) for f in PROBES]
    assert a.metrics()["ensemble"] == b.metrics()["ensemble"]


def _restored(ens: Ensemble) -> Ensemble:
    back = Ensemble.from_config(load_config(env={}))
    back.restore(loads_plain(_blob(ens)))
    return back


def _blob(ens: Ensemble) -> bytes:
    return pickle.dumps(ens.snapshot(), protocol=pickle.HIGHEST_PROTOCOL)


def test_snapshot_round_trip_scores_and_learns_identically(ens_400: Ensemble):
    f0 = PROBES[0]
    ens_400.score(f0)   # a remembered vector must not leak into the snapshot
    copy = _restored(ens_400)
    assert copy.model_version == ens_400.model_version
    assert [copy.score(f) for f in PROBES] == [ens_400.score(f) for f in PROBES]
    more = synthetic_stream(50, seed=8)
    twin = _restored(ens_400)
    for f, y, _ in more:
        copy.learn(f, y)
        twin.learn(f, y)
    assert [copy.score(f) for f in PROBES] == [twin.score(f) for f in PROBES]


def test_size_stays_bounded():
    ens = Ensemble.from_config(load_config(env={}))
    stream = synthetic_stream(6000, seed=4)
    sizes = []
    for i, (f, y, _) in enumerate(stream, 1):
        ens.learn(f, y)
        if i % 2000 == 0:
            sizes.append(len(_blob(ens)))
    assert max(sizes) < 400 * 1024, sizes
    tree = ens.learners["tree"]
    assert tree.height <= tree.max_depth + 1
    assert tree.max_size <= 1.0 and tree.memory_estimate_period <= 1000
    assert all(len(auc._buf_labels) < 100 for auc in ens._auc.values())


def test_costs(capsys: pytest.CaptureFixture[str]):
    """Measured, not asserted: µs per score and per label, and snapshot size."""
    ens = Ensemble.from_config(load_config(env={}))
    stream = synthetic_stream(10_000, seed=6)
    report = []
    done = 0
    for n in (1000, 10_000):
        t0 = time.perf_counter()
        for f, y, _ in stream[done:n]:
            ens.learn(f, y)
        learn_us = (time.perf_counter() - t0) / (n - done) * 1e6
        done = n
        t0 = time.perf_counter()
        for f in PROBES:
            ens.score(f)
        score_us = (time.perf_counter() - t0) / len(PROBES) * 1e6
        t0 = time.perf_counter()   # batches of 25, about as many as between two labels
        for i in range(0, len(PROBES), 25):
            ens.score_batch(PROBES[i:i + 25])
        batch_us = (time.perf_counter() - t0) / len(PROBES) * 1e6
        t0 = time.perf_counter()
        blob = _blob(ens)
        dump_ms = (time.perf_counter() - t0) * 1e3
        report.append(f"{n} labels: score {score_us:.1f} µs ({batch_us:.1f} µs in batches "
                      f"of 25), learn {learn_us:.0f} µs, "
                      f"snapshot {len(blob) / 1024:.0f} KiB in {dump_ms:.1f} ms")
    with capsys.disabled():
        print("\n[ensemble cost] " + "; ".join(report))


def test_fast_learner_scores_equal_rivers_own() -> None:
    """``learner_p_true`` skips River's dicts and copies, never its arithmetic."""
    import random

    from rapidloop.base.config import load_config
    from rapidloop.operators.classifiers import (
        FEATURE_NAMES,
        _p_true,
        dense,
        learner_p_true,
        make_learners,
    )

    rng = random.Random(5)
    learners = make_learners(ModelSettings.from_config(load_config(env={})))
    for i in range(1500):
        x = dense({n: rng.random() * (rng.random() < 0.3) for n in FEATURE_NAMES})
        x["verdict_max"] = rng.random()
        if i % 3 == 0:
            for model in learners.values():
                assert learner_p_true(model, x) == _p_true(model.predict_proba_one(x))
        y = x["verdict_max"] > 0.5
        for model in learners.values():
            model.learn_one(x, y)
    assert learners["tree"].n_nodes > 1   # the tree split: traversal is exercised


def test_a_learner_that_has_seen_one_class_says_only_the_base_rate():
    """Trained on benign verdicts only, a learner says "benign" with certainty about
    everything (log-odds -12): in the combiner that would drown the first malicious
    file. Until then each learner says the (smoothed) share of malice among the
    verdicts, the same for every file, and once both classes are in, its own view."""
    ens = Ensemble.from_config(load_config(env={}))
    benign = [f for f, y, _ in synthetic_stream(200) if not y]
    for f in benign[:30]:
        ens.learn(f, False)
    score, per_model = ens.score(PROBES[0])
    assert all(per_model[n] < 0.01 for n in ("tree", "nb"))   # their own (reported) view
    muted = {**per_model, **dict.fromkeys(ens.names, 0.5)}
    base = 3 * math.log(0.5 / 30.5)                           # 3 learners, 0 of 30 malicious
    assert ens.base_rate_logit() == pytest.approx(base)
    assert score == pytest.approx(1 / (1 + math.exp(-(ens.stacker.logit(muted) + base))))
    # the policy's broad view counts the base rate once: one fact, three learners repeat it
    trimmed = 1 / (1 + math.exp(-(ens.stacker.logit(muted) + base / 3)))
    assert ens.trimmed(per_model) == pytest.approx(trimmed)
    malicious = next(f for f, y, _ in synthetic_stream(200) if y)
    ens.learn(malicious, True)
    assert ens.base_rate_logit() == 0.0
    score, per_model = ens.score(PROBES[0])
    assert score == pytest.approx(ens.stacker.predict(ens._opinions(per_model)))


def test_the_base_rate_lowers_every_score_alike_and_a_verdict_still_counts():
    """A run of benign verdicts recalibrates, it does not re-rank; and a sandbox
    "malicious" after a long quiet spell still blocks a file the prior finds very
    suspicious (the policy weighs it against the trimmed view, where the base rate
    counts once), but not one the prior only half suspects."""
    cfg = load_config(env={})
    fresh, quiet = Ensemble.from_config(cfg), Ensemble.from_config(cfg)
    benign = [f for f, y, _ in synthetic_stream(2000) if not y]
    for f in benign[:250]:
        quiet.learn(f, False)
    probes = [f for f, _, _ in synthetic_stream(60)]
    before = [fresh.score(f)[0] for f in probes]
    after = [quiet.score(f)[0] for f in probes]
    order = sorted(range(len(probes)), key=lambda i: before[i])
    assert all(after[a] <= after[b] for a, b in itertools.pairwise(order))
    assert all(a < b for a, b in zip(after, before, strict=True) if b > 1e-6)

    def with_sandbox_verdict(ens: Ensemble, f: dict[str, float]) -> float:
        odds = math.exp(logit(ens.trimmed(ens.score(f)[1]))) * 99   # reliability 0.99
        return odds / (1 + odds)

    loud = {"verdict_max": 0.97, "beh_ransomware_encryption": 1.0,
            "beh_credential_dumping": 1.0}
    meh = {"verdict_max": 0.45}
    assert quiet.score(loud)[0] < 0.5 < fresh.score(loud)[0]          # the score: held down
    assert with_sandbox_verdict(quiet, loud) >= cfg.policy.trusted_block_score
    assert with_sandbox_verdict(quiet, meh) < cfg.policy.trusted_block_score


def test_a_score_held_down_by_the_base_rate_says_so():
    """A SOC engineer seeing a release at score 0.00 in a quiet first hour is told why."""
    ens = Ensemble.from_config(load_config(env={}))
    for f in [f for f, y, _ in synthetic_stream(200) if not y][:20]:
        ens.learn(f, False)
    f = {"verdict_max": 0.6, "beh_ransomware_encryption": 1.0}
    score, _ = ens.score(f)
    assert score < 0.5
    reasons = ens.explain(f)
    assert reasons[0].startswith("none of the first 20 verdicts was malicious: -")
    assert "ransomware_encryption behaviour" in reasons
