"""Dagster-free core: one pure stage per module (ingest, embed, project, cluster, label, hierarchy,
summarize, merge, storage), plus `llm`, the cached, bounded litellm client the last stages use."""
