"""Base-cluster summaries: a title, summary, category and coherence for every finest-level cluster.

The LLM sees the cluster's most central texts plus a seeded random sample of the others, then the
central texts of the nearest other clusters, so a title says what sets the cluster apart (Clio's
recipe). A cluster whose calls all fail keeps its offline keyword label, flagged `fallback`.
Offline (labeler kind keywords), every summary comes from the keyword labels.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
from pydantic import BaseModel

from ..config.run_config import LLMSettings
from ..embedding.embed import normalise_rows
from ..llm.client import Ask, LLMClient, escape, instructions
from ..llm.replies import Summary, Title, clamped
from ..storage.store import HIDDEN_ID, Partition, partition_vectors, relation

Rating = clamped(1, 10, "coherence")


class ClusterDescription(BaseModel):
    """What the LLM says about one base cluster."""

    title: Title
    summary: Summary
    category: Title
    coherence: Rating


SUMMARY_SCHEMA = {
    "cluster_id": pl.Int32,
    "size": pl.Int64,
    "title": pl.String,
    "summary": pl.String,
    "category": pl.String,
    "coherence": pl.Int32,
    "keywords": pl.List(pl.String),
    "examples": pl.List(pl.String),
    "fallback": pl.Boolean,
}

# Tokens a description needs at most (a title, 2-3 sentences, a category, a number).
DESCRIPTION_TOKENS = 400
# No example title: small models copy it (SmolLM2 titled 2 of 16 clusters with it).
DEFAULT_INSTRUCTIONS = (
    "Describe the cluster of texts below for an analyst. The title has at most 10 words and says "
    "specifically what these texts ask or report (a precise request or problem, not a broad "
    "topic), so that it tells this cluster apart from its neighbours. The summary has 2-3 "
    "sentences on what the texts have in common and what sets them apart from the neighbouring "
    "clusters. The category is a broad area in 1-3 words. Coherence rates from 1 (unrelated "
    "texts) to 10 (every text asks the same thing)."
)
ANSWER_FORMAT = (
    'Answer with a JSON object: {"title": "...", "summary": "...", "category": "...", '
    '"coherence": 1-10}'
)


@dataclass(frozen=True)
class BaseClusters:
    """The finest level: a cluster id per text, the texts and their embeddings, and per cluster
    (ordered by id) its size and offline label, keywords, examples and coarsest-level label."""

    level_name: str
    ids: np.ndarray
    texts: Sequence[str]
    embeddings: np.ndarray
    offline: pl.DataFrame  # cluster_id, size, label, keywords, examples, category

    @property
    def cluster_ids(self) -> list[int]:
        return self.offline["cluster_id"].to_list()


def read_base_clusters(conn, part: Partition) -> BaseClusters:
    """The partition's finest level, with the keyword labels of `cluster_labels`, without the texts
    below the privacy threshold."""
    rows, vectors = partition_vectors(conn, part)
    assignments = relation(conn, "assignments", part)
    levels = conn.execute(f"SELECT min(level), max(level) FROM {assignments}").fetchone()
    assigned = conn.execute(
        f"""
        SELECT fine.row_idx, fine.level_name, fine.cluster_id, top.cluster_id AS top_id
        FROM {assignments} fine JOIN {assignments} top
          ON top.row_idx = fine.row_idx AND top.level = $2
        WHERE fine.level = $1
        ORDER BY fine.row_idx
        """,
        [levels[1], levels[0]],
    ).pl()
    if assigned["row_idx"].to_list() != rows["row_idx"].to_list():
        raise LookupError(f"the assignments of {part} do not cover its texts: re-cluster first")
    keep = assigned["cluster_id"] != HIDDEN_ID  # below the privacy threshold: never read
    rows, vectors, assigned = rows.filter(keep), vectors[keep.to_numpy()], assigned.filter(keep)
    labels = conn.execute(
        "SELECT level, cluster_id, size, label, keywords, examples "
        f"FROM {relation(conn, 'cluster_labels', part)} WHERE level IN (?, ?) ORDER BY cluster_id",
        [levels[0], levels[1]],
    ).pl()
    for level in levels:
        labelled = labels.filter(pl.col("level") == level)["cluster_id"].to_list()
        column = "cluster_id" if level == levels[1] else "top_id"
        if labelled != sorted(assigned[column].unique().to_list()):
            raise LookupError(f"the cluster labels of {part} are stale: materialise cluster_labels")
    top_label = dict(
        labels.filter(pl.col("level") == levels[0]).select("cluster_id", "label").iter_rows()
    )
    category = dict(
        assigned.select("cluster_id", pl.col("top_id").replace_strict(top_label))
        .unique()
        .iter_rows()
    )
    offline = (
        labels.filter(pl.col("level") == levels[1])
        .drop("level")
        .with_columns(category=pl.col("cluster_id").replace_strict(category))
    )
    return BaseClusters(
        assigned["level_name"][0],
        assigned["cluster_id"].to_numpy(),
        rows["text"].to_list(),
        vectors,
        offline,
    )


def offline_summary(size: int, keywords: Sequence[str], examples: Sequence[str]) -> str:
    """A summary made of a cluster's size, keywords and most central text (no model)."""
    about = f"about {', '.join(keywords[:5])}" if len(keywords) else "without distinctive words"
    if not len(examples):
        return f"{size} texts {about}."
    typical = examples[0] if len(examples[0]) <= 160 else examples[0][:159] + "…"
    return f'{size} texts {about}. Most typical: "{typical}".'


