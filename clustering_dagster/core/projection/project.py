"""Projections: UMAP into a low-dimensional cluster space and a 2-D map, optional PCA first.

Up to `fit_sample` points are projected by UMAP itself. Past that, PCA and both UMAPs are fitted
on a random sample of that many points, and every other point is placed at the distance-weighted
mean of the positions of its nearest sample points (in the PCA space), batch by batch: the cost
grows linearly with the number of points beyond the sample. The projection says which points
were fitted: clustering fits on those and lets the others follow their nearest fitted texts.
"""

import functools
import warnings
from dataclasses import dataclass

import numpy as np
import polars as pl

from ..batches import PROJECTION_ROWS as BATCH_ROWS
from ..config.run_config import ProjectionConfig
from ..embedding.embed import normalise_rows
from .anchors import Anchors

# Below this many distinct points UMAP's graph is meaningless: fall back to PCA coordinates.
MIN_POINTS_FOR_UMAP = 16
# Up to this many points the neighbour graph is exact (brute force, seconds) instead of
# pynndescent's approximation, whose numba compilation alone costs ~30 s in every new process.
MAX_POINTS_FOR_EXACT_NEIGHBOURS = 50_000
# Sample points whose positions are averaged to place a point outside the sample.
PLACEMENT_NEIGHBOURS = 10
# UMAP's numba kernels that umap-learn 0.5 compiles afresh in every process (about 5 s here, more
# on a loaded machine: every run, every step process): module -> names, compiled through numba's
# on-disk cache instead. The layout's two share one Python function: each is cached under its name.
UNCACHED_KERNELS = {
    "umap.umap_": ("smooth_knn_dist", "compute_membership_strengths"),
    "umap.layouts": (
        "_nb_optimize_layout_euclidean_single_epoch",
        "_nb_optimize_layout_euclidean_single_epoch_parallel",
    ),
}


@dataclass(frozen=True)
class Projection:
    cluster_space: np.ndarray  # (n, n_components) float32
    map_2d: np.ndarray  # (n, 2) float32
    method: str
    fitted: np.ndarray  # (n,) bool: projected by the fit itself, not placed by its neighbours


def _pca(vectors: np.ndarray, n_components: int):
    """An unfitted PCA of at most n_components for these vectors."""
    from sklearn.decomposition import PCA

    return PCA(n_components=min(n_components, *vectors.shape), random_state=0)


def _pad(coords: np.ndarray, width: int) -> np.ndarray:
    out = np.zeros((coords.shape[0], width), np.float32)
    out[:, : min(width, coords.shape[1])] = coords[:, :width]
    return out


def _small_projection(vectors: np.ndarray, config: ProjectionConfig) -> Projection:
    coords = (
        _pca(vectors, config.n_components).fit_transform(vectors) if len(vectors) > 1 else vectors
    )
    fitted = np.ones(len(vectors), bool)
    return Projection(_pad(coords, config.n_components), _pad(coords, 2), "pca", fitted)


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


def features(vectors: np.ndarray, sample: np.ndarray, config: ProjectionConfig) -> np.ndarray:
    """What UMAP sees: the vectors, or their PCA projection fitted on the sample, float32."""
    if not config.pca_components or config.pca_components >= vectors.shape[1]:
        return vectors.astype(np.float32, copy=False)
    if len(sample) == len(vectors):
        return _pca(vectors, config.pca_components).fit_transform(vectors).astype(np.float32)
    pca = _pca(vectors[sample], config.pca_components).fit(vectors[sample])
    out = np.empty((len(vectors), pca.n_components_), np.float32)
    for start in range(0, len(vectors), BATCH_ROWS):
        out[start : start + BATCH_ROWS] = pca.transform(vectors[start : start + BATCH_ROWS])
    return out


def place(
    space: np.ndarray, rows: np.ndarray, anchors: np.ndarray, positions: list[np.ndarray], k: int
) -> list[np.ndarray]:
    """Each of `space[rows]` at the inverse-distance-weighted mean of `positions` (one array per
    space) of its k nearest `anchors`, batch by batch."""
    index = Anchors(anchors)
    placed = [np.empty((len(rows), p.shape[1]), np.float32) for p in positions]
    for start in range(0, len(rows), BATCH_ROWS):
        weights, nearest = index.nearest(space[rows[start : start + BATCH_ROWS]], k)
        for out, position in zip(placed, positions, strict=True):
            out[start : start + len(nearest)] = np.einsum("ij,ijd->id", weights, position[nearest])
    return placed


