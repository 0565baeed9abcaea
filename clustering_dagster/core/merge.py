"""The merged hierarchy (Clio's method): LLM-named parents built bottom-up from the base clusters.

Per level: embed each cluster's title and summary, group the clusters into neighbourhoods
(KMeans), ask for parent categories per neighbourhood, deduplicate them across neighbourhoods,
assign every child to exactly one parent (a reply naming no offered parent is asked again, then
settled by embedding similarity, never dropped), and name each parent from the children it got.
Each level has about 1/`merge_ratio` as many nodes as the one below; levels repeat up to
`parent_levels` times while a new level would have at least two nodes.
Offline, the tree is the HDBSCAN levels with their keyword labels.
"""

import math
import re
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

import numpy as np
import polars as pl
from pydantic import BaseModel, Field

from .embed import cache_key, make_encoder, normalise_rows
from .hierarchy import NODE_SCHEMA, build_tree
from .ingest import text_hash
from .label import KeywordLabeler, LevelTexts
from .llm import Ask, InvalidReply, LLMClient, escape, instructions
from .run_config import EmbeddingConfig, LLMSettings
from .storage import missing_hashes, put_vectors, vectors_for
from .summarize import BaseClusters, Prose, Title, offline_summary

# Children listed at most in one prompt that names a parent (the largest first).
MAX_CHILDREN_SHOWN = 40

TREE_SCHEMA = {
    **NODE_SCHEMA,
    "title": pl.String,
    "summary": pl.String,
    "keywords": pl.List(pl.String),
    "path": pl.String,
    "position": pl.Int32,
    "method": pl.String,
    "assigned_by": pl.String,
    "fallback": pl.Boolean,
}


class Category(BaseModel):
    name: Title
    description: Prose = Field(max_length=600)


class Categories(BaseModel):
    categories: list[Category] = Field(min_length=1)


class Choice(BaseModel):
    category: str = Field(min_length=1)


class ParentDescription(BaseModel):
    title: Title
    summary: Prose = Field(max_length=1200)


@dataclass(frozen=True)
class Node:
    title: str
    summary: str
    fallback: bool = False


@dataclass(frozen=True)
class MergedLevel:
    """One level of parents: its nodes, and for every child one level down its parent's index
    here and how it was chosen ("llm" or "embedding"); `fallbacks` counts the steps that fell
    back to an offline stand-in (proposals, dedupe, renames)."""

    nodes: list[Node]
    parent: np.ndarray
    assigned_by: list[str]
    fallbacks: dict[str, int]


Embed = Callable[[Sequence[str]], np.ndarray]


def stored_encoder(connect: Callable[[], AbstractContextManager], config: EmbeddingConfig) -> Embed:
    """Unit vectors of short texts (titles with summaries) from the run's embedding model, kept
    in the embedding store (`connect` opens a DuckDB connection), so a re-run gets the very same
    vectors without encoding again."""
    model = cache_key(config)
    encoders = []

    def embed(texts: Sequence[str]) -> np.ndarray:
        hashes = text_hash(pl.Series(list(texts), dtype=pl.String))
        with connect() as conn:
            missing = missing_hashes(conn, model, hashes)
            if not len(missing):
                return normalise_rows(vectors_for(conn, model, hashes))
        if not encoders:
            encoders.append(make_encoder(config))
        by_hash = dict(zip(hashes, texts, strict=True))
        vectors = encoders[0]([by_hash[h] for h in missing])
        with connect() as conn:
            put_vectors(conn, model, missing, vectors)
            return normalise_rows(vectors_for(conn, model, hashes))

    return embed


def _node_text(node: Node) -> str:
    return f"{node.title}: {node.summary}"


def neighbourhoods(vectors: np.ndarray, size: int) -> list[np.ndarray]:
    """Groups of about `size` similar clusters (KMeans on the unit vectors, seeded)."""
    k = math.ceil(len(vectors) / size)
    if k <= 1:
        return [np.arange(len(vectors))]
    from sklearn.cluster import KMeans

    labels = KMeans(n_clusters=k, n_init=3, random_state=0).fit_predict(vectors)
    return [np.flatnonzero(labels == g) for g in range(k) if (labels == g).any()]


def _cluster_xml(node: Node, chars: int, size: int | None = None) -> str:
    size_attribute = f' size="{size}"' if size is not None else ""
    return (
        f"<cluster{size_attribute}><title>{escape(node.title)}</title>"
        f"<summary>{escape(node.summary, chars)}</summary></cluster>"
    )


def _categories_xml(categories: Sequence[Category], chars: int) -> str:
    return "\n".join(
        f"<category><name>{escape(c.name)}</name>"
        f"<description>{escape(c.description, chars)}</description></category>"
        for c in categories
    )


