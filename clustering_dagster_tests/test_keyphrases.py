"""Key phrases and keyword labels on real texts with the real MiniLM model."""

import re

import numpy as np
import polars as pl
import pytest

from clustering_dagster.core.config.run_config import EmbeddingConfig
from clustering_dagster.core.embedding.embed import make_encoder, normalise_rows
from clustering_dagster.core.labelling.keyphrases import FUNCTION_WORDS, phrases, words_of
from clustering_dagster.core.labelling.label import KeywordLabeler, LevelTexts

from .support.paths import REPO
from .support.vocabulary import ISSUE_FUNCTION_WORDS
from .support.workspace import banking_slice


def label_words(label: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", label.lower()))


@pytest.fixture(scope="module")
def encode():
    return make_encoder(EmbeddingConfig())


def named(encode, texts: list[str], groups: np.ndarray) -> dict[str, tuple]:
    """Labels of the true groups of the texts, by group name: (label, keywords, examples)."""
    names, labels = np.unique(groups, return_inverse=True)
    vectors = normalise_rows(encode(texts))
    result = KeywordLabeler(embed=encode).label(LevelTexts(labels, texts, vectors))
    return {str(names[c.cluster_id]): (c.label, c.keywords, c.examples) for c in result}


@pytest.fixture(scope="module")
def banking_labels(encode):
    frame = banking_slice(24)
    return frame, named(encode, frame["text"].to_list(), frame["category"].to_numpy())


@pytest.fixture(scope="module")
def hwu64_labels(encode):
    frame = (
        pl.read_csv(REPO / "data" / "hwu64" / "hwu64.csv")
        .sort("scenario", "text")
        .group_by("scenario", maintain_order=True)
        .map_groups(lambda group: group.sample(min(40, group.height), seed=0))
    )
    return frame, named(encode, frame["text"].to_list(), frame["scenario"].to_numpy())


def test_the_function_word_list_covers_the_issue_list_and_spares_domain_words():
    assert ISSUE_FUNCTION_WORDS <= FUNCTION_WORDS
    assert not {"bill", "call", "interest", "top-up", "top", "up", "card", "off", "id"} & (
        FUNCTION_WORDS
    )


def test_phrases_are_runs_of_content_words_split_at_function_words_and_punctuation():
    text = "Why hasn't my top-up worked? The exchange rate, I'd say, is off for my card's PIN."
    assert phrases(text) == [
        "top-up",
        "worked",
        "top-up worked",
        "exchange",
        "rate",
        "exchange rate",
        "off",
        "card",
        "pin",
        "card pin",
    ]


def test_phrases_never_begin_or_end_with_a_weak_word():
    assert phrases("I want to get my new card activated") == [
        "new",
        "card",
        "activated",
        "new card",
        "card activated",
    ]


def test_words_of_tells_repeats_apart():
    assert words_of("top-up") == words_of("top up") == {"top", "up"}
    assert words_of("currencies") == words_of("currency")
    assert words_of("cards") == words_of("card")


@pytest.mark.parametrize("fixture", ["banking_labels", "hwu64_labels"])
def test_labels_hold_no_function_word_and_no_phrases_repeating_each_other(request, fixture):
    frame, labels = request.getfixturevalue(fixture)
    assert len(labels) >= 18
    for name, (label, keywords, examples) in labels.items():
        assert not label_words(label) & ISSUE_FUNCTION_WORDS, (name, label)
        assert 1 <= len(label.split(" / ")) <= 3
        assert all(not label_words(k) & FUNCTION_WORDS for k in keywords), (name, keywords)
        seen: set[str] = set()
        for keyword in keywords:
            assert not words_of(keyword) & seen, (name, keywords)
            seen |= words_of(keyword)
        column = "category" if "category" in frame.columns else "scenario"
        own = set(frame.filter(pl.col(column) == name)["text"])
        assert len(examples) == 5 and set(examples) <= own


def test_labels_name_what_the_cluster_is_about(banking_labels, hwu64_labels):
    banking, hwu64 = banking_labels[1], hwu64_labels[1]
    assert "exchange rate" in banking["card_payment_wrong_exchange_rate"][1][:3]
    assert "pin" in banking["change_pin"][1][:3]
    assert "refund" in banking["Refund_not_showing_up"][1][:3]
    for scenario, word in [("alarm", "alarm"), ("weather", "weather"), ("audio", "volume")]:
        assert word in hwu64[scenario][1][:3], hwu64[scenario]
