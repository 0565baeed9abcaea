"""The merged hierarchy (Clio's method): LLM-named parents built bottom-up from the base clusters.

Per level: embed each cluster's title and summary, group the clusters into neighbourhoods
(KMeans), ask for parent categories per neighbourhood, deduplicate them across neighbourhoods,
assign every child to exactly one parent (a reply naming no offered parent is asked again, then
settled by embedding similarity, never dropped), and name each parent from the children it got.
A neighbourhood that gets no proposal keeps stand-in parents from the offline upper levels
(`offline_levels`), never a child's title. Every fallback is counted by step.
Each level has about 1/`merge_ratio` as many nodes as the one below; levels repeat up to
`parent_levels` times while a new level would have at least two nodes.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import polars as pl

from ..config.run_config import EmbeddingConfig, LLMSettings
from ..data_in.ingest import text_hash
from ..embedding.embed import Encoder, cache_key, make_encoder, normalise_rows
from ..labelling.label import ClusterLabel, KeywordLabeler, LevelTexts
from ..llm.client import LLMClient
from ..storage.store import Connect, missing_hashes, put_vectors, vectors_for
from .offline_levels import OfflineLevels
from .prompts import (
    Category,
    Node,
    assignment_question,
    dedupe_question,
    normalised,
    proposal_question,
    rename_question,
)
from .summarize import BaseClusters, offline_summary

# The steps that can fall back, in the order a level runs them.
FALLBACK_STEPS = ("proposals", "dedupe", "assignments", "renames")


@dataclass(frozen=True)
class MergedLevel:
    """One level of parents: its nodes, and for every child one level down its parent's index
    here and how it was chosen ("llm"; "embedding" when the model's choice failed; "offline" for
    a stand-in parent). `fallbacks` counts by step what fell back: neighbourhoods without
    proposals, a failed deduplication, children placed by embedding, parents named by keywords."""

    nodes: list[Node]
    parent: np.ndarray
    assigned_by: list[str]
    fallbacks: dict[str, int]


def stored_encoder(connect: Connect, config: EmbeddingConfig) -> Encoder:
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


def _unique(categories: Sequence[Category]) -> list[Category]:
    seen: dict[str, Category] = {}
    for category in categories:
        seen.setdefault(normalised(category.name), category)
    return list(seen.values())


def _closest_to_mean(vectors: np.ndarray, members: np.ndarray) -> np.ndarray:
    """`members` ordered by closeness to their mean vector."""
    centre = vectors[members].mean(0)
    return members[np.argsort(-(vectors[members] @ centre), kind="stable")]


def embedding_dedupe(candidates: Sequence[Category], target: int, embed: Encoder) -> list[Category]:
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


class KeywordNames:
    """Offline names of merged nodes: the keyword labels of the texts a base-to-node map gives
    each node."""

    def __init__(self, base: BaseClusters, labeler: KeywordLabeler):
        self.base = base
        self.labeler = labeler
        self.text_base = np.searchsorted(base.cluster_ids, base.ids)  # index into cluster_ids

    def labels(self, base_to_node: np.ndarray) -> list[ClusterLabel]:
        return self.labeler.label(
            LevelTexts(base_to_node[self.text_base], self.base.texts, self.base.embeddings)
        )

    def nodes(self, base_to_node: np.ndarray) -> list[Node]:
        sizes = np.bincount(base_to_node[self.text_base])
        return [
            Node(c.label, offline_summary(int(sizes[i]), c.keywords, c.examples), fallback=True)
            for i, c in enumerate(self.labels(base_to_node))
        ]


class Merger:
    """Builds the merged levels for one summary run over the base clusters."""

    def __init__(
        self,
        client: LLMClient,
        settings: LLMSettings,
        base: BaseClusters,
        embed: Encoder,
        names: KeywordNames,
        offline: OfflineLevels,
    ):
        self.client = client
        self.settings = settings
        self.base = base
        self.embed = embed
        self.names = names
        self.offline = offline

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
        fallbacks = dict.fromkeys(FALLBACK_STEPS, 0)
        vectors = self.embed([_node_text(c) for c in children])
        groups = neighbourhoods(vectors, self.settings.neighbourhood_size)
        proposed = await self._propose(children, vectors, groups, target)
        parent = np.empty(len(children), np.int64)
        assigned_by = ["llm"] * len(children)
        methods: list[str] = []
        answered = [g for g, p in zip(groups, proposed, strict=True) if p is not None]
        if answered:
            asked = np.concatenate(answered)
            share = max(1, math.ceil(target * len(asked) / len(children)))
            parents = await self._deduplicate([p for p in proposed if p], share, fallbacks)
            parent[asked], how = await self._assign(
                [children[i] for i in asked], vectors[asked], parents
            )
            for i, way in zip(asked, how, strict=True):
                assigned_by[i] = way
            fallbacks["assignments"] = how.count("embedding")
            methods = ["llm"] * len(parents)
        failed = [g for g, p in zip(groups, proposed, strict=True) if p is None]
        if failed:  # the offline levels stand in, not a child's title
            fallbacks["proposals"] = len(failed)
            stand_ins = self.offline.stand_in_parents(base_to_child, failed, target)
            for group, stand_in in zip(failed, stand_ins, strict=True):
                parent[group] = len(methods) + stand_in
                for i in group:
                    assigned_by[i] = "offline"
            methods += ["offline"] * (int(np.concatenate(stand_ins).max()) + 1)
        used, parent = np.unique(parent, return_inverse=True)
        nodes = await self._name(
            children, sizes, base_to_child, parent, [methods[u] for u in used], fallbacks
        )
        return MergedLevel(nodes, parent, assigned_by, fallbacks)

    async def _propose(
        self, children: list[Node], vectors: np.ndarray, groups: list[np.ndarray], target: int
    ) -> list[list[Category] | None]:
        """Candidate parents per neighbourhood; None where every call failed."""
        wants, questions = [], []
        for group in groups:
            want = max(1, math.ceil(target * len(group) / len(children)))
            outside = np.setdiff1d(np.arange(len(children)), group)
            centre = vectors[group].mean(0)
            nearby = outside[np.argsort(-(vectors[outside] @ centre), kind="stable")]
            wants.append(want)
            questions.append(
                proposal_question(
                    self.settings,
                    [children[i] for i in group],
                    [children[i] for i in nearby[: self.settings.contrast_clusters]],
                    want,
                )
            )
        answers = await self.client.ask_all(questions)
        return [
            None if answer is None else answer.categories[:want]
            for want, answer in zip(wants, answers, strict=True)
        ]

    async def _deduplicate(
        self, proposals: list[list[Category]], target: int, fallbacks: dict
    ) -> list[Category]:
        """One list of distinct parents from the neighbourhoods' candidates."""
        candidates = _unique([c for candidates in proposals for c in candidates])
        if len(proposals) < 2:
            return candidates
        answer = await self.client.ask(dedupe_question(self.settings, candidates, target))
        if answer is None:
            fallbacks["dedupe"] = 1
            return embedding_dedupe(candidates, target, self.embed)
        return _unique(answer.categories)[:target]

    async def _assign(
        self, children: list[Node], vectors: np.ndarray, parents: list[Category]
    ) -> tuple[np.ndarray, list[str]]:
        """Every child's parent: the LLM's choice, or else the most similar parent."""
        choices = await self.client.ask_all(
            [assignment_question(self.settings, child, parents) for child in children]
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

    async def _name(
        self,
        children: list[Node],
        sizes: np.ndarray,
        base_to_child: np.ndarray,
        parent: np.ndarray,
        methods: list[str],
        fallbacks: dict,
    ) -> list[Node]:
        """Every parent named from the children it got; by its keywords where that failed."""
        members = [np.flatnonzero(parent == p) for p in range(len(methods))]
        answers = await self.client.ask_all(
            [rename_question(self.settings, [children[i] for i in m], sizes[m]) for m in members]
        )
        offline = None
        nodes = []
        for p, answer in enumerate(answers):
            if answer is None:
                fallbacks["renames"] += 1
                offline = offline or self.names.nodes(parent[base_to_child])
                nodes.append(replace(offline[p], method=methods[p]))
            else:
                nodes.append(Node(answer.title, answer.summary, method=methods[p]))
        return nodes
