"""Leakage groups and splits, shared by every source: union-find over the adapters' links, whole
groups assigned to train/val/test, and the check that no group is in two splits.
"""

from __future__ import annotations

import logging
import typing
from collections import defaultdict
from typing import Any, Mapping

import numpy as np
import pandas as pd

from .sources import (
    Split,
    VideoEntry,
)

logger = logging.getLogger(__name__)

# When forced splits disagree inside one group, the group follows the first of these:
# a video officially held out for testing must never be trained on.
SPLIT_PRIORITY: tuple[Split, ...] = ("test", "val", "train")


class _UnionFind:
    """Union-find over string nodes; a component's root is its smallest node (stable names)."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, node: str) -> str:
        self.parent.setdefault(node, node)
        root = node
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[node] != root:  # path compression
            self.parent[node], node = root, self.parent[node]
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            lo, hi = sorted((ra, rb))
            self.parent[hi] = lo


def leakage_groups(name: str, entries: list[VideoEntry]) -> list[str]:
    """Group id of each entry: union-find over its links, prefixed with the source name."""
    uf = _UnionFind()
    for entry in entries:
        uf.find(entry.links[0])
        for link in entry.links[1:]:
            uf.union(entry.links[0], link)
    # Name a group after its smallest original/identity node when it has one (e.g. the FF++
    # original "youtube/004" rather than the fake "NeuralTextures/004_982").
    fake_nodes = {e.links[0] for e in entries if e.label == "fake"}
    component_nodes: dict[str, list[str]] = defaultdict(list)
    for node in uf.parent:
        component_nodes[uf.find(node)].append(node)
    group_name = {root: min([n for n in nodes if n not in fake_nodes] or nodes)
                  for root, nodes in component_nodes.items()}
    return [f"{name}-{group_name[uf.find(e.links[0])]}" for e in entries]


def split_groups(
    group_sizes: Mapping[str, int], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, Split]:
    """Assign whole groups to splits so that each split's share of videos meets its fraction.

    Groups are sorted by id, shuffled with ``np.random.default_rng(seed)``, then each goes
    greedily to the split furthest below its target video count. When there are at least as
    many non-empty groups as splits with a positive fraction, every such split is made
    non-empty by moving the smallest group of the most over-filled split.

    Args:
        group_sizes: Group id -> number of videos (0 allowed, e.g. only missing videos).
        val_fraction: Target share of videos in val.
        test_fraction: Target share of videos in test.
        seed: Shuffle seed; the same inputs and seed give the same assignment.

    Returns:
        Group id -> split.
    """
    ids = sorted(group_sizes)
    order = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
    position = {g: i for i, g in enumerate(order)}
    fractions = {"test": test_fraction, "val": val_fraction, "train": 1.0 - val_fraction - test_fraction}
    active = [s for s in SPLIT_PRIORITY if fractions[s] > 0]
    total = sum(group_sizes.values())
    target = {s: fractions[s] * total for s in active}
    count = dict.fromkeys(active, 0)
    members: dict[str, list[str]] = {s: [] for s in active}
    for g in order:
        best = max(active, key=lambda s: target[s] - count[s])  # ties: test, val, train
        members[best].append(g)
        count[best] += group_sizes[g]
    nonempty = [g for g in ids if group_sizes[g] > 0]
    if len(nonempty) < len(active):
        if nonempty:
            logger.warning("only %d non-empty group(s) for %d splits: some split stays empty",
                           len(nonempty), len(active))
    else:
        for split in active:
            if count[split] > 0:
                continue
            donors = [s for s in active if sum(group_sizes[g] > 0 for g in members[s]) > 1]
            donor = max(donors, key=lambda s: count[s] - target[s])
            moved = min((g for g in members[donor] if group_sizes[g] > 0),
                        key=lambda g: (group_sizes[g], position[g]))
            members[donor].remove(moved)
            members[split].append(moved)
            count[donor] -= group_sizes[moved]
            count[split] += group_sizes[moved]
    return {g: typing.cast(Split, s) for s, gs in members.items() for g in gs}


def leakage_check(manifest: pd.DataFrame) -> dict[str, Any]:
    """Count groups that appear in more than one split (must be 0).

    Args:
        manifest: Manifest with ``group`` and ``split`` columns.

    Returns:
        ``{"groups_in_multiple_splits": n, "groups": [...], "n_groups": total}``.
    """
    splits_per_group = manifest.groupby("group")["split"].nunique()
    leaking = sorted(splits_per_group[splits_per_group > 1].index)
    return {"groups_in_multiple_splits": len(leaking), "groups": leaking,
            "n_groups": int(splits_per_group.size)}
