"""River's Hoeffding tree, teaching a leaf one label with less Python per feature.

The ensemble's tree learns every trusted label and every lesson, and a label
updates one histogram per feature at the leaf it reaches (River's
``HTLeaf.update_splitters``, then ``HistogramSplitter.update``, then
``Histogram.update``): three method calls per feature, forty features a
label, about half of a label's whole cost in the decide step. The leaf here
does the same for a unit weight in one loop: the histogram's own update
(find the bin, count or insert, merge the closest pair past ``max_bins``)
written out, and a value at the lowest bin's left edge (most features are
0.0 most of the time) counted where the search would have found it: the
same operations on the same objects, so the tree grows
exactly as River's (``tests/unit/test_hoeffding.py`` compares the two after
thousands of labels: splits, leaf counts and every histogram bin). Anything
else (another weight, another splitter, a nominal feature) goes through
River's own methods.

Snapshots stay River's: both classes pickle as the River classes they
extend, and ``accelerate`` turns a restored River tree into this one, so a
state written by either reads back with either.

>>> from river import tree
>>> def grown(cls):
...     model = cls(grace_period=10, leaf_prediction="mc",
...                 splitter=tree.splitter.HistogramSplitter(n_bins=8))
...     for i in range(50):
...         model.learn_one({"a": i % 7 / 7, "b": float(i % 2)}, i % 2 == 0)
...     return [leaf.stats for leaf in model._root.iter_leaves()]
>>> grown(HoeffdingTree) == grown(tree.HoeffdingTreeClassifier)
True
"""

from __future__ import annotations

import copyreg
import math
from typing import Any

from river import tree
from river.sketch.histogram import Bin
from river.tree.nodes.branch import DTBranch
from river.tree.nodes.htc_nodes import LeafMajorityClass
from river.tree.split_criterion import InfoGainSplitCriterion
from river.tree.splitter import HistogramSplitter
from river.tree.splitter.histogram_splitter import decimal_range
from river.tree.utils import BranchFactory


class FastLeaf(LeafMajorityClass):
    """A majority-class leaf whose histograms take a unit-weight label in one loop."""

    def update_splitters(self, x: dict[str, Any], y: Any, w: float,
                         nominal_attributes: Any) -> None:
        if w != 1 or nominal_attributes:
            super().update_splitters(x, y, w, nominal_attributes)
            return
        splitters = self.splitters
        disabled = self._disabled_attrs
        for att_id, att_val in x.items():   # HTLeaf._iter_features
            if att_id in disabled:
                continue
            splitter = splitters.get(att_id)
            if splitter is None:   # a new feature: River's own path makes its splitter
                super().update_splitters({att_id: att_val}, y, w, nominal_attributes)
                continue
            if type(splitter) is not HistogramSplitter:
                splitter.update(att_val, y, w)
                continue
            # HistogramSplitter.update (one round for w == 1), then Histogram.update:
            hist = splitter.hists[y]
            hist.n += 1
            data = hist.data
            if not data:
                data.append(Bin(att_val, att_val, 1))
                continue
            first = data[0]
            if att_val == first.left:
                # the lowest bin's left edge (most features are 0.0 most of the time): the
                # search below would stop at bin 0 (its right edge is not below it) and count
                first.count += 1
                continue
            lo = 0
            hi = len(data)
            while lo < hi:
                mid = (lo + hi) // 2
                if data[mid].right < att_val:
                    lo = mid + 1
                else:
                    hi = mid
            if lo == len(data):
                data.append(Bin(att_val, att_val, 1))
            elif att_val >= data[lo].left:
                data[lo].count += 1
                continue   # no bin added: nothing to merge
            else:
                data.insert(lo, Bin(att_val, att_val, 1))
            if len(data) > hist.max_bins:
                hist._shrink(1)

    def best_split_suggestions(self, criterion: Any, tree: Any) -> list[BranchFactory]:
        """River's ``LeafMajorityClass.best_split_suggestions`` (then ``HTLeaf``'s), each
        histogram feature's through :func:`best_histogram_split` when the criterion is
        River's information gain."""
        if type(criterion) is not InfoGainSplitCriterion:
            return super().best_split_suggestions(criterion, tree)  # type: ignore[no-any-return]
        maj_class = max(self.stats.values())   # LeafMajorityClass: a dominant class, no split
        if maj_class and maj_class / self.total_weight > tree.max_share_to_split:
            return [BranchFactory()]
        best = [BranchFactory()] if tree.merit_preprune else []   # HTLeaf: the null split
        pre_split_dist = self.stats
        pre_entropy = criterion.compute_entropy(pre_split_dist)
        for att_id, splitter in self.splitters.items():
            if type(splitter) is HistogramSplitter:
                best.append(best_histogram_split(splitter, criterion, pre_split_dist, att_id,
                                                 pre_entropy))
            else:
                best.append(splitter.best_evaluated_split_suggestion(
                    criterion, pre_split_dist, att_id, tree.binary_split))
        return best

    def __reduce_ex__(self, protocol: Any) -> Any:
        """Pickle as River's leaf (``accelerate`` brings this class back)."""
        return _as_river(self, LeafMajorityClass, protocol)


