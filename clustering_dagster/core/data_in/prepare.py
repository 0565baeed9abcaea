"""A dataset made ready to cluster under one run configuration: the texts (for a conversation
dataset, the facet the configuration clusters), the facets of each conversation, and the owner's
rows as read. With `privacy.scrub`, personal data is replaced by placeholders before a text is
hashed, embedded, shown or sent to a model; only the owner's rows keep the original."""

import hashlib
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass

import polars as pl

from ..config.run_config import RunConfig
from ..privacy.scrub import scrub_counts
from .conversations import load_conversations
from .datasets import DatasetSpec
from .facets import FACETS_SCHEMA as OFFLINE_FACETS
from .facets import offline_facets
from .ingest import TEXTS_SCHEMA, finish_texts, read_texts, report_of

# LLM facets: (each conversation's messages, the offline facets) -> request, task, language,
# concerning and fallback per conversation.
Describe = Callable[[list[list[dict]], pl.DataFrame], pl.DataFrame]

# The `facets` table: the offline facets but the rendered conversation (it may be clustered, as
# `text`), keyed like the texts, and whether an LLM failed.
FACETS_SCHEMA = {
    "row_idx": pl.Int32,
    "conversation_id": pl.String,
    **{name: kind for name, kind in OFFLINE_FACETS.items() if name != "conversation"},
    "fallback": pl.Boolean,
}
PRIVATE_SCHEMA = {"row_idx": pl.Int32, "user_id": pl.String, "original": pl.String}


@dataclass(frozen=True)
class Prepared:
    texts: pl.DataFrame  # TEXTS_SCHEMA and `private`
    facets: pl.DataFrame  # FACETS_SCHEMA; empty for a text dataset
    private_rows: pl.DataFrame  # PRIVATE_SCHEMA; empty when there is nothing private to keep
    report: dict


def _scrubbed(texts: list[str | None], counts: Counter) -> list[str | None]:
    present = [t for t in texts if t is not None]
    clean, found = scrub_counts(present)
    counts.update(found)
    it = iter(clean)
    return [None if t is None else next(it) for t in texts]


def _scrub_columns(frame: pl.DataFrame, counts: Counter) -> pl.DataFrame:
    """The metadata and labels scrubbed; an id holding personal data replaced by its hash (so ids
    stay distinct)."""
    ids = frame["text_id"].to_list()
    kept = [
        i if clean == i else f"id-{hashlib.blake2b(i.encode(), digest_size=8).hexdigest()}"
        for i, clean in zip(ids, _scrubbed(ids, counts), strict=True)
    ]
    return frame.with_columns(
        pl.Series("text_id", kept, pl.String),
        *[
            pl.Series(name, _scrubbed(frame[name].to_list(), counts), pl.String)
            for name in ("metadata", "ground_truth")
        ],
    )


def _text_rows(spec: DatasetSpec, config: RunConfig, counts: Counter):
    frame, bad = read_texts(spec)
    original = pl.struct(text=pl.col("text")).struct.json_encode()
    frame = frame.with_columns(original=original if config.privacy.scrub else pl.lit(None))
    if config.privacy.scrub:
        frame = _scrub_columns(frame, counts).with_columns(
            text=pl.Series(_scrubbed(frame["text"].to_list(), counts), dtype=pl.String)
        )
    texts = finish_texts(frame, spec, f"column {spec.text_column!r}")
    return texts, asdict(report_of(texts, frame.height, bad, spec)), pl.DataFrame()


def _conversation_rows(
    spec: DatasetSpec, config: RunConfig, describe: Describe | None, counts: Counter
):
    conversations, loaded = load_conversations(spec)
    messages = conversations["messages"].to_list()
    original = pl.struct(messages=pl.col("messages")).struct.json_encode()
    conversations = conversations.with_columns(original=original)
    if config.privacy.scrub:
        contents = _scrubbed([m["content"] for turns in messages for m in turns], counts)
        it = iter(contents)
        messages = [[m | {"content": next(it)} for m in turns] for turns in messages]
        conversations = conversations.with_columns(
            messages=pl.Series(messages, dtype=conversations["messages"].dtype)
        )
    facets = offline_facets(conversations).with_columns(fallback=pl.lit(False))
    if describe is not None:
        answered = describe(messages, facets)
        facets = facets.with_columns(answered.select("request", "task", "language", "concerning"))
        facets = facets.with_columns(fallback=answered["fallback"])
        if config.privacy.scrub:  # what a model writes is scrubbed too
            for column in ("request", "task"):
                facets = facets.with_columns(
                    pl.Series(column, _scrubbed(facets[column].to_list(), counts), pl.String)
                )
    frame = pl.concat(
        [
            conversations.select(
                "ground_truth", "metadata", "user_id", "source_file", "line", "original",
                text_id="conversation_id", conversation_id="conversation_id",
            ),
            facets,
        ],
        how="horizontal",
    ).with_columns(text=pl.col(config.facets.embed))  # fmt: skip
    if config.privacy.scrub:
        frame = _scrub_columns(frame, counts).with_columns(conversation_id=pl.col("text_id"))
    texts = finish_texts(frame, spec, f"facet {config.facets.embed!r}")
    report = asdict(report_of(texts, frame.height, loaded.undecodable_bytes, spec)) | {
        "conversations": loaded.conversations,
        "messages": loaded.messages,
        "facet_fallbacks": int(facets["fallback"].sum()),
    }
    return texts, report, texts.select(FACETS_SCHEMA.keys()).cast(FACETS_SCHEMA)


def prepare(spec: DatasetSpec, config: RunConfig, describe: Describe | None = None) -> Prepared:
    """The dataset's texts, facets and private rows under `config` (`describe`: LLM facets)."""
    counts: Counter = Counter()
    if spec.kind == "conversations":
        texts, report, facets = _conversation_rows(spec, config, describe, counts)
    else:
        texts, report, facets = _text_rows(spec, config, counts)
    keep = config.privacy.scrub or spec.user_column is not None or spec.kind == "conversations"
    private = texts.select(PRIVATE_SCHEMA.keys()).cast(PRIVATE_SCHEMA)
    return Prepared(
        texts.select(TEXTS_SCHEMA.keys())
        .cast(TEXTS_SCHEMA)
        .with_columns(private=pl.lit(config.privacy.threshold)),
        facets if facets.width else pl.DataFrame(schema=FACETS_SCHEMA),
        private if keep else private.clear(),
        report | {f"scrubbed_{kind}": n for kind, n in sorted(counts.items())},
    )