CATEGORIES_FORMAT = (
    'Answer with a JSON object: {"categories": [{"name": "...", "description": "..."}]}'
)


def proposal_prompt(
    settings: LLMSettings, children: Sequence[Node], nearby: Sequence[Node], want: int
) -> str:
    """Clio's first step: candidate parents for one neighbourhood, nearby clusters as contrast."""
    chars = settings.chars_per_example
    parts = [
        instructions(
            settings,
            f"Below are {len(children)} clusters from one neighbourhood of a map of texts, each "
            f"with a title and a summary. Propose at most {want} higher-level categories that "
            "together cover all of them. Each category is broader than the clusters it covers "
            'but still specific (for example "Card delivery and activation", not "Banking"): '
            "a name of at most 10 words and a one-sentence description.",
        ),
        "<clusters>\n" + "\n".join(_cluster_xml(c, chars) for c in children) + "\n</clusters>",
    ]
    if nearby:
        parts.append(
            "Nearby clusters outside this neighbourhood, for contrast only (do not cover them):\n"
            "<nearby>\n"
            + "\n".join(f"<cluster><title>{escape(c.title)}</title></cluster>" for c in nearby)
            + "\n</nearby>"
        )
    parts.append(CATEGORIES_FORMAT)
    return "\n\n".join(parts)


def dedupe_prompt(settings: LLMSettings, candidates: Sequence[Category], target: int) -> str:
    """Clio's second step: one list of distinct parents from every neighbourhood's candidates."""
    return "\n\n".join(
        [
            instructions(
                settings,
                f"Below are {len(candidates)} candidate categories proposed for different parts "
                "of one map of texts. Merge duplicates and near-duplicates and return at most "
                f"{target} distinct categories that together cover all the candidates, each with "
                "a specific name of at most 10 words and a one-sentence description.",
            ),
            "<candidates>\n"
            + _categories_xml(candidates, settings.chars_per_example)
            + "\n</candidates>",
            CATEGORIES_FORMAT,
        ]
    )


def assignment_prompt(settings: LLMSettings, child: Node, parents: Sequence[Category]) -> str:
    """Clio's third step: the one parent that fits a child best."""
    return "\n\n".join(
        [
            instructions(
                settings,
                "Which one of the categories below fits this cluster best? Give the category's "
                "name exactly as written.",
            ),
            _cluster_xml(child, settings.chars_per_example),
            "<categories>\n"
            + _categories_xml(parents, settings.chars_per_example)
            + "\n</categories>",
            'Answer with a JSON object: {"category": "..."}',
        ]
    )


def rename_prompt(settings: LLMSettings, children: Sequence[Node], sizes: Sequence[int]) -> str:
    """Clio's last step: a parent named from the children it actually got."""
    order = np.argsort(-np.asarray(sizes), kind="stable")[:MAX_CHILDREN_SHOWN]
    return "\n\n".join(
        [
            instructions(
                settings,
                "The clusters below were grouped under one category. Write a title of at most "
                "10 words and a summary of 2-3 sentences that say precisely what these clusters "
                "have in common, specific enough to tell this group apart from other groups.",
            ),
            "<clusters>\n"
            + "\n".join(
                _cluster_xml(children[i], settings.chars_per_example, int(sizes[i])) for i in order
            )
            + "\n</clusters>",
            'Answer with a JSON object: {"title": "...", "summary": "..."}',
        ]
    )


def _normalised(name: str) -> str:
    return " ".join(re.sub(r"[\"'`*.:;]", " ", name).casefold().split())


def one_of(parents: Sequence[Category]) -> Callable[[Choice], Choice]:
    """A check that a reply names one of `parents` (case and quotes aside)."""
    names = {_normalised(p.name): p.name for p in parents}

    def check(choice: Choice) -> Choice:
        name = names.get(_normalised(choice.category))
        if name is None:
            raise InvalidReply(
                f"{choice.category!r} is not one of the categories; give one of them exactly"
            )
        return Choice(category=name)

    return check


def _unique(categories: Sequence[Category]) -> list[Category]:
    seen: dict[str, Category] = {}
    for category in categories:
        seen.setdefault(_normalised(category.name), category)
    return list(seen.values())


def _closest_to_mean(vectors: np.ndarray, members: np.ndarray) -> np.ndarray:
    """`members` ordered by closeness to their mean vector."""
    centre = vectors[members].mean(0)
    return members[np.argsort(-(vectors[members] @ centre), kind="stable")]


