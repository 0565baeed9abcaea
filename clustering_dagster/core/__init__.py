"""Dagster-free core, in the pipeline's order: `config` (settings, run configurations),
`data_in` (datasets and their texts), `embedding`, `projection` (UMAP), `clustering` (levels,
lineage), `labelling` (keyword labels, the tree), `llm` (the cached, bounded litellm client),
`naming` (LLM summaries and the merged tree), `storage` (the DuckDB store and its snapshots) and
`results` (reading, search, exports and the map). `errors` holds the one error users see."""
