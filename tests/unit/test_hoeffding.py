"""The fast Hoeffding tree grows exactly River's tree, and snapshots stay River's."""

from __future__ import annotations

import pickle
import random
from typing import Any

import pytest
from river import tree
from river.tree.nodes.branch import DTBranch

from rapidloop.base.config import load_config
from rapidloop.operators.classifiers import make_learners
from rapidloop.operators.features import FEATURE_NAMES
from rapidloop.operators.hoeffding import FastLeaf, HoeffdingTree, accelerate
from rapidloop.operators.settings import ModelSettings
from rapidloop.operators.snapshot import dump_objects, load_objects


def _tree(cls: type) -> Any:
    return cls(grace_period=20, max_depth=6, leaf_prediction="mc",
               splitter=tree.splitter.HistogramSplitter(n_bins=8), max_size=0.05,
               memory_estimate_period=300)


def _vector(rng: random.Random) -> dict[str, float]:
    """Like the correlator's: dense, mostly zeros and one-hots, a few continuous values
    (some repeated exactly, so bins are hit, extended and merged)."""
    x = dict.fromkeys(FEATURE_NAMES, 0.0)
    for name in rng.sample(FEATURE_NAMES, 8):
        x[name] = rng.choice([1.0, 0.5, round(rng.random(), 2), rng.random() * 3])
    return x


def _label(x: dict[str, float], rng: random.Random) -> bool:
    return (x["verdict_max"] + x["log_orgs"] * 0.2 > 0.4) != (rng.random() < 0.05)


def _shape(model: Any) -> list[Any]:
    """Everything a tree is: each node's kind, split and counts, each leaf's histograms."""
    out: list[Any] = []
    root = model._root
    if root is None:
        return out
    for node in root.iter_dfs():
        if isinstance(node, DTBranch):
            out.append(("branch", node.feature, getattr(node, "threshold", None)))
            continue
        hists = None
        if node.splitters is not None:
            hists = {att: {y: (h.n, [(b.left, b.right, b.count) for b in h])
                           for y, h in sp.hists.items()}
                     for att, sp in node.splitters.items()}
        out.append(("leaf", dict(node.stats), node.depth, node.is_active(), hists))
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_it_grows_exactly_rivers_tree(seed: int) -> None:
    rng = random.Random(seed)
    river_tree, fast = _tree(tree.HoeffdingTreeClassifier), _tree(HoeffdingTree)
    probes = [_vector(rng) for _ in range(50)]
    for i in range(3000):
        x = _vector(rng)
        y = _label(x, rng)
        river_tree.learn_one(x, y)
        fast.learn_one(x, y)
        if i % 500 == 499:
            assert _shape(fast) == _shape(river_tree)
            assert ([fast.predict_proba_one(p) for p in probes]
                    == [river_tree.predict_proba_one(p) for p in probes])
    assert isinstance(fast._root, DTBranch)   # it did split
    assert all(type(leaf) is FastLeaf for leaf in fast._root.iter_leaves())


def test_snapshots_name_rivers_classes_and_restore_fast() -> None:
    rng = random.Random(4)
    fast, plain = _tree(HoeffdingTree), _tree(tree.HoeffdingTreeClassifier)
    for _ in range(600):
        x = _vector(rng)
        y = _label(x, rng)
        fast.learn_one(x, y)
        plain.learn_one(x, y)
    blob = dump_objects({"tree": fast})
    assert b"rapidloop" not in blob   # what the snapshot loader accepts: River's classes only
    restored = load_objects(blob)["tree"]
    assert type(restored) is tree.HoeffdingTreeClassifier
    assert type(accelerate(restored)) is HoeffdingTree
    assert all(type(leaf) is FastLeaf for leaf in restored._root.iter_leaves())
    assert _shape(restored) == _shape(plain)
    for _ in range(600):   # and it goes on learning as River's would
        x = _vector(rng)
        y = _label(x, rng)
        restored.learn_one(x, y)
        plain.learn_one(x, y)
    assert _shape(restored) == _shape(plain)
    assert pickle.loads(pickle.dumps(plain)).__class__ is tree.HoeffdingTreeClassifier


def test_other_leaves_and_weights_take_rivers_path() -> None:
    model = _tree(HoeffdingTree)
    model.learn_one({"a": 1.0}, True, w=3.0)   # a weight: River's update, three rounds
    assert model._root.splitters["a"].hists[True].n == 3
    assert accelerate(model) is model and accelerate("not a tree") == "not a tree"


def test_the_ensemble_uses_it() -> None:
    learners = make_learners(ModelSettings.from_config(load_config(env={})))
    assert type(learners["tree"]) is HoeffdingTree


def _suggestions(found: list[Any]) -> list[Any]:
    return [(s.merit, s.feature, s.split_info, s.children_stats, s.numerical_feature,
             s.multiway_split) for s in found]


@pytest.mark.parametrize("seed", [5, 6])
def test_split_suggestions_are_rivers_bit_for_bit(seed: int) -> None:
    """Every leaf, every few labels: the fast suggestions against River's own method on
    the same leaf (merits, thresholds and child counts compared as floats, exactly)."""
    rng = random.Random(seed)
    model = _tree(HoeffdingTree)
    checked = 0
    for i in range(1500):
        x = _vector(rng)
        model.learn_one(x, _label(x, rng))
        if i % 5:
            continue
        root = model._root
        for leaf in (root.iter_leaves() if isinstance(root, DTBranch) else [root]):
            if leaf.splitters is None or not leaf.splitters:
                continue
            criterion = model._new_split_criterion()
            fast = leaf.best_split_suggestions(criterion, model)
            plain = super(FastLeaf, leaf).best_split_suggestions(criterion, model)
            assert _suggestions(fast) == _suggestions(plain)
            checked += len(fast) > 1   # not the early answer of a dominant class
    assert checked > 50


def test_a_class_without_histogram_and_flat_features_split_as_rivers() -> None:
    model = _tree(HoeffdingTree)
    for i in range(30):   # one class only so far, and a feature that never varies
        model.learn_one({"a": i / 30, "flat": 1.0}, True)
    leaf = model._root
    leaf.stats[False] = 2.0   # a class the histograms have not seen (as after a split)
    criterion = model._new_split_criterion()
    fast = leaf.best_split_suggestions(criterion, model)
    plain = super(FastLeaf, leaf).best_split_suggestions(criterion, model)
    assert _suggestions(fast) == _suggestions(plain)
    assert [s.feature for s in fast] == [None, "a", None]   # null split, a, flat has none
