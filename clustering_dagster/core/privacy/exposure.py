"""What the views show of a partition against its privacy threshold: the check that nothing
below it is exposed, for the asset check and the benchmarks."""

from ..config.run_config import PrivacyConfig
from ..storage.store import HIDDEN_ID, SCHEMA, Partition, relation

# Views with one row per cluster and its size (curated_hierarchy: people's edits applied; a node
# they emptied has 0 texts and shows none).
CLUSTER_VIEWS = ("hierarchy", "merged_hierarchy", "cluster_labels", "cluster_summaries",
                 "curated_hierarchy")  # fmt: skip


def exposures(conn, part: Partition, privacy: PrivacyConfig) -> dict[str, int]:
    """Counts of what should not be seen, all 0 when the threshold holds: clusters below it in a
    view (`small_clusters`), clusters of too few users (`few_user_clusters`), and texts of the
    folded cluster, or not yet clustered, that the texts view shows (`hidden_texts_shown`)."""
    where = {"dataset": part.dataset, "run_config": part.run_config}
    mine = "dataset = $dataset AND run_config = $run_config"
    sized = " UNION ALL ".join(
        f"SELECT level_name, cluster_id, size FROM {SCHEMA}.{view} WHERE {mine}"
        for view in CLUSTER_VIEWS
    )
    counted = (
        f"SELECT level_name, cluster_id, count(*) AS size FROM {SCHEMA}.assignments WHERE {mine} "
        "GROUP BY ALL"
    )
    small = conn.execute(
        f"SELECT count(*) FROM ({sized} UNION ALL {counted}) "
        f"WHERE cluster_id <> {HIDDEN_ID} AND size BETWEEN 1 AND $least - 1",
        where | {"least": privacy.min_conversations},
    ).fetchone()[0]
    users = relation(conn, "private_rows", part, required=False)
    few_users = conn.execute(
        f"""
        SELECT count(*) FROM (
            SELECT a.level, a.cluster_id, count(DISTINCT u.user_id) AS users
            FROM {SCHEMA}.assignments a JOIN {users} u USING (row_idx)
            WHERE a.{mine.replace(" AND ", " AND a.")} AND a.cluster_id <> {HIDDEN_ID}
            GROUP BY ALL
        ) WHERE users < $least AND (SELECT count(user_id) FROM {users}) > 0
        """,
        where | {"least": privacy.min_users or 0},
    ).fetchone()[0]
    shown = conn.execute(
        f"""
        SELECT count(*) FROM {SCHEMA}.texts t WHERE t.{mine.replace(" AND ", " AND t.")}
          AND NOT EXISTS (
            SELECT 1 FROM {SCHEMA}.assignments a WHERE a.dataset = t.dataset
              AND a.run_config = t.run_config AND a.row_idx = t.row_idx
              AND a.cluster_id <> {HIDDEN_ID})
        """,
        where,
    ).fetchone()[0]
    return {
        "small_clusters": small,
        "few_user_clusters": few_users,
        "hidden_texts_shown": shown if privacy.threshold else 0,
    }
