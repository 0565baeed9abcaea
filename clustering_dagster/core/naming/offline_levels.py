"""The partition's offline upper levels (the stored `hierarchy`) as stand-in parents.

When the model proposes no parents for a neighbourhood of the merged tree, its children keep the
parents the offline hierarchy gives them, so a parent is never named after one of its children.
"""

from collections.abc import Sequence

import numpy as np
import polars as pl


class OfflineLevels:
    """Per upper level of `hierarchy` (rows with node_id, parent_id, level and cluster_id; the
    finest level holds the base clusters), the node of every base cluster, coarsest level first.
    `base_ids` are the base clusters' ids, `base_sizes` their sizes, in the same order."""

    def __init__(self, hierarchy: pl.DataFrame, base_ids: Sequence[int], base_sizes: np.ndarray):
        parent_of = dict(zip(hierarchy["node_id"], hierarchy["parent_id"], strict=True))
        finest = hierarchy.filter(pl.col("level") == hierarchy["level"].max())
        node_of = dict(zip(finest["cluster_id"], finest["node_id"], strict=True))
        missing = [c for c in base_ids if c not in node_of]
        if missing:
            raise LookupError(
                f"the hierarchy lacks base clusters {missing[:5]}: materialise cluster_hierarchy"
            )
        chains = []  # per base cluster: its ancestors, coarsest first
        for cluster in base_ids:
            chain, node = [], parent_of[node_of[cluster]]
            while node is not None:
                chain.append(node)
                node = parent_of[node]
            chains.append(chain[::-1])
        depth = min(map(len, chains), default=0)
        self.levels = [
            np.unique([chain[d] for chain in chains], return_inverse=True)[1] for d in range(depth)
        ]
        self.base_sizes = np.asarray(base_sizes, dtype=np.int64)

    def stand_in_parents(
        self, base_to_child: np.ndarray, groups: list[np.ndarray], target: int
    ) -> list[np.ndarray]:
        """For each group of children (indices of the children that `base_to_child` maps base
        clusters to), the index of each child's stand-in parent, counted from 0 over all groups.
        The level used is the one whose node count is closest to `target` of those with fewer
        nodes than there are children; each child goes to the node holding most of its texts,
        and children of the same node share it across groups. Without such a level each group
        is one parent."""
        n_children = int(base_to_child.max()) + 1
        usable = [level for level in self.levels if level.max() + 1 < n_children]
        if not usable:
            return [np.full(len(group), g, dtype=np.int64) for g, group in enumerate(groups)]
        level = min(usable, key=lambda nodes: (abs(nodes.max() + 1 - target), -nodes.max()))
        votes = np.zeros((n_children, level.max() + 1))
        np.add.at(votes, (base_to_child, level), self.base_sizes)
        chosen = votes[np.concatenate(groups)].argmax(1)
        parents = np.unique(chosen, return_inverse=True)[1]
        return np.split(parents, np.cumsum([len(group) for group in groups])[:-1])
