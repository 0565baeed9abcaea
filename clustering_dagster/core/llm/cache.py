"""The call cache: every answer by key in `clustering.llm_calls`, shared by all partitions."""

import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime

import polars as pl

from ..storage.store import SCHEMA, Connect, in_transaction, registered

CALL_SCHEMA = {
    "cache_key": pl.String,
    "model": pl.String,
    "task": pl.String,
    "params": pl.String,
    "prompt_hash": pl.String,
    "answer": pl.String,
    "calls": pl.Int32,
    "prompt_tokens": pl.Int64,
    "completion_tokens": pl.Int64,
    "cost_usd": pl.Float64,
    "created_at": pl.Datetime("us"),
}


class CallCache:
    """Answers by key in `clustering.llm_calls`, shared by all partitions. New answers are written
    in small batches (every `FLUSH_EVERY` answers or `FLUSH_SECONDS`), and always when a run ends
    or fails, so an interrupted run loses at most the last few seconds of answers. `connect` opens
    a short-lived DuckDB connection: none is held while the model thinks."""

    FLUSH_EVERY = 32
    FLUSH_SECONDS = 2.0

    def __init__(self, connect: Connect):
        self.connect = connect
        self.pending: dict[str, dict] = {}
        self.known: dict[str, dict | None] = {}
        self.last_flush = time.monotonic()

    def prefetch(self, keys: Sequence[str]) -> None:
        """Look many keys up in one query; `get` then answers them without another."""
        with self.connect() as conn:
            rows = conn.execute(
                f"SELECT cache_key, answer FROM {SCHEMA}.llm_calls "
                "WHERE list_contains(?, cache_key)",
                [list(keys)],
            ).fetchall()
        self.known = dict.fromkeys(keys) | {key: json.loads(answer) for key, answer in rows}

    def get(self, key: str) -> dict | None:
        if key in self.pending:
            return self.pending[key]["answer"]
        if key in self.known:
            return self.known[key]
        with self.connect() as conn:
            row = conn.execute(
                f"SELECT answer FROM {SCHEMA}.llm_calls WHERE cache_key = ?", [key]
            ).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, record: dict) -> None:
        self.pending[key] = record
        stale = time.monotonic() - self.last_flush > self.FLUSH_SECONDS
        if len(self.pending) >= self.FLUSH_EVERY or stale:
            self.flush()

    def flush(self) -> None:
        self.last_flush = time.monotonic()
        if not self.pending:
            return
        now = datetime.now(UTC).replace(tzinfo=None)
        rows = [
            record
            | {
                "cache_key": key,
                "params": json.dumps(record["params"]),
                "answer": json.dumps(record["answer"]),
                "created_at": now,
            }
            for key, record in self.pending.items()
        ]
        calls = pl.DataFrame(rows, schema=CALL_SCHEMA)
        with self.connect() as conn, registered(conn, "_calls", calls):
            # not ON CONFLICT: the lake has no keys. A key another process wrote at the same
            # moment may be there twice, with answers to the same request: readers take any.
            in_transaction(
                conn,
                lambda: conn.execute(
                    f"INSERT INTO {SCHEMA}.llm_calls BY NAME SELECT * FROM _calls c "
                    f"ANTI JOIN {SCHEMA}.llm_calls k ON k.cache_key = c.cache_key"
                ),
            )
        self.known |= {key: record["answer"] for key, record in self.pending.items()}
        self.pending.clear()
