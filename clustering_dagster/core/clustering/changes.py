"""What changed since the last run: a full clustering against the previous published one.

One row per cluster of this run, and per previous cluster that vanished, at every level: its
event (from the lineage, `lineage.py`), its size and share of the texts before and now, its texts
new to the clustering, and whether it is **emerging**. The privacy threshold's folded cluster
(`HIDDEN_ID`) is never a row; its texts count only in the totals the shares are taken of.

A cluster's event, from its lineage rows: `merged` (it took in several previous clusters; it may
keep one's id), else `kept` (it keeps a previous id), `split` (a piece of a previous cluster, under
a fresh id), `new` (no previous cluster behind it); `vanished`: a previous cluster with no
successor (size 0).

Emerging, on a level that was clustered before (a first clustering compares with nothing):

- a cluster under a fresh id holding at least `emerging_min_share` of the texts, when it is `new`
  or at least half its texts are new to the clustering (a new topic that took in a few old texts
  is lineage-wise a split or a merge);
- a `kept` cluster whose share grew `emerging_growth` times or more, and by `emerging_min_share`
  or more. A `merged` cluster grew by taking in other clusters: never emerging by growth.
"""

import polars as pl

from ..config.run_config import ChangesConfig
from ..storage.store import HIDDEN_ID

# A cluster under a fresh id is a new topic when at least this share of its texts is new.
NEW_MAJORITY = 0.5

# Of a cluster's lineage rows, the event that names it: the lowest rank.
EVENT_RANK = {"merged": 0, "kept": 1, "split": 2, "new": 3}

KEY = ["level_name", "cluster_id"]

REPORT_SCHEMA = {
    "level": pl.Int32,
    "level_name": pl.String,
    "cluster_id": pl.Int32,
    "event": pl.String,
    "previous_cluster_ids": pl.List(pl.Int32),
    "size": pl.Int64,
    "previous_size": pl.Int64,
    "new_texts": pl.Int64,
    "share": pl.Float64,
    "previous_share": pl.Float64,
    "share_change": pl.Float64,
    "growth": pl.Float64,
    "emerging": pl.Boolean,
    "previous_label": pl.String,
}


def new_texts(assignments: pl.DataFrame, previous: pl.DataFrame) -> pl.DataFrame:
    """Per cluster (level_name, cluster_id, new_texts): its texts whose hash the previous
    clustering of its level did not hold (both frames: level_name, text_hash, cluster_id)."""
    before = previous.select("level_name", "text_hash").unique()
    return (
        assignments.join(before, on=["level_name", "text_hash"], how="anti")
        .group_by(KEY)
        .agg(new_texts=pl.len().cast(pl.Int64))
    )


def cluster_events(lineage: pl.DataFrame) -> pl.DataFrame:
    """Per cluster of this run (level, level_name, cluster_id): its event and the previous
    clusters it drew on (`previous_cluster_ids`)."""
    rank = pl.col("event").replace_strict(EVENT_RANK, default=len(EVENT_RANK))
    return (
        lineage.filter(pl.col("cluster_id").is_not_null())
        .group_by("level", *KEY)
        .agg(
            event=pl.col("event").sort_by(rank).first(),
            previous_cluster_ids=pl.col("previous_cluster_id").drop_nulls().unique().sort(),
        )
    )


def vanished(lineage: pl.DataFrame) -> pl.DataFrame:
    """Previous clusters with no successor, under their old id."""
    return lineage.filter(pl.col("event") == "vanished").select(
        "level",
        "level_name",
        cluster_id=pl.col("previous_cluster_id"),
        event=pl.lit("vanished"),
        previous_cluster_ids=pl.concat_list("previous_cluster_id"),
        size=pl.lit(0, pl.Int64),
        new_texts=pl.lit(0, pl.Int64),
    )


def _totals(sizes: pl.DataFrame, name: str) -> pl.DataFrame:
    """Texts per level (every text, the folded cluster's included)."""
    return sizes.group_by("level_name").agg(pl.col("size").sum().alias(name))


def change_report(
    lineage: pl.DataFrame,
    sizes: pl.DataFrame,
    fresh_texts: pl.DataFrame,
    previous: pl.DataFrame,
    settings: ChangesConfig,
    private: bool = False,
) -> pl.DataFrame:
    """The report (columns `REPORT_SCHEMA`, unordered: see `ordered`). `lineage`: this run's
    (level, level_name, cluster_id, previous_cluster_id, event); `sizes`: this run's clusters
    (level, level_name, cluster_id, size); `fresh_texts`: `new_texts`; `previous`: the previous
    clusters (level_name, cluster_id, size, label), empty on a first clustering. `private`: under
    a privacy threshold, where a vanished cluster keeps no label (it may now be below it)."""
    visible = sizes.filter(pl.col("cluster_id") != HIDDEN_ID).select(*KEY, "size")
    now = (
        cluster_events(lineage)
        .join(visible, on=KEY, how="left")
        .join(fresh_texts, on=KEY, how="left")
        .with_columns(pl.col("new_texts").fill_null(0))
    )
    before = previous.filter(pl.col("cluster_id") != HIDDEN_ID).select(
        *KEY, previous_size="size", previous_label="label"
    )
    rows = (
        pl.concat([now, vanished(lineage)], how="diagonal_relaxed")
        .join(before, on=KEY, how="left")
        .join(_totals(sizes, "total"), on="level_name", how="left")
        .join(_totals(previous, "previous_total"), on="level_name", how="left")
    )
    fresh = pl.col("event").is_in(["new", "split"])
    rows = rows.with_columns(
        previous_size=pl.when(fresh).then(None).otherwise(pl.col("previous_size")),
        previous_label=pl.when(fresh | (private & (pl.col("event") == "vanished")))
        .then(None)
        .otherwise(pl.col("previous_label")),
    ).with_columns(
        share=pl.col("size") / pl.col("total"),
        previous_share=pl.col("previous_size") / pl.col("previous_total"),
    )
    rows = rows.with_columns(
        share_change=pl.col("share") - pl.col("previous_share"),
        growth=pl.col("share") / pl.col("previous_share"),
    ).with_columns(emerging=emerging(settings))
    return rows.select([pl.col(c).cast(t) for c, t in REPORT_SCHEMA.items()])


