"""Text embeddings: local sentence-transformers (one process or a worker pool) or an API."""
