"""How many neighbours UMAP gives each text: as configured, or (`auto`) about the smallest cluster
the finest level looks for, so that a small topic's texts are mostly each other's neighbours and
UMAP does not blur it into the topics around it."""

from ..clustering.cluster import fitted_cluster_size
from ..config.run_config import ProjectionConfig, RunConfig

# `auto` stays within these: 30 served the large sets (fewer split their topics differently and
# weakened the levels above); at 1,000 texts the finest size is 5-6 and 10 neighbours found the
# most topics (docs/configuration.md, Granularity).
AUTO_NEIGHBOURS = (10, 30)


def resolved_projection(config: RunConfig, distinct_texts: int) -> ProjectionConfig:
    """The run configuration's projection settings for `distinct_texts` texts, with `auto`
    n_neighbors replaced by the finest level's minimum cluster size among the texts UMAP fits
    (for KMeans, texts per cluster), kept within AUTO_NEIGHBOURS."""
    projection = config.projection
    if projection.n_neighbors != "auto":
        return projection
    fitted = min(distinct_texts, projection.fit_sample)
    finest = config.levels[-1]
    if finest.method == "kmeans":
        size = fitted / finest.k
    else:
        size = fitted_cluster_size(finest, fitted, max(distinct_texts, 1))
    low, high = AUTO_NEIGHBOURS
    return projection.model_copy(update={"n_neighbors": int(min(high, max(low, round(size))))})
