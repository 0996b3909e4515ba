"""The classifier ensemble: online River learners combined with the prior.

Every report is scored and only a minority of files ever get a verdict, so
the learners are chosen for cheap prediction and small, bounded state
(measured on River 0.26.1, 2 cores; ``test_costs`` in
``tests/unit/test_classifiers.py`` prints them):

* ``logreg`` — ``LogisticRegression`` on the (already bounded or
  log-scaled) features: additive evidence, ~1 µs to score, ~5 µs to learn.
  No ``StandardScaler``: it blows rare one-hot features up to huge values,
  and the model then extrapolates wildly on files unlike its labels;
* ``tree`` — ``HoeffdingTreeClassifier`` (``operators.hoeffding``, which
  learns a label faster, identically) with a histogram splitter, bounded
  depth and a memory cap: interactions the linear model cannot express (bad
  behaviours *but* signed and widespread is an admin tool); ~6 µs to score,
  ~56 µs to learn a label with 41 features (80 by River's own path; the
  adaptive variant costs more, and every label is learned by every replica);
* ``nb`` — ``CutBernoulliNB``, a Bernoulli naive Bayes over evidence flags
  (``NB_CUTS``) with cached log tables: a generative model whose mistakes
  differ from the discriminative ones; ~4 µs to score (River's own
  ``BernoulliNB`` takes ~70 µs, ``GaussianNB`` ~90 µs and chokes on one-hot
  features), 2 KiB.

``Ensemble.score_batch`` scores many vectors at once, bit for bit as
``score`` scores each: the decider scores the reports between two labels
together (about 2× cheaper a report at the few dozen reports a batch
between two labels holds; ``tests/unit/test_batch_scoring.py``).

The published score is a calibrated combination of the prior's and the
learners' log-odds (``stacking.Stacker``), learned online from the verdicts,
each scored by every model *before* any of them learns it. By default
(``models.combiner = "sum"``) the log-odds are added and the sum calibrated
by one slope and bias, which is exactly the prior before any verdict;
``"stack"`` learns a weight per expert, starting as the prior alone, and
gives the learners a say once each class has ``min_class_labels`` labels.
While every verdict so far was benign the learners say only the base rate
of malice (``base_rate_logit``). ``trimmed`` is the same score without the
learner that raised it most, which the policy's broad blocks go by.

Everything is deterministic (fixed seeds, fixed feature and expert order)
and restores exactly from a snapshot (``Ensemble.snapshot``), so replicas
fed the same labels in the same order score identically.

>>> from rapidloop.base.config import load_config
>>> ens = Ensemble.from_config(load_config(env={}))
>>> f = {"verdict_max": 0.93, "beh_ransomware_encryption": 1.0}
>>> score, per_model = ens.score(f)
>>> round(score, 6) == round(per_model["prior"], 6), sorted(per_model), ens.model_version
(True, ['logreg', 'nb', 'prior', 'tree'], 'ens-0')
"""

from __future__ import annotations

import collections
import math
from collections import deque
from collections.abc import Sequence
from itertools import chain, repeat
from typing import Any

import numpy as np
from river import linear_model, metrics, naive_bayes, optim, tree
from river.base import Classifier
from river.tree.nodes.branch import DTBranch, NumericBinaryBranch

from rapidloop.base.config import Config

from .features import BEHAVIOR_FEATURES, FEATURE_NAMES
from .hoeffding import HoeffdingTree, accelerate
from .prior import Prior, sigmoid
from .settings import ModelSettings
from .snapshot import dump_objects, load_objects
from .stacking import LOGIT_CLIP, Stacker, logit

# Tunables live in [models] of the configuration; these are implementation constants.
TREE_GRACE_PERIOD = 50    # labels a leaf sees between split attempts (labels are scarce)
TREE_MEMORY_CHECK = 500   # labels between the tree's size checks (River's default: 1e6, i.e. never)
LOGREG_LR = 0.02          # SGD step on unscaled features (all near [0, 1] or log-scaled)
PROBA_CLIP = 1e-3         # one confident mistake costs at most -log(1e-3) ≈ 6.9 in the loss
METRIC_WINDOW = 500       # labels in the rolling prequential ROC AUC
METRIC_FLUSH = 100        # RollingROCAUC buffers updates until read: read it this often
BASE_RATE_PSEUDO = 0.5    # Jeffreys pseudo-count of each class in the base rate of malice
STRONG_LOGIT = 2.0        # learners' log-odds worth naming first in a decision's reasons

# Evidence flags for the naive Bayes: a feature counts as present above its cut
# (0.0 when not listed: one-hots, signed, parent flags). A behaviour counts once at
# least this share of the file's organizations saw it: NB trusts a flag completely,
# and one tenant's claims about a file 200 organizations run are 1/200 of the evidence.
NB_BEHAVIOR_SHARE = 0.2
NB_CUTS: dict[str, float] = {
    "verdict_max": 0.5,
    "verdict_mean": 0.5,
    "n_behaviors": 1.5,                    # two or more distinct behaviours
    "log_size": math.log1p(1 << 20) / 20,  # larger than 1 MiB
    "log_devices": math.log1p(3),          # more than 3 devices
    "log_orgs": math.log1p(1),             # more than one org
    "orgs_10m": math.log1p(1),
    "orgs_1h": math.log1p(1),
    "orgs_24h": math.log1p(2),
    "devices_1h": math.log1p(3),
    "log_age_h": math.log1p(24),           # older than a day
    "log_reports": math.log1p(10),
    "org_trust": 0.5,
    **{key: NB_BEHAVIOR_SHARE for key in BEHAVIOR_FEATURES},
}