def best_histogram_split(splitter: HistogramSplitter, criterion: InfoGainSplitCriterion,
                         pre_split_dist: dict[Any, float], att_idx: Any,
                         pre_entropy: float) -> BranchFactory:
    """``splitter.best_evaluated_split_suggestion(criterion, pre_split_dist, att_idx, ...)``
    with the same floats, for less Python: a split attempt asks it of every feature at
    up to seven thresholds each, most of a label's cost on the labels that attempt one.

    River's expressions are kept as they are (the same builtins and criterion
    functions, in the same order); what goes is what does not depend on the
    threshold and was done again for each one: P(y) and its product with the
    total weight, the entropy before the split (``pre_entropy``, River's own
    ``compute_entropy`` of ``pre_split_dist``), each side's weight (summed once
    for the branch-fraction test and the entropy alike), and the generator and
    method dispatch per value.
    """
    hists = splitter.hists
    low = min(h.data[0].right for h in hists.values())
    high = min(h.data[-1].right for h in hists.values())
    if low >= high:
        return BranchFactory()
    n_thresholds = min(splitter.n_splits, max(map(len, hists.values())) - 1)
    thresholds = list(decimal_range(start=low, stop=high, num=n_thresholds))
    total_weight = sum(pre_split_dist.values())
    # per class in pre_split_dist's order (those with a histogram): total weight x P(y),
    # and P(x <= t | y) at every threshold
    classes = [(y, total_weight * (pre_split_dist[y] / total_weight),
                _cdf(hists[y], thresholds))
               for y in pre_split_dist if y in hists]
    min_frac = criterion.min_branch_fraction
    entropy_of = _entropy
    best = BranchFactory()
    for i, at in enumerate(thresholds):
        l_dist: dict[Any, float] = {}
        r_dist: dict[Any, float] = {}
        for y, weight_y, cdf in classes:
            p_xy = cdf[i]
            l_dist[y] = weight_y * p_xy
            r_dist[y] = weight_y * (1 - p_xy)
        # criterion.merit_of_split(pre_split_dist, [l_dist, r_dist]), written out
        l_w = sum(l_dist.values())
        r_w = sum(r_dist.values())
        total = 0.0 + l_w + r_w
        if total > 0 and (l_w / total > min_frac) + (r_w / total > min_frac) >= 2:
            post = (0.0 + l_w * entropy_of(l_dist) + r_w * entropy_of(r_dist)) / total
            merit = pre_entropy - post
        else:
            merit = -math.inf
        if merit > best.merit:
            best = BranchFactory(merit, att_idx, at, [l_dist, r_dist])
    return best


_PAST_THE_END = Bin(math.inf, math.inf, 0)


def _cdf(hist: Any, xs: list[float]) -> list[float]:
    """``list(hist.iter_cdf(xs))`` (``xs`` sorted): the same sums and divisions, walking
    the bins' list directly rather than through the histogram's sequence iterator."""
    n = hist.n
    if not n:
        return [0.0 for _ in xs]
    data = hist.data
    last = len(data)
    j = 0
    b = data[0]
    cdf = 0
    out = []
    for x in xs:
        while x >= b.right:
            cdf += b.count
            j += 1
            b = data[j] if j < last else _PAST_THE_END
        if x > b.left:
            out.append((cdf + b.count * (x - b.left) / (b.right - b.left)) / n)
            continue
        out.append(cdf / n)
    return out


def _entropy(dist: dict[Any, float]) -> float:
    """River's ``InfoGainSplitCriterion._compute_entropy_dict``, the same operations."""
    log2 = math.log2
    entropy = 0.0
    dis_sums = 0.0
    for d in dist.values():
        if d > 0.0:
            entropy -= d * log2(d)
            dis_sums += d
    return (entropy + dis_sums * log2(dis_sums)) / dis_sums if dis_sums > 0.0 else 0.0


class HoeffdingTree(tree.HoeffdingTreeClassifier):
    """``HoeffdingTreeClassifier`` whose majority-class leaves are ``FastLeaf``."""

    def _new_leaf(self, initial_stats: Any = None, parent: Any = None) -> Any:
        leaf = super()._new_leaf(initial_stats, parent)
        if type(leaf) is LeafMajorityClass:
            leaf.__class__ = FastLeaf
        return leaf

    def __reduce_ex__(self, protocol: Any) -> Any:
        """Pickle as River's tree (``accelerate`` brings this class back)."""
        return _as_river(self, tree.HoeffdingTreeClassifier, protocol)


def _as_river(obj: Any, river_class: type, protocol: Any) -> Any:
    """``obj``'s default pickling (its state), made by ``river_class`` instead of its own
    class: the snapshot names River's classes only (``operators.snapshot`` loads no other)."""
    _, _, *rest = object.__reduce_ex__(obj, max(2, protocol))
    return (copyreg._reconstructor, (river_class, object, None), *rest)


def accelerate(model: Any) -> Any:
    """``model`` itself, a River Hoeffding tree made a :class:`HoeffdingTree` (its
    majority-class leaves ``FastLeaf``); anything else unchanged."""
    if type(model) is tree.HoeffdingTreeClassifier:
        model.__class__ = HoeffdingTree
    if type(model) is not HoeffdingTree:
        return model
    root = model._root
    if root is not None:
        for leaf in (root.iter_leaves() if isinstance(root, DTBranch) else (root,)):
            if type(leaf) is LeafMajorityClass:
                leaf.__class__ = FastLeaf
    return model
