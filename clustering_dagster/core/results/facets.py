"""Facets of conversation datasets in the results: filters (`--facet language=fr`) and a cluster's
breakdown (its language mix, turn counts, mean concerning score). Read through the views, so
texts below the privacy threshold never count."""

import re
from dataclasses import dataclass

import polars as pl

from ..errors import InputError
from ..storage.store import SCHEMA, Partition
from .reading import NamedTree, leaf_assignments

# Facet columns a filter may name, and whether they hold numbers.
FILTERABLE = {
    "language": False,
    "task": False,
    "concerning": True,
    "turns": True,
    "user_turns": True,
    "assistant_turns": True,
    "chars": True,
}
FILTER = re.compile(r"^\s*([a-z_]+)\s*(>=|<=|!=|=|>|<)\s*(.+?)\s*$")


@dataclass(frozen=True)
class FacetFilter:
    column: str
    op: str
    value: str | int

    def sql(self, index: int) -> tuple[str, dict]:
        name = f"facet_{index}"
        return f"f.{self.column} {self.op} ${name}", {name: self.value}


def parse_filters(specs: tuple[str, ...]) -> list[FacetFilter]:
    """`--facet` values such as `language=fr` or `concerning>=3`; a bad one is an InputError."""
    filters = []
    for spec in specs:
        found = FILTER.match(spec)
        if not found or found.group(1) not in FILTERABLE:
            raise InputError(
                f"--facet {spec!r}: expected COLUMN=VALUE (or >=, <=, >, <, != for numbers) "
                f"with a column of {', '.join(FILTERABLE)}"
            )
        column, op, value = found.groups()
        if FILTERABLE[column]:
            if not re.fullmatch(r"-?\d+", value):
                raise InputError(f"--facet {spec!r}: {column} is a number, not {value!r}")
            value = int(value)
        elif op not in ("=", "!="):
            raise InputError(f"--facet {spec!r}: {column} takes = or != only")
        filters.append(FacetFilter(column, op, value))
    return filters


def has_facets(conn, part: Partition) -> bool:
    return bool(
        conn.execute(
            f"SELECT count(*) FROM {SCHEMA}.facets WHERE dataset = ? AND run_config = ?",
            [part.dataset, part.run_config],
        ).fetchone()[0]
    )


def matching_rows(conn, part: Partition, filters: list[FacetFilter]) -> pl.Series:
    """The row_idx of the partition's texts whose facets pass every filter."""
    if not has_facets(conn, part):
        raise InputError(f"{part} has no facets: --facet needs a conversation dataset")
    where, params = ["f.dataset = $dataset", "f.run_config = $run_config"], {}
    for index, one in enumerate(filters):
        clause, value = one.sql(index)
        where.append(clause)
        params |= value
    return conn.execute(
        f"SELECT row_idx FROM {SCHEMA}.facets f WHERE {' AND '.join(where)} ORDER BY row_idx",
        params | {"dataset": part.dataset, "run_config": part.run_config},
    ).pl()["row_idx"]


def facet_columns(conn, part: Partition) -> pl.DataFrame:
    """Per shown text (row_idx) its facets, for exports: empty without facets."""
    return conn.execute(
        f"SELECT row_idx, conversation_id, language, task, concerning, user_turns, "
        f"assistant_turns, turns, chars FROM {SCHEMA}.facets "
        "WHERE dataset = ? AND run_config = ? ORDER BY row_idx",
        [part.dataset, part.run_config],
    ).pl()


def breakdown(conn, tree: NamedTree, node_id: str) -> dict | None:
    """A node's facets (of the texts under it): its languages (share,
    largest first, at most 5), user turns (mean, median, max) and mean concerning score (None
    when no facet has one); None without facets."""
    rows = conn.execute(
        f"""
        SELECT f.language, f.user_turns, f.turns, f.concerning FROM {SCHEMA}.facets f
        JOIN {leaf_assignments(conn, tree)} a USING (row_idx)
        WHERE f.dataset = $dataset AND f.run_config = $run_config
          AND list_contains($ids, a.cluster_id)
        """,
        {
            "dataset": tree.part.dataset,
            "run_config": tree.part.run_config,
            "ids": tree.leaves(node_id),
        },
    ).pl()
    if rows.height == 0:
        return None
    languages = rows["language"].fill_null("unknown").value_counts(sort=True).head(5)
    concerning = rows["concerning"].drop_nulls()
    return {
        "conversations": rows.height,
        "languages": {language: round(n / rows.height, 3) for language, n in languages.iter_rows()},
        "user_turns": {
            "mean": round(float(rows["user_turns"].mean()), 2),
            "median": float(rows["user_turns"].median()),
            "max": int(rows["user_turns"].max()),
        },
        "mean_concerning": round(float(concerning.mean()), 2) if concerning.len() else None,
    }