def evidence_bound(n_malicious: int, n_benign: int) -> float:
    """The most extreme log-odds a learner is heard at, having learned these labels.

    Naive Bayes that has seen one malicious file can call the next file sharing
    a few of its flags malicious at odds of 600,000 to 1 (its flags multiply
    as if independent; seen on a simulated world: an Adobe installer, after 1
    malicious and 95 benign verdicts); that single opinion then outweighed two
    learners calling the file clean, and the installer was blocked across an
    organization on the strength of one label. A learner's certainty can be no
    better than its evidence: log(m + 1) + log(n + 1), the odds a file would
    need against every label seen, Laplace-smoothed on both sides. With 1 malicious and
    95 benign labels that is 5.3 (p ≈ 0.995); by a few hundred of each it
    passes the combiner's own cap (``LOGIT_CLIP``) and bounds nothing.

    >>> round(evidence_bound(1, 95), 2), evidence_bound(300, 3000) > LOGIT_CLIP
    (5.26, True)
    """
    return math.log(n_malicious + 1) + math.log(n_benign + 1)


def dense(features: dict[str, float]) -> dict[str, float]:
    """All of ``FEATURE_NAMES`` in their fixed order, missing ones as 0.0, unknown ones dropped.

    River's scaler and naive Bayes update only the keys they are given: fed
    sparse vectors, a one-hot feature would only ever be seen as 1.0 and
    look constant. A fixed order also makes float sums reproducible. A NaN or
    infinite value (a bug upstream) becomes 0.0: learned once, it would turn
    the linear model's weights to NaN for good. A vector that is already
    dense and in order (as ``FileState.features`` makes them) is returned
    as it is, not copied.

    >>> x = dense({"signed": 1.0, "junk": 5.0, "log_orgs": float("nan")})
    >>> len(x) == len(FEATURE_NAMES), x["signed"], x["type_pe"], x["log_orgs"], "junk" in x
    (True, 1.0, 0.0, 0.0, False)
    """
    if len(features) == _N_FEATURES and [*features] == _FEATURE_LIST:
        x = features   # already dense and in order (FileState.features): no copy
    else:
        get = features.get
        x = {name: get(name, 0.0) for name in FEATURE_NAMES}
    if not math.isfinite(sum(x.values())):   # one check on the common path
        x = {name: v if math.isfinite(v) else 0.0 for name, v in x.items()}
    return x


_FEATURE_LIST = list(FEATURE_NAMES)
_N_FEATURES = len(FEATURE_NAMES)
_COLUMN = {name: i for i, name in enumerate(FEATURE_NAMES)}


def feature_matrix(batch: Sequence[dict[str, float]]) -> np.ndarray:
    """The vectors of a batch as rows of a float matrix: row i is ``dense(batch[i])``.

    Dense vectors in order (as ``FileState.features`` makes them) are read
    as they are; others are filled in and trimmed as ``dense`` would. A
    non-finite value becomes 0.0, as in ``dense`` (checked once for the
    whole matrix rather than once per vector).

    >>> x = feature_matrix([{"signed": 1.0, "junk": 2.0}, {"log_orgs": float("inf")}])
    >>> x.shape == (2, len(FEATURE_NAMES)), x[0].tolist() == [*dense({"signed": 1.0}).values()]
    (True, True)
    >>> float(x[1].sum())
    0.0
    """
    n = len(batch)
    if all(map(_FEATURE_LIST.__eq__, map(list, batch))):   # all dense and in order
        values: Any = chain.from_iterable(map(dict.values, batch))
    else:
        values = chain.from_iterable(
            f.values() if len(f) == _N_FEATURES and [*f] == _FEATURE_LIST
            else [f.get(name, 0.0) for name in _FEATURE_LIST] for f in batch)
    x = np.fromiter(values, np.float64, count=n * _N_FEATURES).reshape(n, _N_FEATURES)
    bad = ~np.isfinite(x)
    if bad.any():
        x[bad] = 0.0
    return x


def row_sums(terms: np.ndarray) -> np.ndarray:
    """Each row's sum (along the last axis), added left to right as a Python loop (or
    River's ``dot``) adds it.

    ``terms.sum(axis=-1)`` adds in pairs and blocks, and the last bit of a
    sum depends on its order; ``cumsum`` runs along the row one term at a
    time, so its last column is the loop's sum exactly.
    """
    if terms.shape[-1] == 0:
        return np.zeros(terms.shape[:-1])
    return np.cumsum(terms, axis=-1)[..., -1]


def _p_true(proba: dict[Any, float]) -> float:
    """P(malicious) from a River ``predict_proba_one`` result; 0.5 when it knows nothing yet."""
    if not proba:
        return 0.5
    return proba.get(True, 0.0)


