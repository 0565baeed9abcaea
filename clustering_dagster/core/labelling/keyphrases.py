"""Candidate key phrases of a set of texts: one or two adjacent content words.

A function word (a pronoun, an article, an auxiliary, a preposition, a greeting) ends a phrase
and is never part of one, so no candidate holds one. The list is short on purpose: words that
carry meaning in some domain (top-up, bill, interest, call, card) are content words.
"""

import re
from collections.abc import Sequence

import numpy as np
from scipy import sparse

_FUNCTION_WORDS = """
    i me my mine myself we us our ours ourselves you your yours yourself yourselves he him his
    himself she her hers herself it its itself they them their theirs themselves
    this that these those is are was were be been being am do does did doing done have has had
    having a an the and but or nor if of at by for with to from in on into onto as so than then
    there here what which who whom whose when where why how can could will would shall should may
    might must not no yes just very also too please thanks thank hi hello hey ok okay
    any some each every either neither such about because while until since though although
    whether through again after before during within without via against between among around
    over under im ive youre dont doesnt didnt cant couldnt wont wouldnt isnt arent wasnt
"""
FUNCTION_WORDS = frozenset(_FUNCTION_WORDS.split())

# The part before the apostrophe of a contraction that is a function word (don't, it's, I'd).
_CONTRACTION_STEMS = "don doesn didn isn aren wasn weren won can couldn wouldn shouldn haven hasn"
CONTRACTION_STEMS = frozenset(f"{_CONTRACTION_STEMS} hadn ain mustn needn mightn shan let".split())

# Words too generic to begin or end a phrase, or to be one (they may sit inside a longer one).
_WEAK_WORDS = """
    get gets got getting keep keeps kept keeping try tries tried trying use uses used using want
    wants wanted need needs needed like make makes made making know knows tell let see say said go
    goes going went take takes took taking come comes way thing things something anything someone
    anyone able sure really still already even many much lot lots one think thought
"""
WEAK_WORDS = frozenset(_WEAK_WORDS.split())

TOKEN = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")
# Punctuation that ends a clause: no phrase spans it.
CLAUSE_BREAK = re.compile(r"[.,;:!?()\[\]{}\"/|]+")
MAX_WORDS = 2
# A phrase gives way to a longer one that holds it in at least this share of its texts.
CONTAINED_SHARE = 0.6


def _content_word(token: str) -> str | None:
    """The token as a content word (a possessive 's dropped), or None if it ends a phrase."""
    if "'" in token:
        stem, _, suffix = token.partition("'")
        if stem in FUNCTION_WORDS or stem in CONTRACTION_STEMS:
            return None
        token = stem if suffix == "s" else token
    if token in FUNCTION_WORDS or len(token) < 2 or token.isdigit():
        return None
    return token


def phrases(text: str) -> list[str]:
    """Every run of 1 to MAX_WORDS adjacent content words in the text, lower-cased, that neither
    begins nor ends with a weak word."""
    found: list[str] = []
    run: list[str] = []
    tokens = []
    for part in CLAUSE_BREAK.split(text.lower().replace("’", "'")):
        tokens += [*TOKEN.findall(part), ""]
    for token in tokens:
        word = _content_word(token) if token else None
        if word is not None:
            run.append(word)
            continue
        for size in range(1, MAX_WORDS + 1):
            found += [
                " ".join(run[i : i + size])
                for i in range(len(run) - size + 1)
                if run[i] not in WEAK_WORDS and run[i + size - 1] not in WEAK_WORDS
            ]
        run = []
    return found


def phrase_matrix(texts: Sequence[str]) -> tuple[sparse.csr_matrix, np.ndarray]:
    """Which texts hold which candidate phrase (binary), and the phrases."""
    from sklearn.feature_extraction.text import CountVectorizer

    vectorizer = CountVectorizer(analyzer=phrases, binary=True)
    try:
        counts = vectorizer.fit_transform(texts)
    except ValueError:  # no content word at all
        return sparse.csr_matrix((len(texts), 0)), np.array([], dtype=object)
    return counts.tocsr(), vectorizer.get_feature_names_out()


def class_tfidf(counts: sparse.csr_matrix, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """BERTopic's class-based TF-IDF: per cluster (rows) and phrase, the phrase's frequency in the
    cluster times log(1 + average words per cluster / its frequency over all clusters); and how
    many texts of each cluster hold each phrase."""
    k = int(labels.max()) + 1
    membership = sparse.csr_matrix(
        (np.ones(len(labels)), (labels, np.arange(len(labels)))), shape=(k, len(labels))
    )
    per_cluster = (membership @ counts).toarray().astype(np.float32)
    tf = per_cluster / np.maximum(per_cluster.sum(1, keepdims=True), 1)
    idf = np.log1p(per_cluster.sum() / k / np.maximum(per_cluster.sum(0), 1))
    return tf * idf, per_cluster


def stem(word: str) -> str:
    """A crude stem for telling repeats apart: cards -> card, charges -> charg, charged -> charg,
    currencies -> currency."""
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not word.endswith("ss"):
            return word[: -len(suffix)].rstrip("e")
    return word.rstrip("e") if len(word) > 3 else word


def words_of(phrase: str) -> set[str]:
    """The stems of a phrase's words (top-up: top, up)."""
    return {stem(word) for word in re.split(r"[\s'-]+", phrase) if word}


def drop_contained(options: np.ndarray, phrases: Sequence[str], held: np.ndarray) -> np.ndarray:
    """`options` without each phrase that a longer option holds in at least `CONTAINED_SHARE` of
    its texts (exchange goes when exchange rate says the same), order kept."""
    padded = {i: f" {phrases[i]} " for i in options}
    kept = [
        p
        for p in options
        if not any(
            q != p and padded[p] in padded[q] and held[q] >= CONTAINED_SHARE * held[p]
            for q in options
        )
    ]
    return np.array(kept, dtype=int)


def select_mmr(
    relevance: np.ndarray,
    vectors: np.ndarray | None,
    phrases: Sequence[str],
    n: int,
    diversity: float,
) -> list[int]:
    """Up to n phrases by maximal marginal relevance: each next one maximises
    (1 - diversity) * relevance - diversity * (its highest similarity to one already chosen);
    a phrase sharing a word (stem) with a chosen one is never taken."""
    chosen: list[int] = []
    used: set[str] = set()
    candidates = list(np.argsort(-relevance, kind="stable"))
    while candidates and len(chosen) < n:
        scores = relevance[candidates] * (1 - diversity)
        if chosen and vectors is not None:
            scores = scores - diversity * (vectors[candidates] @ vectors[chosen].T).max(1)
        best = candidates.pop(int(np.argmax(scores)))
        words = words_of(phrases[best])
        if words & used:
            continue
        chosen.append(best)
        used |= words
        candidates = [c for c in candidates if not words_of(phrases[c]) & used]
    return chosen