def emerging(settings: ChangesConfig) -> pl.Expr:
    """Whether a report row is emerging (see the module's docstring); needs `previous_total`."""
    compared = pl.col("previous_total").is_not_null()
    big = pl.col("share") >= settings.emerging_min_share
    mostly_new = pl.col("new_texts") >= NEW_MAJORITY * pl.col("size")
    fresh_topic = (
        pl.col("previous_size").is_null()
        & (pl.col("event") != "vanished")
        & big
        & ((pl.col("event") == "new") | mostly_new)
    )
    grown = (
        (pl.col("event") == "kept")
        & (pl.col("growth") >= settings.emerging_growth * (1 - 1e-9))
        & (pl.col("share_change") >= settings.emerging_min_share * (1 - 1e-9))
    )
    return (compared & (fresh_topic | grown)).fill_null(False)


def ordered(report: pl.DataFrame) -> pl.DataFrame:
    """Emerging clusters first (the largest first), then kept clusters that grew (the largest
    rise first), new, split, merged (the largest first), vanished (the largest before first), and
    last the kept clusters that did not grow (the largest fall first)."""
    event = pl.col("event")
    rank = (
        pl.when(pl.col("emerging"))
        .then(0)
        .when((event == "kept") & (pl.col("share_change") > 0))
        .then(1)
        .when(event == "new")
        .then(2)
        .when(event == "split")
        .then(3)
        .when(event == "merged")
        .then(4)
        .when(event == "vanished")
        .then(5)
        .otherwise(6)
    )
    key = (
        pl.when(rank == 0)
        .then(-pl.col("share"))
        .when(rank == 1)
        .then(-pl.col("share_change"))
        .when(rank == 5)
        .then(-pl.col("previous_share"))
        .when(rank == 6)
        .then(pl.col("share_change"))
        .otherwise(-pl.col("share"))
    )
    return report.sort(rank, key.fill_null(0), "level", "cluster_id")


def event_counts(report: pl.DataFrame) -> pl.DataFrame:
    """Per level: clusters per event, and the emerging ones."""
    events = list(EVENT_RANK)[::-1] + ["vanished"]
    return (
        report.group_by("level", "level_name")
        .agg(
            *[(pl.col("event") == e).sum().alias(e) for e in events],
            emerging=pl.col("emerging").sum(),
        )
        .sort("level")
        .drop("level")
    )


def alerts(report: pl.DataFrame, settings: ChangesConfig) -> pl.DataFrame:
    """The emerging clusters the `emerging_clusters` check warns about, the largest first."""
    return ordered(report.filter(pl.col("emerging") & (pl.col("share") >= settings.alert_share)))


def node_id(level_name: str, cluster_id: int) -> str:
    return f"{level_name}/{cluster_id}"


def size_change(row: dict) -> str:
    """'12 -> 30' for a cluster with a previous size, '30' for one under a fresh id."""
    if row["previous_size"] is None:
        return str(row["size"])
    return f"{row['previous_size']} -> {row['size']}"


def event_text(row: dict) -> str:
    """The event, and the previous clusters a split or merged one came from: 'merged (3, 4)'."""
    if row["event"] not in ("split", "merged"):
        return row["event"]
    return f"{row['event']} ({', '.join(str(c) for c in row['previous_cluster_ids'])})"


def points(share: float | None, signed: bool = False) -> str:
    """A share in percent, '2.5%', or a change in percentage points, '+1.3 pts'."""
    if share is None:
        return ""
    return f"{100 * share:+.1f} pts" if signed else f"{100 * share:.1f}%"


def readable(
    report: pl.DataFrame, names: dict[str, str] | None = None, limit: int | None = None
) -> pl.DataFrame:
    """The report as text for people, in its order: cluster, name (from `names` by node id,
    else the previous label), event (and where from), texts before -> now, share, change,
    emerging."""
    names = names or {}
    rows = []
    shown = report.head(limit) if limit else report
    for row in shown.iter_rows(named=True):
        node = node_id(row["level_name"], row["cluster_id"])
        rows.append(
            {
                "cluster": node,
                "name": names.get(node) or row["previous_label"] or "",
                "event": event_text(row),
                "texts": size_change(row),
                "share": points(row["share"]),
                "change": points(row["share_change"], signed=True),
                "emerging": "emerging" if row["emerging"] else "",
            }
        )
    columns = ["cluster", "name", "event", "texts", "share", "change", "emerging"]
    return pl.DataFrame(rows, schema=dict.fromkeys(columns, pl.String))
