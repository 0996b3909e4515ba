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
from typing import Any

from river import tree
from river.sketch.histogram import Bin
from river.tree.nodes.branch import DTBranch
from river.tree.nodes.htc_nodes import LeafMajorityClass
from river.tree.splitter import HistogramSplitter


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

    def __reduce_ex__(self, protocol: Any) -> Any:
        """Pickle as River's leaf (``accelerate`` brings this class back)."""
        return _as_river(self, LeafMajorityClass, protocol)


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
