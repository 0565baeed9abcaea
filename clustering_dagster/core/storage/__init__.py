"""The DuckDB store: versioned rows of every stage, published per partition in one snapshot."""
