import numpy as np
import polars as pl
from dagster import AssetExecutionContext, MaterializeResult
from dagster_duckdb import DuckDBResource

from ..core.labelling.label import LevelTexts, label_sample, make_labeler
from ..core.naming.merge import stored_encoder
from ..core.privacy.threshold import visible_levels
from ..core.storage.store import partition_vectors, read_partition
from ..resources import ClusteringSettings, connection
from .common import clustering_asset, markdown_table, stage, write_result

LARGEST_SHOWN = 10


@clustering_asset()
def cluster_labels(
    context: AssetExecutionContext, duckdb: DuckDBResource, clustering: ClusteringSettings
) -> MaterializeResult:
    """A name, key phrases and central examples for every cluster at every level: phrases chosen
    against the other clusters of the level and by their similarity (with the run's embedding
    model; their vectors are kept in the embedding store) to the cluster's centroid. Texts below
    the privacy threshold are never read."""
    part, config = stage(context, clustering)
    with connection(duckdb) as conn:
        rows, vectors = partition_vectors(conn, part)
        assignments = read_partition(
            conn, "assignments", part, "level, level_name, cluster_id", "level, row_idx"
        )
    labeler = make_labeler(config.labeler, stored_encoder(duckdb.get_connection, config.embedding))
    levels, keep = visible_levels(assignments)
    rows, vectors = rows.filter(keep), vectors[keep]
    sample = label_sample(levels[-1]["cluster_id"].to_numpy(), config.labeler.max_texts)
    texts, vectors = rows["text"].gather(sample).to_list(), vectors[sample]
    frames = []
    for level in levels:
        depth, name = level["level"][0], level["level_name"][0]
        stable_ids, dense = np.unique(level["cluster_id"].to_numpy(), return_inverse=True)
        labels = labeler.label(LevelTexts(dense[sample], texts, vectors))
        frames.append(
            pl.DataFrame(
                {
                    "level": np.full(len(labels), depth, np.int32),
                    "level_name": name,
                    "cluster_id": stable_ids[[c.cluster_id for c in labels]].astype(np.int32),
                    "size": np.bincount(dense, minlength=len(labels)),
                    "label": [c.label for c in labels],
                    "keywords": [list(c.keywords) for c in labels],
                    "examples": [list(c.examples) for c in labels],
                    "labeler": labeler.name,
                }
            )
        )
    table = pl.concat(frames)
    with connection(duckdb) as conn:
        write_result(conn, context, part, config, {"cluster_labels": table})
    metadata = {
        "clusters": table.height,
        "labeler": labeler.name,
        "texts_labelled_from": len(sample),
        "params_hash": config.params_hash(),
    }
    for (name,), level in table.group_by("level_name", maintain_order=True):
        largest = level.sort("size", descending=True).head(LARGEST_SHOWN)
        metadata[f"largest_{name}"] = markdown_table(
            largest.select(
                "cluster_id",
                "size",
                "label",
                example=pl.col("examples").list.first().str.slice(0, 80),
            )
        )
    return MaterializeResult(metadata=metadata)