def embedding_dedupe(candidates: Sequence[Category], target: int, embed: Embed) -> list[Category]:
    """The offline stand-in for deduplication: agglomerate the candidates' vectors into `target`
    groups and keep the candidate nearest each group's mean."""
    if len(candidates) <= target:
        return list(candidates)
    from sklearn.cluster import AgglomerativeClustering

    vectors = embed([f"{c.name}: {c.description}" for c in candidates])
    groups = AgglomerativeClustering(
        n_clusters=target, metric="cosine", linkage="average"
    ).fit_predict(vectors)
    return [
        candidates[_closest_to_mean(vectors, np.flatnonzero(groups == g))[0]] for g in range(target)
    ]


class Merger:
    """Builds the merged levels for one summary run over the base clusters."""

    def __init__(
        self,
        client: LLMClient,
        settings: LLMSettings,
        base: BaseClusters,
        embed: Embed,
        labeler: KeywordLabeler,
    ):
        self.client = client
        self.settings = settings
        self.base = base
        self.embed = embed
        self.labeler = labeler
        # each text's base cluster as an index into base.cluster_ids (ordered by id)
        self.text_base = np.searchsorted(base.cluster_ids, base.ids)

    async def levels(self, base_nodes: Sequence[Node]) -> list[MergedLevel]:
        """Parent levels above the base clusters, the lowest first."""
        levels: list[MergedLevel] = []
        children = list(base_nodes)
        sizes = self.base.offline["size"].to_numpy().astype(np.int64)
        base_to_child = np.arange(len(children))
        for _ in range(self.settings.parent_levels):
            target = round(len(children) / self.settings.merge_ratio)
            if target < 2:
                break
            level = await self._merge(children, sizes, base_to_child, target)
            levels.append(level)
            base_to_child = level.parent[base_to_child]
            sizes = np.bincount(level.parent, weights=sizes).astype(np.int64)
            children = level.nodes
        return levels

    async def _merge(
        self, children: list[Node], sizes: np.ndarray, base_to_child: np.ndarray, target: int
    ) -> MergedLevel:
        fallbacks = {"proposals": 0, "dedupe": 0, "renames": 0}
        vectors = self.embed([_node_text(c) for c in children])
        candidates, n_groups = await self._propose(children, vectors, target, fallbacks)
        parents = candidates
        if n_groups > 1:  # candidates from several neighbourhoods may repeat one another
            answer = await self.client.ask(
                Ask(
                    "deduplicated_categories",
                    dedupe_prompt(self.settings, candidates, target),
                    Categories,
                )
            )
            if answer is None:
                fallbacks["dedupe"] = 1
                parents = embedding_dedupe(candidates, target, self.embed)
            else:
                parents = _unique(answer.categories)[:target]
        parent, assigned_by = await self._assign(children, vectors, parents)
        used, parent = np.unique(parent, return_inverse=True)
        members = [np.flatnonzero(parent == p) for p in range(len(used))]
        answers = await self.client.ask_all(
            [
                Ask(
                    "parent_description",
                    rename_prompt(self.settings, [children[i] for i in m], sizes[m]),
                    ParentDescription,
                )
                for m in members
            ]
        )
        offline = (
            self.offline_nodes(parent[base_to_child]) if any(a is None for a in answers) else None
        )
        nodes = []
        for p, answer in enumerate(answers):
            if answer is None:
                fallbacks["renames"] += 1
                nodes.append(offline[p])
            else:
                nodes.append(Node(answer.title, answer.summary))
        return MergedLevel(nodes, parent, assigned_by, fallbacks)

    async def _propose(
        self, children: list[Node], vectors: np.ndarray, target: int, fallbacks: dict
    ) -> tuple[list[Category], int]:
        """Candidate parents from every neighbourhood, and the number of neighbourhoods."""
        groups = neighbourhoods(vectors, self.settings.neighbourhood_size)
        wants, questions = [], []
        for group in groups:
            want = max(1, math.ceil(target * len(group) / len(children)))
            outside = np.setdiff1d(np.arange(len(children)), group)
            centre = vectors[group].mean(0)
            nearby = outside[np.argsort(-(vectors[outside] @ centre), kind="stable")]
            prompt = proposal_prompt(
                self.settings,
                [children[i] for i in group],
                [children[i] for i in nearby[: self.settings.contrast_clusters]],
                want,
            )
            wants.append(want)
            questions.append(Ask("parent_candidates", prompt, Categories))
        answers = await self.client.ask_all(questions)
        candidates: list[Category] = []
        for group, want, answer in zip(groups, wants, answers, strict=True):
            if answer is None:  # the most central children stand in as candidates
                fallbacks["proposals"] += 1
                central = _closest_to_mean(vectors, group)[:want]
                candidates += [
                    Category.model_construct(
                        name=children[i].title, description=children[i].summary
                    )
                    for i in central
                ]
            else:
                candidates += answer.categories[:want]
        return _unique(candidates), len(groups)

    async def _assign(
        self, children: list[Node], vectors: np.ndarray, parents: list[Category]
    ) -> tuple[np.ndarray, list[str]]:
        """Every child's parent: the LLM's choice, or else the most similar parent."""
        choices = await self.client.ask_all(
            [
                Ask(
                    "parent_assignment",
                    assignment_prompt(self.settings, child, parents),
                    Choice,
                    check=one_of(parents),
                )
                for child in children
            ]
        )
        index = {p.name: i for i, p in enumerate(parents)}
        parent_vectors = self.embed([f"{p.name}: {p.description}" for p in parents])
        parent, assigned_by = np.empty(len(children), np.int64), []
        for i, choice in enumerate(choices):
            if choice is None:
                parent[i] = int(np.argmax(parent_vectors @ vectors[i]))
                assigned_by.append("embedding")
            else:
                parent[i] = index[choice.category]
                assigned_by.append("llm")
        return parent, assigned_by

    def keyword_labels(self, base_to_node: np.ndarray):
        """Offline keyword labels of the nodes a base-to-node map defines."""
        return self.labeler.label(
            LevelTexts(base_to_node[self.text_base], self.base.texts, self.base.embeddings)
        )

    def offline_nodes(self, base_to_node: np.ndarray) -> list[Node]:
        """Stand-in names for nodes whose naming calls all failed: their keyword labels."""
        sizes = np.bincount(base_to_node[self.text_base])
        return [
            Node(c.label, offline_summary(int(sizes[i]), c.keywords, c.examples), fallback=True)
            for i, c in enumerate(self.keyword_labels(base_to_node))
        ]

    def tree(self, summaries: pl.DataFrame, levels: list[MergedLevel]) -> pl.DataFrame:
        """The merged tree, top level first, in depth-first order; base nodes keep the ids (and
        level name) of the finest HDBSCAN level."""
        base = self.base
        maps = [np.arange(len(base.cluster_ids))]  # base cluster -> node, per level upwards
        for level in levels:
            maps.append(level.parent[maps[-1]])
        names = [base.level_name] + [f"parent_{d}" for d in range(1, len(levels) + 1)]
        per_text = [base.ids] + [m[self.text_base] for m in maps[1:]]
        titles = [dict(zip(summaries["cluster_id"], summaries["title"], strict=True))]
        info = {
            (base.level_name, c): (s, f)
            for c, s, f in summaries.select("cluster_id", "summary", "fallback").iter_rows()
        }
        keywords = [dict(zip(summaries["cluster_id"], summaries["keywords"], strict=True))]
        for depth, level in enumerate(levels, start=1):
            titles.append({i: n.title for i, n in enumerate(level.nodes)})
            keywords.append(
                {i: list(c.keywords) for i, c in enumerate(self.keyword_labels(maps[depth]))}
            )
            info |= {(names[depth], i): (n.summary, n.fallback) for i, n in enumerate(level.nodes)}
        assigned = {}  # how each node got its parent, by (level name, cluster id)
        for depth, level in enumerate(levels):
            ids = base.cluster_ids if depth == 0 else range(len(level.assigned_by))
            assigned |= {
                (names[depth], c): how for c, how in zip(ids, level.assigned_by, strict=True)
            }
        tree = build_tree(names[::-1], per_text[::-1], titles[::-1], keywords[::-1])
        keys = list(zip(tree["level_name"], tree["cluster_id"], strict=True))
        return (
            tree.rename({"label": "title"})
            .with_columns(
                summary=pl.Series([info[k][0] for k in keys], dtype=pl.String),
                position=pl.int_range(pl.len(), dtype=pl.Int32),
                method=pl.lit("llm"),
                assigned_by=pl.Series([assigned.get(k) for k in keys], dtype=pl.String),
                fallback=pl.Series([info[k][1] for k in keys], dtype=pl.Boolean),
            )
            .select(list(TREE_SCHEMA))
        )


def offline_tree(hierarchy: pl.DataFrame, labels: pl.DataFrame) -> pl.DataFrame:
    """The HDBSCAN tree (`hierarchy` rows) as a merged tree: keyword labels for titles, offline
    summaries from `labels` (level, cluster_id, examples)."""
    joined = hierarchy.join(labels, on=["level", "cluster_id"], how="left", maintain_order="left")
    return (
        joined.select(
            *[c for c in TREE_SCHEMA if c in hierarchy.columns],
            title=pl.col("label"),
            summary=pl.struct("size", "keywords", "examples").map_elements(
                lambda r: offline_summary(r["size"], r["keywords"] or [], r["examples"] or []),
                pl.String,
            ),
            method=pl.lit("hdbscan"),
            assigned_by=pl.when(pl.col("parent_id").is_not_null()).then(pl.lit("hdbscan")),
            fallback=pl.lit(False),
        )
        .select(list(TREE_SCHEMA))
        .cast(TREE_SCHEMA)
    )
