"""Dagster-free core: one pure stage per module (ingest, embed, project, cluster, label, hierarchy, storage)."""
