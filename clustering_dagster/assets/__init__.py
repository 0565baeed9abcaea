"""Thin asset definitions over the core stages: one asset per stage."""

from .cluster_hierarchy import cluster_hierarchy
from .cluster_labels import cluster_labels
from .cluster_levels import cluster_levels
from .cluster_map import cluster_map
from .cluster_summaries import cluster_summaries
from .embeddings import embeddings
from .incremental_assignments import incremental_assignments
from .merged_hierarchy import merged_hierarchy
from .projections import projections
from .raw_texts import raw_texts

ALL_ASSETS = [
    raw_texts,
    embeddings,
    projections,
    cluster_levels,
    cluster_labels,
    cluster_hierarchy,
    cluster_summaries,
    merged_hierarchy,
    cluster_map,
    incremental_assignments,
]

# The LLM stages, and what they read: the texts clustered, keyword-labelled and in a tree.
LLM_ASSETS = [cluster_summaries, merged_hierarchy]
LLM_INPUTS = [raw_texts, embeddings, projections, cluster_levels, cluster_labels, cluster_hierarchy]
