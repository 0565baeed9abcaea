"""How many merged levels stand above the clusters, and how many nodes each has: as many levels
as keep every node's children readable (about `max_branching` at most) and the top about
`top_clusters`, so a tree of 80 clusters gets two levels above them and one of 2,000 four."""

import math

from ..config.run_config import LevelConfig, UpperLevelsConfig


def upper_level_names(count: int) -> list[str]:
    """Top first: coarse, then medium, then medium_2, medium_3, ... down to the level above the
    clusters (so a level keeps its name, and its clusters their ids, when one is added below)."""
    names = ["coarse", "medium"][:count]
    return names + [f"medium_{depth}" for depth in range(2, count)]


def upper_levels(n_clusters: int, spec: UpperLevelsConfig) -> list[LevelConfig]:
    """Merge levels, top first, above a level of `n_clusters` clusters: L levels, the fewest with
    (n / top_clusters) ** (1 / L) <= max_branching (at least one); each level has about n / b**d
    nodes, d levels up, where b is that ratio but never below min_branching."""
    ratio = max(n_clusters / spec.top_clusters, 1.0)
    count = max(1, math.ceil(math.log(ratio) / math.log(spec.max_branching) - 1e-9))
    branching = max(spec.min_branching, ratio ** (1 / count))
    names = upper_level_names(count)
    return [
        LevelConfig(
            name=name,
            method="merge",
            n_clusters=max(1, round(n_clusters / branching ** (count - depth))),
            linkage=spec.linkage,
            min_gap=spec.min_gap if depth == 0 else None,
        )
        for depth, name in enumerate(names)
    ]
