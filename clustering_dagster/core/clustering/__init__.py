"""Cluster levels: the finest fitted (HDBSCAN or KMeans), those above merged; stable ids and
lineage across runs; appended texts voted in; agreement with ground truth."""
