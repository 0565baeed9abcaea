"""Offline cluster labels: key phrases chosen against the other clusters of the level, and the
most central example texts.

Candidates are runs of adjacent content words (`keyphrases`). Per cluster, the phrases with the
highest class-based TF-IDF against the other clusters of its level are scored again by their
similarity to the cluster's centroid with the run's embedding model (BERTopic's
KeyBERTInspired), and chosen by maximal marginal relevance, never two that share a word. A
labeler turns one level's clusters into labels; the LLM summaries (`summarize`, `merge`) fall back
to these labels.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from scipy import sparse

from ..config.run_config import LabelerConfig
from ..embedding.embed import Encoder, normalise_rows
from ..errors import InputError
from .keyphrases import class_tfidf, drop_contained, phrase_matrix, select_mmr


@dataclass(frozen=True)
class ClusterLabel:
    cluster_id: int
    label: str
    keywords: tuple[str, ...]
    examples: tuple[str, ...]


@dataclass(frozen=True)
class LevelTexts:
    """One level's clusters: a cluster id per text, with the texts and their embeddings."""

    labels: np.ndarray
    texts: Sequence[str]
    embeddings: np.ndarray


class Labeler(Protocol):
    name: str

    def label(self, level: LevelTexts) -> list[ClusterLabel]: ...


def central_examples(
    labels: np.ndarray, texts: Sequence[str], embeddings: np.ndarray, n: int
) -> list[tuple[str, ...]]:
    """Per cluster, the n distinct texts closest (cosine) to its centroid."""
    unit = normalise_rows(embeddings)
    examples = []
    for cluster in range(int(labels.max()) + 1):
        members = np.flatnonzero(labels == cluster)
        centroid = unit[members].mean(0)
        ranked = members[np.argsort(-(unit[members] @ centroid))]
        picked: list[str] = []
        for index in ranked:
            if texts[index] not in picked:
                picked.append(texts[index])
            if len(picked) == n:
                break
        examples.append(tuple(picked))
    return examples


# A cluster keeps at least this many of its texts (or all it has) in the sample labels come from.
MIN_SAMPLED_PER_CLUSTER = 50


def label_sample(finest: np.ndarray, budget: int, seed: int = 0) -> np.ndarray:
    """The rows labels are drawn from, in order: all of them up to `budget`; beyond it, from every
    cluster of the finest level (whose unions are the clusters of every level) a random share
    budget / n of its texts, at least MIN_SAMPLED_PER_CLUSTER."""
    n = len(finest)
    if n <= budget:
        return np.arange(n)
    order = np.lexsort((np.random.default_rng(seed).random(n), finest))
    _, starts, sizes = np.unique(finest[order], return_index=True, return_counts=True)
    quota = np.maximum(np.ceil(sizes * budget / n), np.minimum(sizes, MIN_SAMPLED_PER_CLUSTER))
    return np.sort(
        np.concatenate([order[s : s + int(q)] for s, q in zip(starts, quota, strict=True)])
    )


# Unit vectors of short texts, from the run's embedding model.

# Phrases per cluster, best by class-based TF-IDF, that are scored against its centroid.
CANDIDATES = 20
# Weight of the centroid similarity against the (rescaled) class-based TF-IDF in a phrase's score.
SIMILARITY_WEIGHT = 0.5
# Maximal marginal relevance: 0 ranks by relevance alone, 1 by novelty alone.
DIVERSITY = 0.3
# Phrases in a label.
LABEL_PHRASES = 3


