"""A River adaptive random forest, read into flat arrays for fast scoring.

River's :class:`~river.forest.ARFClassifier` learns well on session
snapshots but predicts slowly (about 250 µs a call for 10 trees: a
recursive generator walk per tree and a dict per leaf), and the trust score
is computed on every page view. Learning happens once per closed session, so
the forest is *read* after it learns (:func:`compile_forest`) into one flat
node table per tree, and scoring walks those tables: about 10 µs for 6
trees. :meth:`CompiledForest.predict` equals River's ``predict_proba_one``
(a test holds them to 1e-9), including ARF's weighted vote (each tree's
class distribution times its running accuracy).

Only the node types River builds from numeric features are read (binary
numeric splits, majority-class leaves); anything else makes
:func:`compile_forest` return ``None`` and the caller falls back to River.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from river import forest
from river.tree.nodes.branch import NumericBinaryBranch
from river.tree.nodes.htc_nodes import LeafMajorityClass

#: ``feature`` value of a leaf in a node table.
LEAF = -1


def make_forest(seed: int) -> forest.ARFClassifier:
    """The trust forest: 6 trees, majority-class leaves, a 200-sample grace
    period, no drift detectors.

    Chosen on the prequential comparison of ``benchmarks/trust_learners.py``
    (prefix AUC on our simulator, the independent generator's three sites
    and DIGINETICA): 6 trees scored as 10 did, at 60% of the learning cost;
    a grace period of 200 instead of River's 50 was as good or better and
    splits less often; the drift detectors (ADWIN per tree) changed nothing
    measurable on stationary traffic and cost time. Majority-class leaves
    (instead of naive Bayes) are what makes the forest compilable.
    """
    return forest.ARFClassifier(
        n_models=6,
        grace_period=200,
        leaf_prediction="mc",
        drift_detector=None,
        warning_detector=None,
        seed=seed,
    )


@dataclass(frozen=True, slots=True)
class _Tree:
    """One tree as parallel arrays; node 0 is the root. A leaf has
    ``feature == LEAF`` and its weighted votes for and against in
    ``yes``/``total``; a split sends ``x[feature] <= threshold`` left."""

    feature: tuple[int, ...]
    threshold: tuple[float, ...]
    left: tuple[int, ...]
    right: tuple[int, ...]
    yes: tuple[float, ...]
    total: tuple[float, ...]


class CompiledForest:
    """A snapshot of an ARF's trees for fast, exact scoring.

    >>> from river import forest
    >>> arf = make_forest(seed=1)
    >>> names = ("a", "b")
    >>> for i in range(600):
    ...     arf.learn_one({"a": i % 10 / 10, "b": i % 7 / 7}, i % 10 > 6)
    >>> fast = compile_forest(arf, names)
    >>> x = {"a": 0.8, "b": 0.1}
    >>> abs(fast.predict([0.8, 0.1]) - arf.predict_proba_one(x)[True]) < 1e-9
    True
    """

    __slots__ = ("trees",)

    def __init__(self, trees: Sequence[_Tree]) -> None:
        self.trees = tuple(trees)

    def predict(self, vector: Sequence[float]) -> float:
        """P(True | features), in [0, 1]; 0 while no tree has seen data (as
        River, whose empty vote has no ``True`` entry)."""
        yes = total = 0.0
        for tree in self.trees:
            feature, threshold, left, right = tree.feature, tree.threshold, tree.left, tree.right
            node = 0
            f = feature[0]
            while f != LEAF:
                node = left[node] if vector[f] <= threshold[node] else right[node]
                f = feature[node]
            yes += tree.yes[node]
            total += tree.total[node]
        return yes / total if total > 0.0 else 0.0


def compile_forest(arf: forest.ARFClassifier, names: Sequence[str]) -> CompiledForest | None:
    """Read ``arf``'s trees into a :class:`CompiledForest` over features in
    ``names`` order, or ``None`` when a node type is not supported."""
    index = {name: i for i, name in enumerate(names)}
    trees: list[_Tree] = []
    for i, member in enumerate(arf.data if len(arf) else ()):
        metric = float(arf._metrics[i].get())
        weight = metric if not arf.disable_weighted_vote and metric > 0.0 else 1.0
        tree = _read_tree(member._root, index, weight)
        if tree is None:
            return None
        trees.append(tree)
    return CompiledForest(trees)


def _read_tree(root: Any, index: dict[str, int], weight: float) -> _Tree | None:
    feature: list[int] = []
    threshold: list[float] = []
    left: list[int] = []
    right: list[int] = []
    yes: list[float] = []
    total: list[float] = []

    def add(node: Any) -> int | None:
        at = len(feature)
        feature.append(LEAF)
        threshold.append(0.0)
        left.append(0)
        right.append(0)
        yes.append(0.0)
        total.append(0.0)
        if node is None:
            return at
        if isinstance(node, NumericBinaryBranch):
            low, high = node.children
            feature[at] = index[node.feature]
            threshold[at] = float(node.threshold)
            low_at, high_at = add(low), add(high)
            if low_at is None or high_at is None:
                return None
            left[at], right[at] = low_at, high_at
            return at
        if isinstance(node, LeafMajorityClass):
            # River normalises the leaf's class counts, then weights the vote
            stats = node.stats
            count = sum(stats.values())
            if count > 0:
                yes[at] = weight * stats.get(True, 0.0) / count
                total[at] = weight
            return at
        return None

    if add(root) is None:
        return None
    nodes = (tuple(feature), tuple(threshold), tuple(left), tuple(right))
    return _Tree(*nodes, yes=tuple(yes), total=tuple(total))
