"""Projections: UMAP into a low-dimensional cluster space and a 2-D map, optional PCA first."""

import warnings
from dataclasses import dataclass

import numpy as np

from .run_config import ProjectionConfig

# Below this many distinct points UMAP's graph is meaningless: fall back to PCA coordinates.
MIN_POINTS_FOR_UMAP = 16
# Up to this many points the neighbour graph is exact (brute force, seconds) instead of
# pynndescent's approximation, whose numba compilation alone costs ~30 s in every new process.
MAX_POINTS_FOR_EXACT_NEIGHBOURS = 50_000


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


def neighbours(
    features: np.ndarray,
    k: int,
    seed: int | None,
    exact_up_to: int = MAX_POINTS_FOR_EXACT_NEIGHBOURS,
) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest neighbours of every point (itself first), shared by both UMAP fits."""
    if len(features) <= exact_up_to:
        from sklearn.neighbors import NearestNeighbors

        distances, indices = NearestNeighbors(n_neighbors=k).fit(features).kneighbors(features)
        return indices, distances.astype(np.float32)
    from umap.umap_ import nearest_neighbors

    indices, distances, _ = nearest_neighbors(
        features, k, "euclidean", {}, False, np.random.RandomState(seed), n_jobs=-1
    )
    return indices, distances


def project(vectors: np.ndarray, config: ProjectionConfig) -> Projection:
    """Project distinct vectors into the cluster space and the 2-D map."""
    if len(vectors) < MIN_POINTS_FOR_UMAP:
        return _small_projection(vectors, config)
    import umap

    features = vectors.astype(np.float32)
    if config.pca_components and config.pca_components < vectors.shape[1]:
        features = _pca(features, config.pca_components).astype(np.float32)
    n_neighbors = min(config.n_neighbors, len(vectors) - 1)
    common = dict(
        n_neighbors=n_neighbors,
        metric="euclidean",
        random_state=config.random_state,
        n_jobs=1 if config.random_state is not None else -1,
        precomputed_knn=neighbours(features, n_neighbors, config.random_state),
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(knn_search_index|transform).*")
        cluster_space = umap.UMAP(
            n_components=config.n_components, min_dist=config.min_dist, **common
        ).fit_transform(features)
        map_2d = umap.UMAP(n_components=2, min_dist=config.map_min_dist, **common).fit_transform(
            features
        )
    return Projection(cluster_space.astype(np.float32), map_2d.astype(np.float32), "umap")