class CutBernoulliNB(naive_bayes.BernoulliNB):
    """Bernoulli naive Bayes over per-feature cuts, with its log tables cached between labels.

    River's ``BernoulliNB`` recomputes every feature's probability for every
    prediction (~70 µs for 41 features) and binarizes all features at one
    threshold. Here a feature is "on" above its own cut, and the log
    likelihood is a cached base term plus one cached delta per feature that
    is on: the same model, ~20× cheaper to score. Learning invalidates the
    cache; the first score after a label rebuilds it.

    >>> nb = CutBernoulliNB(cuts={"verdict_max": 0.5})
    >>> for v, y in [(0.9, True), (0.8, True), (0.1, False), (0.2, False)]:
    ...     nb.learn_one({"verdict_max": v}, y)
    >>> round(nb.predict_proba_one({"verdict_max": 0.7})[True], 3)
    0.75
    """

    def __init__(self, cuts: dict[str, float] | None = None, alpha: float = 1.0) -> None:
        super().__init__(alpha=alpha, true_threshold=0.5)
        self.cuts = dict(cuts or {})
        self._tables: dict[Any, tuple[float, dict[str, float]]] | None = None
        self._dense_cuts: list[float] | None = None   # self.cuts in FEATURE_NAMES order
        # the tables as arrays over FEATURE_NAMES, for batches (rebuilt with the tables):
        # the classes in the tables' order, each one's base and its deltas
        self._arrays: tuple[list[Any], np.ndarray, np.ndarray] | None = None
        self._cut_array: np.ndarray | None = None   # self.cuts over FEATURE_NAMES (fixed)
        # per class, what its part of the tables was built from and its terms (see
        # _build_tables): (class count, features counted, offsets in order, deltas)
        self._parts: dict[Any, tuple[int, int, list[float], dict[str, float]]] = {}

    def _on(self, x: dict[str, float]) -> list[str]:
        if len(x) == _N_FEATURES and [*x] == _FEATURE_LIST:   # dense: cuts in the same order
            cuts = self._dense_cuts
            if cuts is None:
                cuts = self._dense_cuts = [self.cuts.get(f, 0.0) for f in _FEATURE_LIST]
            return [f for f, v, c in zip(_FEATURE_LIST, x.values(), cuts, strict=True) if v > c]
        cut = self.cuts.get
        return [f for f, v in x.items() if v > cut(f, 0.0)]

    def p_true(self, x: dict[str, float]) -> float:
        """``predict_proba_one(x)[True]`` (0.5 before any label) without the dicts."""
        tables = self._tables if self._tables is not None else self._build_tables()
        if not tables:
            return 0.5
        on = self._on(x)
        jll = []
        mine = None
        for c, (base, delta) in tables.items():
            get = delta.get
            v = 0.0
            for f in on:
                v += get(f, 0.0)
            v = base + v   # the same additions, in the same order, as joint_log_likelihood
            jll.append(v)
            if c is True:
                mine = v
        if mine is None:
            return 0.0
        top = max(jll)
        total = 0.0
        for v in jll:
            total += math.exp(v - top)
        return math.exp(mine - top) / total

    def p_true_many(self, x: np.ndarray) -> list[float]:
        """``p_true`` of every row of a batch (columns in ``FEATURE_NAMES`` order), bit for bit.

        The flags are one comparison of the matrix with the cuts; each class's
        log likelihood is its base plus a running sum, left to right, of the
        deltas of the flags that are on (an off flag adds 0.0, which changes
        no sum), as ``p_true`` adds them. The normalisation is ``p_true``'s,
        row by row, with ``math.exp`` (numpy's differs from it in the last bit
        now and then).
        """
        n = x.shape[0]
        tables = self._tables if self._tables is not None else self._build_tables()
        if not tables:
            return [0.5] * n
        cuts = self._cut_array
        if cuts is None:
            cuts = self._cut_array = np.array([self.cuts.get(f, 0.0) for f in _FEATURE_LIST])
        arrays = self._arrays
        if arrays is None:
            arrays = self._arrays = (
                list(tables), np.array([base for base, _ in tables.values()]),
                np.array([list(map(delta.get, _FEATURE_LIST, repeat(0.0)))
                          for _, delta in tables.values()]))
        classes, bases, deltas = arrays
        mine = next((k for k, c in enumerate(classes) if c is True), None)
        if mine is None:
            return [0.0] * n
        on = (x > cuts)[:, None, :]                        # rows × 1 × features
        jll = (bases + row_sums(np.where(on, deltas, 0.0))).tolist()   # rows × classes
        exp = math.exp
        out: list[float] = []
        if len(classes) == 2:   # the usual case, unrolled: the same operations
            for a, b in jll:
                top = max(a, b)
                ea, eb = exp(a - top), exp(b - top)
                out.append((eb if mine else ea) / (0.0 + ea + eb))
            return out
        for row in jll:
            top = max(row)
            total = 0.0
            for v in row:
                total += exp(v - top)
            out.append(exp(row[mine] - top) / total)
        return out

    def snapshot(self) -> tuple[list[tuple[Any, int]], list[tuple[str, list[tuple[Any, Any]]]]]:
        """The counts as plain data, in their order (float sums follow it): the class
        counts and each feature's counts per class. The cuts and alpha are settings;
        the log tables are derived."""
        return (list(self.class_counts.items()),
                [(f, list(c.items())) for f, c in self.feature_counts.items()])

    def restore(self, state: tuple[list[tuple[Any, int]],
                                   list[tuple[str, list[tuple[Any, Any]]]]]) -> None:
        """Take up the counts ``snapshot`` saved (River's containers, same order)."""
        classes, features = state
        self.class_counts = collections.Counter(dict(classes))
        self.feature_counts = collections.defaultdict(collections.Counter)
        for f, counts in features:
            self.feature_counts[f] = collections.Counter(dict(counts))
        self._tables = self._arrays = None
        self._parts = {}

    def learn_one(self, x: dict[str, float], y: Any) -> None:
        """River's ``BernoulliNB.learn_one`` of ``{f: 1.0 if f is on else 0.0 for f in x}``,
        written out: the same counts, of the same types, in the same order (``Counter.update``
        with a dict is a Python loop per feature, a quarter of learning a label).

        River's updates: ``class_counts.update((y,))`` adds 1; for each feature,
        ``feature_counts[f].update({y: flag})`` stores the bool ``flag`` into an
        empty counter, else adds it to the count so far.
        """
        on = set(self._on(x))
        threshold = self.true_threshold
        class_counts = self.class_counts
        class_counts[y] = class_counts.get(y, 0) + 1
        feature_counts = self.feature_counts
        for f in x:
            flag = (1.0 if f in on else 0.0) > threshold
            counts = feature_counts[f]
            counts[y] = flag + counts.get(y, 0) if counts else flag
        self._tables = None
        self._arrays = None

    def _build_tables(self) -> dict[Any, tuple[float, dict[str, float]]]:
        """The log tables, rebuilt after every label (the first score after one pays it).

        ``p_class`` and ``p_feature_given_class`` are River's expressions written
        out (the same operations, in the same order): a method call per feature
        and class was half the cost of a rebuild, and a rebuild follows every label.

        A label changes the counts of its own class only (``learn_one``), so the
        other classes' offsets and deltas, two logarithms per feature, are kept
        from the last build (``_parts``) while their class count and the number of
        features counted are unchanged; only each base is summed again, from its
        own ``p_class`` (which every label moves) and the kept offsets, in order.
        Within a class, features with equal counts share one pair of logarithms.
        """
        log = math.log
        alpha = self.alpha
        counts = self.class_counts
        feature_counts = self.feature_counts
        n_features = len(feature_counts)
        parts = self._parts
        n = sum(counts.values())
        tables: dict[Any, tuple[float, dict[str, float]]] = {}
        for c in counts:
            k = counts[c]
            part = parts.get(c)
            if part is None or part[0] != k or part[1] != n_features:
                den = k + alpha * 2
                offsets: list[float] = []
                delta: dict[str, float] = {}
                same: dict[Any, tuple[float, float]] = {}   # count -> (offset, delta)
                for f, seen in feature_counts.items():
                    m = seen.get(c, 0.0)
                    terms = same.get(m)
                    if terms is None:
                        p = (m + alpha) / den   # p_feature_given_class(f, c)
                        off = log(1e-9 + 1.0 - p)   # River's smoothing of log(0)
                        terms = same[m] = (off, log(1e-9 + p) - off)
                    offsets.append(terms[0])
                    delta[f] = terms[1]
                part = parts[c] = (k, n_features, offsets, delta)
            base = log(k / n)        # p_class(c)
            for off in part[2]:
                base += off
            tables[c] = (base, part[3])
        self._tables = tables
        return tables

    def joint_log_likelihood(self, x: dict[str, float]) -> dict[Any, float]:
        tables = self._tables if self._tables is not None else self._build_tables()
        on = self._on(x)
        return {c: base + sum(delta.get(f, 0.0) for f in on)
                for c, (base, delta) in tables.items()}

    def predict_proba_one(self, x: dict[str, float]) -> dict[Any, float]:
        jll = self.joint_log_likelihood(x)
        if not jll:
            return {}
        top = max(jll.values())   # log-sum-exp without scipy's per-call overhead
        exp = {c: math.exp(v - top) for c, v in jll.items()}
        total = sum(exp.values())
        return {c: e / total for c, e in exp.items()}


