"""The terminal commands that read results: thin wrappers over `core.results`, `core.search`,
`core.export` and `core.map_page`, printing rich tables or, with `--json`, JSON."""
