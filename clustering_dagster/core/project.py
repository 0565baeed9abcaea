"""Projections: UMAP into a low-dimensional cluster space and a 2-D map, optional PCA first."""

from dataclasses import dataclass

import numpy as np

from .run_config import ProjectionConfig

# Below this many distinct points UMAP's graph is meaningless: fall back to PCA coordinates.
MIN_POINTS_FOR_UMAP = 16


@dataclass(frozen=True)
class Projection:
    cluster_space: np.ndarray  # (n, n_components) float32
    map_2d: np.ndarray  # (n, 2) float32
    method: str


def _pca(vectors: np.ndarray, n_components: int) -> np.ndarray:
    from sklearn.decomposition import PCA

    n_components = min(n_components, *vectors.shape)
    return PCA(n_components=n_components, random_state=0).fit_transform(vectors)


def _pad(coords: np.ndarray, width: int) -> np.ndarray:
    out = np.zeros((coords.shape[0], width), np.float32)
    out[:, : min(width, coords.shape[1])] = coords[:, :width]
    return out


def _small_projection(vectors: np.ndarray, config: ProjectionConfig) -> Projection:
    coords = _pca(vectors, config.n_components) if len(vectors) > 1 else vectors
    return Projection(_pad(coords, config.n_components), _pad(coords, 2), "pca")


def project(vectors: np.ndarray, config: ProjectionConfig) -> Projection:
    """Project distinct vectors; both UMAP fits share one nearest-neighbour graph."""
    if len(vectors) < MIN_POINTS_FOR_UMAP:
        return _small_projection(vectors, config)
    import umap

    features = vectors
    if config.pca_components and config.pca_components < vectors.shape[1]:
        features = _pca(vectors, config.pca_components)
    n_neighbors = min(config.n_neighbors, len(vectors) - 1)
    common = dict(n_neighbors=n_neighbors, metric="euclidean", random_state=config.random_state,
                  n_jobs=1 if config.random_state is not None else -1)
    cluster_fit = umap.UMAP(n_components=config.n_components, min_dist=config.min_dist, **common)
    cluster_space = cluster_fit.fit_transform(features)
    if not cluster_fit._small_data:  # above 4096 points: reuse the approximate neighbour graph
        common["precomputed_knn"] = (
            cluster_fit._knn_indices, cluster_fit._knn_dists, cluster_fit._knn_search_index
        )
    map_fit = umap.UMAP(n_components=2, min_dist=config.map_min_dist, **common)
    map_2d = map_fit.fit_transform(features)
    return Projection(cluster_space.astype(np.float32), map_2d.astype(np.float32), "umap")
