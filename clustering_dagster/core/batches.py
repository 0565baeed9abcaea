"""How many rows each stage handles at a time: the one place to trade memory for speed. A row of
a 384-d float32 vector is 1.5 KB, so 65,536 rows are about 100 MB."""

# A dataset's own vectors read from its Parquet file, per batch.
PARQUET_ROWS = 65_536
# Rows normalised at a time when a large matrix is read as unit vectors without a full copy.
UNIT_ROWS = 65_536
# Rows per Arrow batch when vectors stream out of DuckDB into one preallocated matrix.
STORE_ROWS = 100_000
# Points projected by PCA or placed per batch, and searched per batch in a faiss index.
PROJECTION_ROWS = 50_000
# Points compared with the centroids at a time.
CENTROID_ROWS = 100_000
