"""The cluster space and the 2-D map: PCA then UMAP, fitted on a sample of large data."""
