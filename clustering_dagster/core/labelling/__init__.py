"""Keyword labels of every cluster and the tree of levels they name."""