def offline_descriptions(base: BaseClusters) -> pl.DataFrame:
    """Every base cluster described by the keyword labeler; coherence is unknown."""
    return base.offline.select(
        pl.col("cluster_id").cast(pl.Int32),
        "size",
        title=pl.col("label"),
        summary=pl.struct("size", "keywords", "examples").map_elements(
            lambda r: offline_summary(r["size"], r["keywords"], r["examples"]), pl.String
        ),
        category=pl.col("category"),
        coherence=pl.lit(None, pl.Int32),
        keywords=pl.col("keywords"),
        examples=pl.col("examples"),
        fallback=pl.lit(False),
    ).cast(SUMMARY_SCHEMA)


@dataclass(frozen=True)
class Shown:
    """The texts a prompt shows for one cluster: its own, and those of its nearest neighbours."""

    own: list[str]
    neighbours: list[list[str]]


def _distinct(indices: Sequence[int], texts: Sequence[str], n: int, skip=()) -> list[str]:
    picked: list[str] = []
    for index in indices:
        text = texts[index]
        if text not in picked and text not in skip:
            picked.append(text)
        if len(picked) == n:
            break
    return picked


def pick_examples(base: BaseClusters, settings: LLMSettings) -> list[Shown]:
    """Per cluster: its most central texts plus a random sample (seeded by the cluster, so a
    re-run shows the same texts), and the central texts of its nearest other clusters."""
    unit = normalise_rows(base.embeddings)
    ids = base.cluster_ids
    members = [np.flatnonzero(base.ids == c) for c in ids]
    centroids = normalise_rows(np.stack([unit[m].mean(0) for m in members]))
    ranked = [
        m[np.argsort(-(unit[m] @ centroids[i]), kind="stable")] for i, m in enumerate(members)
    ]
    n_central = settings.examples_per_cluster - settings.random_examples
    similarity = centroids @ centroids.T
    np.fill_diagonal(similarity, -np.inf)
    shown = []
    for i, order in enumerate(ranked):
        central = _distinct(order, base.texts, n_central)
        rest = order[len(central) :]
        rng = np.random.default_rng([ids[i], len(order)])
        sample = rng.permutation(rest) if len(rest) else rest
        own = central + _distinct(sample, base.texts, settings.random_examples, skip=central)
        nearest = np.argsort(-similarity[i], kind="stable")[: settings.contrast_clusters]
        neighbours = [
            _distinct(ranked[j], base.texts, settings.contrast_examples)
            for j in nearest
            if np.isfinite(similarity[i, j])
        ]
        shown.append(Shown(own, neighbours))
    return shown


def description_prompt(settings: LLMSettings, size: int, shown: Shown) -> str:
    """The prompt for one base cluster; every text is escaped inside a <text> element."""

    def block(texts: list[str]) -> str:
        return "\n".join(
            f"<text>{escape(text, settings.chars_per_example)}</text>" for text in texts
        )

    parts = [
        instructions(settings, DEFAULT_INSTRUCTIONS),
        f'<cluster size="{size}" shown="{len(shown.own)}">\n{block(shown.own)}\n</cluster>',
    ]
    if shown.neighbours:
        parts.append(
            "Texts from the nearest other clusters, for contrast only (do not describe them):\n"
            + "\n".join(
                f"<neighbour_cluster>\n{block(texts)}\n</neighbour_cluster>"
                for texts in shown.neighbours
            )
        )
    parts.append(ANSWER_FORMAT)
    return "\n\n".join(parts)


async def describe_clusters(
    client: LLMClient, settings: LLMSettings, base: BaseClusters
) -> pl.DataFrame:
    """An LLM description of every base cluster; one whose calls all failed keeps its offline
    label and is flagged `fallback`."""
    shown = pick_examples(base, settings)
    sizes = base.offline["size"].to_list()
    answers = await client.ask_all(
        [
            Ask(
                "cluster_description",
                description_prompt(settings, size, s),
                ClusterDescription,
                max_tokens=DESCRIPTION_TOKENS,
            )
            for size, s in zip(sizes, shown, strict=True)
        ]
    )
    offline = offline_descriptions(base)
    rows = []
    for row, answer, s in zip(offline.iter_rows(named=True), answers, shown, strict=True):
        if answer is not None:
            row |= answer.model_dump() | {"examples": s.own}
        rows.append(row | {"fallback": answer is None})
    return pl.DataFrame(rows, schema=SUMMARY_SCHEMA)