def tree_p_true(model: tree.HoeffdingTreeClassifier, x: dict[str, float]) -> float:
    """``predict_proba_one(x)[True]`` of a majority-class Hoeffding tree (0.5 before any
    label), without River's per-call copy and normalisation of the leaf's class counts."""
    root = model._root
    if root is None:
        return 0.5 if not model.classes else 0.0
    return _leaf_p_true(root.traverse(x, until_leaf=True) if isinstance(root, DTBranch)
                        else root)


def _leaf_p_true(leaf: Any) -> float:
    """A majority-class leaf's share of malicious weight (River's normalisation, same order)."""
    stats = leaf.stats
    mine = stats.get(True, 0.0)
    total = sum(stats.values())
    if total == 0 or math.isnan(total):
        return mine
    return mine * (1 / total)


def tree_p_true_many(model: tree.HoeffdingTreeClassifier, x: np.ndarray,
                     batch: Sequence[dict[str, float]]) -> list[float]:
    """``tree_p_true`` of every row of a batch: the rows are walked down the tree together.

    At a numeric binary split (the only kind a tree of numeric features
    grows) the rows at that node are divided by one comparison of their
    column with the threshold (``x[feature] <= threshold`` goes left, as in
    River); each leaf's probability is computed once for all the rows that
    reach it. Any other kind of branch routes its rows one by one, by River's
    own ``traverse`` on the dense vectors.
    """
    n = x.shape[0]
    root = model._root
    if root is None:
        return [0.5 if not model.classes else 0.0] * n
    if not isinstance(root, DTBranch):
        return [_leaf_p_true(root)] * n
    out: list[float] = [0.0] * n
    todo: list[tuple[Any, np.ndarray]] = [(root, np.arange(n))]
    while todo:
        node, rows = todo.pop()
        if not isinstance(node, DTBranch):
            p = _leaf_p_true(node)
            for i in rows.tolist():
                out[i] = p
            continue
        j = _COLUMN.get(node.feature) if type(node) is NumericBinaryBranch else None
        if j is None:
            for i in rows.tolist():
                out[i] = _leaf_p_true(node.traverse(dense(batch[i]), until_leaf=True))
            continue
        left = x[rows, j] <= node.threshold
        low, high = node.children
        if left.any():
            todo.append((low, rows[left]))
        if not left.all():
            todo.append((high, rows[~left]))
    return out