class KeywordLabeler:
    """Names a cluster by its best key phrases (`LABEL_PHRASES` of them, joined by " / ").

    Without `embed` the phrases are ranked by class-based TF-IDF alone (still never two sharing a
    word); with it, also by their similarity to the cluster's centroid, and chosen for diversity.
    """

    name = "keywords"

    def __init__(self, n_keywords: int = 8, n_examples: int = 5, embed: Encoder | None = None):
        self.n_keywords = n_keywords
        self.n_examples = n_examples
        self.embed = embed
        self._phrase_cache: tuple[int, sparse.csr_matrix, np.ndarray] | None = None
        self._vectors: dict[str, np.ndarray] = {}  # phrase -> unit vector, across levels

    def _phrases(self, texts: Sequence[str]) -> tuple[sparse.csr_matrix, np.ndarray]:
        if self._phrase_cache is None or self._phrase_cache[0] != id(texts):
            self._phrase_cache = (id(texts), *phrase_matrix(texts))
        return self._phrase_cache[1], self._phrase_cache[2]

    def _candidates(
        self, scores: np.ndarray, held: np.ndarray, vocabulary: np.ndarray
    ) -> list[np.ndarray]:
        """Per cluster, its best phrases by class-based TF-IDF that at least two of its texts hold
        (one, in a cluster where no phrase is held twice), a phrase giving way to a longer one
        that says the same."""
        picked = []
        for row, texts_holding in zip(scores, held, strict=True):
            floor = 2 if texts_holding.max(initial=0) >= 2 else 1
            usable = np.flatnonzero((texts_holding >= floor) & (row > 0))
            pool = usable[np.argsort(-row[usable], kind="stable")[: 2 * CANDIDATES]]
            picked.append(drop_contained(pool, vocabulary, texts_holding)[:CANDIDATES])
        return picked

    def _embed_phrases(self, phrases: set[str]) -> None:
        """Adds the unit vectors of phrases not embedded yet (by this labeler) to its cache."""
        missing = sorted(phrases - self._vectors.keys())
        if missing and self.embed is not None:
            self._vectors |= dict(zip(missing, normalise_rows(self.embed(missing)), strict=True))

    def keywords(self, level: LevelTexts) -> list[tuple[str, ...]]:
        """Per cluster, up to n_keywords phrases, the best first."""
        counts, vocabulary = self._phrases(level.texts)
        k = int(level.labels.max()) + 1
        if not len(vocabulary):
            return [()] * k
        scores, held = class_tfidf(counts, level.labels)
        candidates = self._candidates(scores, held, vocabulary)
        self._embed_phrases({str(vocabulary[i]) for options in candidates for i in options})
        unit = normalise_rows(level.embeddings)
        result = []
        for cluster, options in enumerate(candidates):
            names = [str(vocabulary[i]) for i in options]
            if not names:
                result.append(())
                continue
            relevance = scores[cluster, options] / scores[cluster, options].max()
            vectors = None
            if self.embed is not None:
                centroid = normalise_rows(unit[level.labels == cluster].mean(0, keepdims=True))[0]
                vectors = np.stack([self._vectors[name] for name in names])
                if vectors.shape[1] != len(centroid):
                    raise InputError(
                        f"the run configuration's embedding model makes {vectors.shape[1]}-d "
                        f"vectors, the texts' vectors are {len(centroid)}-d: name the model that "
                        "made the dataset's vectors in its `embedding` settings"
                    )
                relevance = (1 - SIMILARITY_WEIGHT) * relevance + SIMILARITY_WEIGHT * (
                    vectors @ centroid
                )
            chosen = select_mmr(relevance, vectors, names, self.n_keywords, DIVERSITY)
            result.append(tuple(names[i] for i in chosen))
        return result

    def label(self, level: LevelTexts) -> list[ClusterLabel]:
        examples = central_examples(level.labels, level.texts, level.embeddings, self.n_examples)
        labels = []
        for cluster, (keywords, cluster_examples) in enumerate(
            zip(self.keywords(level), examples, strict=True)
        ):
            name = " / ".join(keywords[:LABEL_PHRASES]) if keywords else cluster_examples[0][:60]
            labels.append(ClusterLabel(cluster, name, keywords, cluster_examples))
        return labels


def make_labeler(config: LabelerConfig, embed: Encoder | None = None) -> Labeler:
    return KeywordLabeler(n_keywords=config.n_keywords, n_examples=config.n_examples, embed=embed)
