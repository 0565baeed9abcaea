"""Offline cluster labels: class-based TF-IDF keywords and the most central example texts.

A labeler turns one level's clusters into labels. The keyword labeler needs no model; its labels
are also what the LLM summaries (`summarize`, `merge`) fall back to.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from scipy import sparse

from .embed import normalise_rows
from .run_config import LabelerConfig


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


def term_matrix(texts: Sequence[str]) -> tuple[sparse.csr_matrix, np.ndarray]:
    """Document-term counts (unigrams and bigrams, English stop words removed) and the vocabulary."""
    from sklearn.feature_extraction.text import CountVectorizer

    vectorizer = CountVectorizer(
        stop_words="english", ngram_range=(1, 2), token_pattern=r"(?u)\b\w[\w'-]*\w\b"
    )
    try:
        counts = vectorizer.fit_transform(texts)
    except ValueError:  # nothing but stop words or punctuation
        return sparse.csr_matrix((len(texts), 0)), np.array([], dtype=object)
    return counts.tocsr(), vectorizer.get_feature_names_out()


def class_tfidf(counts: sparse.csr_matrix, labels: np.ndarray) -> np.ndarray:
    """BERTopic's c-TF-IDF: a term's weight in a cluster against all clusters of the same level."""
    k = int(labels.max()) + 1
    membership = sparse.csr_matrix(
        (np.ones(len(labels)), (labels, np.arange(len(labels)))), shape=(k, len(labels))
    )
    per_cluster = (membership @ counts).toarray().astype(np.float64)
    tf = per_cluster / np.maximum(per_cluster.sum(1, keepdims=True), 1)
    avg_words = per_cluster.sum() / k
    idf = np.log1p(avg_words / np.maximum(per_cluster.sum(0), 1))
    return tf * idf


def top_keywords(scores: np.ndarray, vocabulary: np.ndarray, n: int) -> tuple[str, ...]:
    """The n best-scoring terms, skipping a term whose words all appear in better ones."""
    chosen: list[str] = []
    seen: set[str] = set()
    for index in np.argsort(-scores):
        if scores[index] <= 0 or len(chosen) == n:
            break
        words = set(vocabulary[index].split())
        if words <= seen:
            continue
        chosen.append(str(vocabulary[index]))
        seen |= words
    return tuple(chosen)


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


class KeywordLabeler:
    """Names a cluster by its three most distinctive keywords."""

    name = "keywords"

    def __init__(self, n_keywords: int = 8, n_examples: int = 5):
        self.n_keywords = n_keywords
        self.n_examples = n_examples
        self._term_cache: tuple[int, sparse.csr_matrix, np.ndarray] | None = None

    def _terms(self, texts: Sequence[str]) -> tuple[sparse.csr_matrix, np.ndarray]:
        if self._term_cache is None or self._term_cache[0] != id(texts):
            self._term_cache = (id(texts), *term_matrix(texts))
        return self._term_cache[1], self._term_cache[2]

    def label(self, level: LevelTexts) -> list[ClusterLabel]:
        counts, vocabulary = self._terms(level.texts)
        scores = class_tfidf(counts, level.labels) if len(vocabulary) else None
        examples = central_examples(level.labels, level.texts, level.embeddings, self.n_examples)
        labels = []
        for cluster, cluster_examples in enumerate(examples):
            keywords = (
                top_keywords(scores[cluster], vocabulary, self.n_keywords)
                if scores is not None
                else ()
            )
            name = " / ".join(keywords[:3]) if keywords else cluster_examples[0][:60]
            labels.append(ClusterLabel(cluster, name, keywords, cluster_examples))
        return labels


def make_labeler(config: LabelerConfig) -> Labeler:
    return KeywordLabeler(n_keywords=config.n_keywords, n_examples=config.n_examples)