def logreg_p_true_many(model: linear_model.LogisticRegression, x: np.ndarray) -> list[float]:
    """``predict_proba_one(x)[True]`` of every row: River's dot product (a running sum over
    the vector's features in order, then the intercept) and its sigmoid, cut off at ±30."""
    weights = model.weights   # a copy of River's weight vector, as a dict
    w = np.fromiter(map(weights.get, _FEATURE_LIST, repeat(0.0)), np.float64, count=_N_FEATURES)
    z = row_sums(x * w) + model.intercept
    exp = math.exp
    return [0 if v < -30 else 1 if v > 30 else 1 / (1 + exp(-v)) for v in z.tolist()]


_TREES = (HoeffdingTree, tree.HoeffdingTreeClassifier)   # the same model, fast or as River made it


def learner_p_true(model: Classifier, x: dict[str, float]) -> float:
    """P(malicious) from one learner, by the cheapest exact route it offers."""
    kind = type(model)
    if kind is CutBernoulliNB:
        return model.p_true(x)   # type: ignore[attr-defined]
    if kind in _TREES and model.leaf_prediction == "mc":
        return tree_p_true(model, x)   # type: ignore[arg-type]
    return _p_true(model.predict_proba_one(x))


def learner_p_true_many(model: Classifier, x: np.ndarray,
                        batch: Sequence[dict[str, float]]) -> list[float]:
    """``learner_p_true`` of every vector of a batch (``x`` is its ``feature_matrix``):
    vectorised for the learners ``make_learners`` makes, one by one for any other."""
    kind = type(model)
    if kind is CutBernoulliNB:
        return model.p_true_many(x)   # type: ignore[attr-defined]
    if kind in _TREES and model.leaf_prediction == "mc":
        return tree_p_true_many(model, x, batch)   # type: ignore[arg-type]
    if kind is linear_model.LogisticRegression and type(model.loss) is optim.losses.Log:
        return logreg_p_true_many(model, x)   # type: ignore[arg-type]
    return [learner_p_true(model, dense(f)) for f in batch]


def make_learners(settings: ModelSettings) -> dict[str, Classifier]:
    """The named learners, fresh and seeded."""
    depth = settings.tree_max_depth
    size = settings.tree_max_size_mib
    return {
        "logreg": linear_model.LogisticRegression(optimizer=optim.SGD(LOGREG_LR)),
        "tree": HoeffdingTree(
            grace_period=TREE_GRACE_PERIOD, max_depth=depth, leaf_prediction="mc",
            splitter=tree.splitter.HistogramSplitter(n_bins=8), max_size=size,
            memory_estimate_period=TREE_MEMORY_CHECK),
        "nb": CutBernoulliNB(cuts=NB_CUTS),
    }


def _clip(p: float) -> float:
    return min(max(p, PROBA_CLIP), 1.0 - PROBA_CLIP)


def _log_loss(y: bool, p: float) -> float:
    p = _clip(p)
    return -math.log(p if y else 1.0 - p)