def representatives(space: np.ndarray, sample: np.ndarray) -> np.ndarray:
    """Each sampled point as the mean of the round(n / sample size) points nearest to it among
    all n (itself included): the share of the data it stands for, so that UMAP on the sample sees
    the density of all the points (on Banking77 with a 38% sample: fine NMI +0.008)."""
    share = round(len(space) / len(sample))
    if share <= 1:
        return space[sample]
    index = Anchors(space)
    out = np.empty((len(sample), space.shape[1]), np.float32)
    step = max(1, BATCH_ROWS // share)
    for start in range(0, len(sample), step):
        weights, nearest = index.nearest(space[sample[start : start + step]], share)
        found = (weights > 0)[:, :, None]  # fewer than `share` found: average those that were
        out[start : start + len(nearest)] = (space[nearest] * found).sum(1) / found.sum(1)
    return out


@functools.cache
def _umap():
    """The umap module, its UNCACHED_KERNELS recompiled with numba's on-disk cache (next to
    umap's own cached kernels; where that folder is read-only numba uses a user cache folder, and
    without either the kernels stay as they are)."""
    import importlib

    import umap

    for module_name, names in UNCACHED_KERNELS.items():
        module = importlib.import_module(module_name)
        for name in names:
            kernel = getattr(module, name, None)  # another umap-learn may lack it
            cached = None if kernel is None else _disk_cached(kernel, name)
            if cached is not None:
                setattr(module, name, cached)
    return umap


def _disk_cached(kernel, name: str):
    """`kernel` (a numba dispatcher) compiled with cache=True, its Python function copied under
    `name` (numba names the cache files after it); None when numba has nowhere to cache."""
    import types

    import numba

    func = kernel.py_func
    copy = types.FunctionType(func.__code__, func.__globals__, name, func.__defaults__)
    copy.__qualname__ = name
    options = {k: v for k, v in kernel.targetoptions.items() if k != "nopython"}
    try:
        return numba.njit(cache=True, locals=kernel.locals, **options)(copy)
    except RuntimeError:  # no cache folder numba can write
        return None


def project(vectors: np.ndarray, config: ProjectionConfig) -> Projection:
    """Project distinct vectors into the cluster space and the 2-D map: by UMAP up to
    `config.fit_sample` points, beyond that UMAP on a random sample and the rest placed by it."""
    if len(vectors) < MIN_POINTS_FOR_UMAP:
        return _small_projection(vectors, config)
    if config.n_neighbors == "auto":
        raise ValueError(
            "n_neighbors is auto: resolve it first (neighbourhood.resolved_projection)"
        )
    umap = _umap()

    n = len(vectors)
    sample = np.arange(n)
    if n > config.fit_sample:
        rng = np.random.default_rng(config.random_state)
        sample = np.sort(rng.choice(n, config.fit_sample, replace=False))
    space = features(vectors, sample, config)
    sampled = representatives(space, sample)
    n_neighbors = min(config.n_neighbors, len(sample) - 1)
    common = dict(
        n_neighbors=n_neighbors,
        metric="euclidean",
        random_state=config.random_state,
        n_jobs=1 if config.random_state is not None else -1,
        precomputed_knn=neighbours(sampled, n_neighbors, config.random_state),
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(knn_search_index|transform).*")
        cluster_space = umap.UMAP(
            n_components=config.n_components, min_dist=config.min_dist, **common
        ).fit_transform(sampled)
        map_2d = umap.UMAP(n_components=2, min_dist=config.map_min_dist, **common).fit_transform(
            sampled
        )
    fitted = np.zeros(n, bool)
    fitted[sample] = True
    if len(sample) == n:
        return Projection(
            cluster_space.astype(np.float32), map_2d.astype(np.float32), "umap", fitted
        )
    rest = np.setdiff1d(np.arange(n), sample, assume_unique=True)
    out = [np.empty((n, p.shape[1]), np.float32) for p in (cluster_space, map_2d)]
    placed = place(space, rest, space[sample], [cluster_space, map_2d], PLACEMENT_NEIGHBOURS)
    for whole, fit, rest_coords in zip(out, (cluster_space, map_2d), placed, strict=True):
        whole[sample], whole[rest] = fit, rest_coords
    return Projection(out[0], out[1], f"umap on a sample of {len(sample)}, the rest placed", fitted)


def distinct_rows(rows: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(the first row of each distinct text, and for every row the index of its text among
    those): a text given many times is projected once."""
    first_row = rows.with_row_index("i").select(pl.col("i").min().over("text_hash"))
    first = np.flatnonzero(rows["text_hash"].is_first_distinct().to_numpy())
    return first, np.searchsorted(first, first_row.to_series().to_numpy())


def project_rows(
    rows: pl.DataFrame,
    distinct: np.ndarray,
    inverse: np.ndarray,
    normalize: bool,
    config: ProjectionConfig,
    input_hash: str,
) -> tuple[pl.DataFrame, str]:
    """The projections table of a partition's texts (`rows`: row_idx, text_hash) from the vectors
    of its distinct texts (`distinct_rows`), repeats sharing their text's place; and the method."""
    if normalize:
        distinct = normalise_rows(distinct)
    result = project(distinct, config)
    frame = rows.select("row_idx").with_columns(
        cluster_space=pl.Series(
            result.cluster_space[inverse],
            dtype=pl.Array(pl.Float32, result.cluster_space.shape[1]),
        ).cast(pl.List(pl.Float32)),
        map_x=pl.Series(result.map_2d[inverse, 0]),
        map_y=pl.Series(result.map_2d[inverse, 1]),
        input_hash=pl.lit(input_hash),
        fitted=pl.Series(result.fitted[inverse]),
    )
    return frame, result.method
