"""The pipeline's stages, in the order a run executes them: each asset, the assets it reads and
the tables it writes. The one source of the assets' dependencies, of which table is computed from
which (what a publication withdraws) and of the order the fault benchmarks stop runs in."""

# asset: (the assets it reads, the versioned tables it writes)
STAGES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "raw_texts": ((), ("texts", "facets", "private_rows")),
    "embeddings": (("raw_texts",), ("embeddings",)),
    "projections": (("embeddings",), ("projections",)),
    "cluster_levels": (
        ("projections",),
        (
            "assignments",
            "cluster_centroids",
            "cluster_lineage",
            "cluster_changes",
            "hidden_clusters",
        ),
    ),
    "cluster_labels": (("cluster_levels",), ("cluster_labels",)),
    "incremental_assignments": (("cluster_levels",), ("incremental_assignments",)),
    "cluster_hierarchy": (("cluster_labels",), ("hierarchy",)),
    "cluster_summaries": (("cluster_labels",), ("cluster_summaries",)),
    "merged_hierarchy": (("cluster_summaries", "cluster_hierarchy"), ("merged_hierarchy",)),
    "cluster_map": (("cluster_hierarchy", "merged_hierarchy"), ()),
}

# The asset that writes each versioned table (named in "materialise ... first" errors).
WRITTEN_BY = {table: asset for asset, (_, tables) in STAGES.items() for table in tables}

# The tables each table is computed from.
INPUTS = {
    table: {read for upstream in reads for read in STAGES[upstream][1]}
    for _, (reads, tables) in STAGES.items()
    for table in tables
    if reads
}


def reads(asset: str) -> list[str]:
    """The assets `asset` reads (its Dagster deps)."""
    return list(STAGES[asset][0])