class Ensemble:
    """Prior plus online learners and their combiner; deterministic."""

    def __init__(self, settings: ModelSettings, prior: Prior) -> None:
        """``prior``: the job's shared rule (``Settings.prior``)."""
        self.settings = settings
        self.prior = prior
        self.learners = make_learners(settings)
        self.names: tuple[str, ...] = tuple(self.learners)
        self.experts: tuple[str, ...] = ("prior", *self.names)
        self.stacker = Stacker(self.experts, settings.stack_lr, settings.stack_l2,
                               tied=settings.tied)
        self.n_malicious = 0
        self.n_benign = 0
        self.n_measured = 0                                  # verdicts in the metrics
        # Rolling AUC: exact over the last METRIC_WINDOW labels, cheap to update and to
        # pickle (ROCAUC(n_thresholds=100) costs ~18 µs per update and ~0.5 ms per dump).
        tracked = (*self.experts, "ensemble")
        self._auc = {k: metrics.RollingROCAUC(window_size=METRIC_WINDOW) for k in tracked}
        self._loss = {k: metrics.LogLoss() for k in tracked}
        self._window: deque[bool] = deque(maxlen=METRIC_WINDOW)   # labels in the AUC window
        # last score, for explain: (features, learners' log-odds, learner weight, score)
        self._memo: tuple[dict[str, float], float, float, float] | None = None

    @classmethod
    def from_config(cls, cfg: Config) -> Ensemble:
        """An untrained ensemble of ``cfg``, with a prior of its own (tools and tests; a
        job's replicas share the job's)."""
        return cls(ModelSettings.from_config(cfg), Prior.from_config(cfg))

    # -- state ---------------------------------------------------------------

    @property
    def labels_seen(self) -> int:
        return self.n_malicious + self.n_benign

    @property
    def model_version(self) -> str:
        """Changes with every label learned; the same labels give the same version."""
        return f"ens-{self.labels_seen}"

    @property
    def learners_ready(self) -> bool:
        """Learners get a say once each class has ``min_class_labels`` labels."""
        return min(self.n_malicious, self.n_benign) >= self.settings.min_class_labels

    @property
    def learner_weight(self) -> float:
        """How much the learners move the score: 0 before they are ready."""
        return 1.0 if len(self.stacker.active) > 1 and self.labels_seen else 0.0

    def snapshot(self) -> dict[str, Any]:
        """What the ensemble learned, as plain data but for River's estimators and
        metrics, which travel as one opaque blob (``operators.snapshot``): naive Bayes
        as its counts, the combiner's weights, the label counts and the AUC window.
        The prior and the settings are not state; nor is the memo of the last score."""
        river = {name: model for name, model in self.learners.items()
                 if type(model) is not CutBernoulliNB}
        return {"river": dump_objects((river, self._auc, self._loss)),
                "nb": {name: model.snapshot() for name, model in self.learners.items()
                       if type(model) is CutBernoulliNB},
                "stacker": self.stacker.snapshot(),
                "labels": (self.n_malicious, self.n_benign, self.n_measured),
                "window": list(self._window)}

    def restore(self, state: dict[str, Any]) -> None:
        """Take up what ``snapshot`` saved (the learners keep their order)."""
        river, self._auc, self._loss = load_objects(state["river"])
        for name, counts in state["nb"].items():
            self.learners[name].restore(counts)   # type: ignore[attr-defined]
        self.learners = {name: accelerate(river.get(name, model))
                         for name, model in self.learners.items()}
        self.stacker.restore(state["stacker"])
        self.n_malicious, self.n_benign, self.n_measured = state["labels"]
        self._window = deque(state["window"], maxlen=METRIC_WINDOW)
        self._memo = None

    # -- scoring -------------------------------------------------------------

    def _score(self, features: dict[str, float]) -> tuple[float, float, dict[str, float]]:
        """(published score, the learners' share of its log-odds, per-model scores)."""
        x = dense(features)
        per_model = {"prior": self.prior.score(x)}
        for name, model in self.learners.items():
            per_model[name] = learner_p_true(model, x)
        stacker = self.stacker
        opinions = self._opinions(per_model)
        z = stacker.logit(opinions)
        learned = z - stacker.weights["prior"] * logit(per_model["prior"]) - stacker.bias
        base = self.base_rate_logit()
        return sigmoid(z + base), learned + base, per_model

    def base_rate_logit(self) -> float:
        """What the learners add while every verdict so far was benign: the base rate of malice.

        Until the first malicious verdict the learners have seen one class and
        are muted (``_opinions``), which left the score at the prior's however
        long the run of benign verdicts: the quiet period's hard negatives then
        outranked malware scored later, and nothing was learned from 250 verdicts
        saying the prior is too eager. Instead each learner says the only thing
        it knows, the share of malice among the verdicts so far, Jeffreys-smoothed
        (``(m + 1/2) / (m + n + 1)``, m = 0): every score drops alike, so no ranking
        within the period changes, only its calibration. It never raises a
        score: verdicts are drawn to suspicious files, so a run of malicious ones
        says little about the rest.

        >>> from rapidloop.base.config import load_config
        >>> ens = Ensemble.from_config(load_config(env={}))
        >>> ens.base_rate_logit()   # no verdicts: no base rate
        0.0
        >>> ens.n_benign = 49       # (what 49 benign verdicts leave; normally set by learn)
        >>> round(ens.base_rate_logit() / len(ens.names), 2)   # log-odds of 1 in 100
        -4.6
        """
        if self.n_malicious or not self.n_benign:
            return 0.0
        odds = BASE_RATE_PSEUDO / (self.n_benign + BASE_RATE_PSEUDO)
        return len(self.names) * math.log(odds)

    def _opinions(self, per_model: dict[str, float]) -> dict[str, float]:
        """What the combiner hears: a learner that has seen one class only says "always
        that class" with certainty (log-odds ±12) about every file, which is no opinion;
        and no learner is heard surer than its labels can make it (``evidence_bound``)."""
        m, n = self.n_malicious, self.n_benign
        if not (m and n):
            return {**per_model, **dict.fromkeys(self.names, 0.5)}
        bound = evidence_bound(m, n)
        if bound >= LOGIT_CLIP:
            return per_model
        lo = sigmoid(-bound)
        hi = 1.0 - lo
        heard = dict(per_model)
        for name in self.names:
            p = heard[name]
            heard[name] = lo if p < lo else hi if p > hi else p
        return heard

    def score(self, features: dict[str, float]) -> tuple[float, dict[str, float]]:
        """The malice score in [0, 1] and each model's own score (learners and "prior").

        Before any verdict the score is exactly the prior's.
        """
        score, learned, per_model = self._score(features)
        self._memo = (features, learned, self.learner_weight, score)
        return score, per_model

    def trimmed(self, per_model: dict[str, float]) -> float:
        """The score without the learner that pushed it up most: what the rest still say.

        No single learner, fooled or poisoned, can carry a block across an
        organization or the fleet on its own (the policy's broad scopes use it).
        While the learners say only the base rate it counts here once, as the
        one fact it is (three learners repeat it in the score, where it ranks
        and weighs nothing else): a sandbox "malicious" on the first campaign
        after a quiet spell is weighed against the prior's suspicion and the
        base rate, not against the base rate three times.
        """
        stacker = self.stacker
        w = stacker.weights
        opinions = self._opinions(per_model)
        top = 0.0
        for name in stacker.active:
            if name != "prior":
                term = w[name] * logit(opinions[name])
                if term > top:
                    top = term
        return sigmoid(stacker.logit(opinions) - top + self.base_rate_logit() / len(self.names))

    def score_many(self, batch: list[dict[str, float]]) -> list[tuple[float, dict[str, float]]]:
        """``score`` for each feature vector of a batch (``score_batch`` without the
        learners' share)."""
        return [(score, per_model) for score, per_model, _ in self.score_batch(batch)]

    def score_batch(self, batch: Sequence[dict[str, float]]
                    ) -> list[tuple[float, dict[str, float], float]]:
        """(score, per-model scores, learners' share of the log-odds) of every vector of a
        batch: ``score``'s results, bit for bit, for a fraction of the cost per vector.

        The batch is one matrix (``feature_matrix``): the prior and the linear
        model are running sums along its rows, naive Bayes a running sum of
        its flags' deltas, the tree a walk of all the rows at once: the parts
        that cost a term per feature. What costs a logarithm or an exponential
        per model (sigmoids, the softmax, the combiner) is done row by row
        with ``math``: numpy's SIMD ``exp`` and ``log`` differ from the C
        library's in the last bit, and a report must score the same alone or
        in a batch. Every other float operation is the one the per-vector path
        does, in the same order (numpy's elementwise arithmetic is IEEE's, as
        Python's is). No label may be learned between the vectors of one call
        (the decider batches the reports between two labels). The third
        element is what ``explain`` needs instead of the memo of the last
        ``score``, which a batch does not set.
        """
        n = len(batch)
        if not n:
            return []
        x = feature_matrix(batch)
        columns = [list(map(sigmoid, self.prior.logit_many(x).tolist()))]   # experts' order
        for model in self.learners.values():
            columns.append(learner_p_true_many(model, x, batch))
        return self._combine_rows(columns)

    def _combine_rows(self, columns: list[list[float]]
                      ) -> list[tuple[float, dict[str, float], float]]:
        """``_score``'s combination of the experts' opinions, for every row of a batch.

        ``columns`` holds each expert's P(malicious) of every vector (``experts``
        order). Per row, with the scalar functions (``logit``, ``sigmoid``, and
        ``sum`` over the same terms as ``Stacker.logit``): a logarithm or an
        exponential a term, where numpy's calls would cost more than the
        arithmetic at the batch sizes between two labels (a few dozen).
        """
        experts = self.experts
        stacker = self.stacker
        w, bias = stacker.weights, stacker.bias
        active = [(experts.index(name), w[name]) for name in stacker.active]
        w_prior = w["prior"]
        base = self.base_rate_logit()
        m, n = self.n_malicious, self.n_benign
        mute = not (m and n)               # see _opinions: the learners say nothing yet
        bound = 0.0 if mute else evidence_bound(m, n)
        clamp = not mute and bound < LOGIT_CLIP
        lo = sigmoid(-bound)
        hi = 1.0 - lo
        out: list[tuple[float, dict[str, float], float]] = []
        if len(experts) == 4 and len(active) == 4 and [k for k, _ in active] == [0, 1, 2, 3]:
            # the usual experts, all heard: the loop below, unrolled (twice as fast)
            a, b, c, d = experts
            (_, wa), (_, wb), (_, wc), (_, wd) = active
            if mute:
                said = logit(0.5)
                tb, tc, td = wb * said, wc * said, wd * said
                for pa, pb, pc, pd in zip(*columns, strict=True):
                    la = logit(pa)
                    z = bias + sum((wa * la, tb, tc, td))
                    out.append((sigmoid(z + base), {a: pa, b: pb, c: pc, d: pd},
                                z - w_prior * la - bias + base))
                return out
            if not clamp:
                lo, hi = -math.inf, math.inf   # nothing is outside: the opinions as they are
            for pa, pb, pc, pd in zip(*columns, strict=True):
                la = logit(pa)
                z = bias + sum((wa * la,
                                wb * logit(lo if pb < lo else hi if pb > hi else pb),
                                wc * logit(lo if pc < lo else hi if pc > hi else pc),
                                wd * logit(lo if pd < lo else hi if pd > hi else pd)))
                out.append((sigmoid(z + base), {a: pa, b: pb, c: pc, d: pd},
                            z - w_prior * la - bias + base))
            return out
        silent = (0.5,) * len(self.names)
        for row in zip(*columns, strict=True):
            per_model = dict(zip(experts, row, strict=True))
            if mute:
                heard: tuple[float, ...] = (row[0], *silent)
            elif clamp:
                heard = (row[0], *(lo if p < lo else hi if p > hi else p for p in row[1:]))
            else:
                heard = row
            z = bias + sum(wk * logit(heard[k]) for k, wk in active)
            learned = z - w_prior * logit(row[0]) - bias
            out.append((sigmoid(z + base), per_model, learned + base))
        return out

    def explain(self, features: dict[str, float],
                said: tuple[float, float, float] | None = None) -> list[str]:
        """Reasons for the score, in words: the prior's strongest terms and the learners' say.

        The learners' opinion is named when they raised the log-odds and
        ``features`` is the vector last passed to ``score`` (no second
        scoring), or ``said`` gives what its scoring found: (learners' share
        of the log-odds, ``learner_weight``, score), as ``score_batch`` returns
        them; it comes first when it outweighs the prior's evidence. A low
        score held down by the base rate (no malicious verdict yet) says so
        first: it is why the prior's suspicions act on nothing.
        """
        reasons = self.prior.explain(features)
        memo = self._memo if said is None else (features, *said)
        if memo is None or memo[0] is not features:
            return reasons
        base = self.base_rate_logit()
        if base <= -STRONG_LOGIT and memo[3] < 0.5:
            reasons.insert(0, f"none of the first {self.n_benign} verdicts was malicious: "
                              f"{base:+.1f} to the log-odds of every file")
        elif memo[2] > 0.0 and memo[1] >= 0.5:
            learned = memo[1]
            said = (f"classifiers trained on {self.labels_seen} verdicts add "
                    f"{learned:+.1f} to the log-odds")
            if learned >= STRONG_LOGIT:
                reasons.insert(0, said)
            else:
                reasons.append(said)
        return reasons

    # -- learning ------------------------------------------------------------

    def class_weight(self, malicious: bool) -> float:
        """How much a verdict of this class teaches the logistic regression: n / (2 n_class)
        over the verdicts so far and this one, within [1 / class_balance_cap, class_balance_cap].

        Verdicts come mostly benign, and early on hard negatives (tools that behave like
        malware) dominate them: an unweighted SGD learner then learns "alarming behaviour
        means benign" and ranks the first campaign waves below the tools, until enough
        malicious verdicts arrive. Weighting each class to an equal share is the standard
        cure for an imbalanced stream; the cap bounds the step one wrong label can take.
        Lessons (a labelled file seen again) are not weighted, or one wrong sandbox label
        on a popular file would be taught again at every lesson at the cap. Only the
        logistic regression: naive Bayes's class weights would only move its prior, which
        the combiner's bias absorbs, and River's Hoeffding tree histogram splitter fails on
        weighted samples.

        >>> from rapidloop.base.config import load_config
        >>> ens = Ensemble.from_config(load_config(env={}))
        >>> ens.n_benign = 99
        >>> ens.class_weight(True), round(ens.class_weight(False), 3)
        (10.0, 0.5)
        """
        cap = self.settings.balance_cap
        if cap <= 1.0:
            return 1.0
        n_class = (self.n_malicious if malicious else self.n_benign) + 1
        w = (self.labels_seen + 1) / (2.0 * n_class)
        return min(cap, max(1.0 / cap, w))

    def learn(self, features: dict[str, float], malicious: bool, *, lesson: bool = False) -> None:
        """Learn one trusted label; first score it with every model (prequential).

        A ``lesson`` (a labelled file seen again, see ``Correlator``) teaches
        the learners and the combiner the file as it looks now, where the
        decisions are made; the metrics stay those of the verdict stream.
        """
        measure = not lesson
        y = bool(malicious)
        weight = self.settings.lesson_weight if lesson else 1.0
        if measure or weight:
            score, _, per_model = self._score(features)
            if measure:
                for name, p in (*per_model.items(), ("ensemble", score)):
                    self._auc[name].update(y, p)
                    self._loss[name].update(y, _clip(p))
                self._window.append(y)
                self.n_measured += 1
            # out-of-sample opinions (before the experts learn); a lesson moves the
            # combiner by stack_lesson_weight of a verdict's step (0 by default: it is
            # calibrated on verdicts, where the labels are, and lessons teach the learners)
            self.stacker.learn(self._opinions(per_model), y, weight)
        x = dense(features)
        weight = 1.0 if lesson else self.class_weight(y)
        for name, model in self.learners.items():
            if name == "logreg" and weight != 1.0:
                model.learn_one(x, y, w=weight)
            else:
                model.learn_one(x, y)
        if y:
            self.n_malicious += 1
        else:
            self.n_benign += 1
        if self.learners_ready and len(self.stacker.active) == 1:
            for name in self.names:
                self.stacker.activate(name)
        if measure and self.n_measured % METRIC_FLUSH == 0:
            for auc in self._auc.values():
                auc.get()   # flushes its update buffer, which otherwise grows until read
        self._memo = None

    def metrics(self) -> dict[str, dict[str, float]]:
        """Prequential quality of every model, measured on each label before learning it.

        Rows: each learner, "prior" and "ensemble" (the published score).
        ``auc``: ROC AUC over the last ``METRIC_WINDOW`` verdicts (NaN while
        they hold a single class); ``log_loss``: over all verdicts; the experts
        also give their ``weight`` in the combiner (0 until they have a say).
        """
        both = len(set(self._window)) == 2
        out: dict[str, dict[str, float]] = {}
        for name, auc in self._auc.items():
            row = {"auc": float(auc.get()) if both else math.nan,
                   "log_loss": float(self._loss[name].get())}
            if name in self.stacker.weights:
                row["weight"] = self.stacker.weights[name] if name in self.stacker.active else 0.0
            out[name] = row
        return out
