"""Names from an LLM: cluster summaries and the merged tree of parents above them."""
