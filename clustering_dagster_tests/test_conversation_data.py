"""The support conversations built from Banking77 and HWU64 with planted personal data
(`support/conversations.py`): deterministic, well-formed, every planted string valid, unique and
present, and each writer reads back as written."""

import json

import polars as pl
import pytest
import yaml

from .support.conversations import (
    MIN_PLANTED,
    build_conversations,
    iban_valid,
    luhn_valid,
    main,
    write_lmsys_parquet,
    write_messages_jsonl,
    write_turns_csv,
    write_turns_parquet,
)
from .support.paths import REPO

N = 600
SAMPLE = REPO / "data" / "conversations" / "support_chats.jsonl"
FIELDS = ("conversation_id", "user_id", "intent", "scenario")


@pytest.fixture(scope="module")
def built():
    return build_conversations(N, seed=3)


def _messages(row):
    return [{"role": m["role"], "content": m["content"]} for m in row["messages"]]


def test_deterministic(built):
    again = build_conversations(N, seed=3)
    assert again.rows == built.rows and again.planted == built.planted
    other = build_conversations(N, seed=4)
    assert [r["messages"] for r in other.rows] != [r["messages"] for r in built.rows]


def test_rows_well_formed(built):
    rows = built.rows
    assert len(rows) == N
    assert len({r["conversation_id"] for r in rows}) == N
    assert len({r["query"] for r in rows}) == N  # drawn without replacement
    for r in rows:
        assert r["intent"].startswith(("b77:", "hwu:"))
        assert (r["scenario"] is not None) == r["intent"].startswith("hwu:")
        roles = [m["role"] for m in r["messages"]]
        assert set(roles) <= {"system", "user", "assistant"}
        assert "system" not in roles[1:]
        assert 1 <= roles.count("user") <= 6
        assert all(isinstance(m["content"], str) and m["content"].strip() for m in r["messages"])
        assert any(r["query"] in m["content"] for m in r["messages"] if m["role"] == "user")
    users = pl.Series([r["user_id"] for r in rows]).value_counts(sort=True)
    assert users.height == round(N / 3) and users["count"][0] >= 5  # a skewed pool
    chat = [[m for m in r["messages"] if m["role"] != "system"] for r in rows]
    greeted = sum(r["query"] not in c[0]["content"] for r, c in zip(rows, chat, strict=True)) / N
    system = sum(r["messages"][0]["role"] == "system" for r in rows) / N
    assert 0.4 < greeted < 0.7 and 0.1 < system < 0.3


def test_planted(built):
    planted, rows = built.planted, built.rows
    assert len(planted) == len(set(planted)) and set(built.kinds) == set(planted)
    assert set(built.kinds.values()) == {"email", "phone", "card", "iban", "ip", "url"}
    assert 0.12 < sum(bool(r["planted"]) for r in rows) / N < 0.18
    corpus = "\n".join(m["content"] for r in rows for m in r["messages"])
    in_query = 0
    for r in rows:
        user_text = [m["content"] for m in r["messages"] if m["role"] == "user"]
        for s in r["planted"]:
            assert len(s) >= MIN_PLANTED
            assert corpus.count(s) == 1  # in its conversation, once, and nowhere else
            assert any(s in t for t in user_text)
            in_query += any(s in t and r["query"] in t for t in user_text)
            assert not any(s in o for o in planted if o != s)
    assert 0.1 < in_query / len(planted) < 0.35  # about a fifth beside the query
    for s, kind in built.kinds.items():
        if kind == "card":
            assert luhn_valid(s), s
        elif kind == "iban":
            assert iban_valid(s) and s[:2] in {"DE", "GB", "FR", "NL"}, s
        elif kind == "email":
            assert s.count("@") == 1
        elif kind == "url":
            assert s.startswith("https://") and ("@" in s or "=" in s)


def test_checks_reject_invalid():
    assert luhn_valid("4539 1488 0343 6467") and not luhn_valid("4539 1488 0343 6468")
    assert iban_valid("DE89 3704 0044 0532 0130 00") and not iban_valid("DE89370400440532013001")
    assert iban_valid("GB29NWBK60161331926819")


def test_too_many_queries_fails_clearly():
    with pytest.raises(ValueError, match="hold 13083 queries"):
        build_conversations(13084, sources=("banking77",))


def _yaml(path):
    return yaml.safe_load(path.with_suffix(".yaml").read_text())


def test_writers_round_trip(built, tmp_path):
    rows = built.rows[:120]
    path = write_messages_jsonl(rows, tmp_path / "m.jsonl")
    back = [json.loads(line) for line in path.read_text().splitlines()]
    assert back == [{**{k: r[k] for k in FIELDS}, "messages": _messages(r)} for r in rows]
    assert _yaml(path) == {
        "kind": "conversations",
        "format": "messages",
        "id_column": "conversation_id",
        "user_column": "user_id",
        "label_column": "intent",
    }

    path = write_lmsys_parquet(rows, tmp_path / "l.parquet")
    frame = pl.read_parquet(path)
    assert frame.columns[:7] == [
        *("conversation_id", "model", "conversation", "turn", "language", "user_id", "intent")
    ]
    assert frame["conversation"].to_list() == [_messages(r) for r in rows]
    assert frame["turn"].to_list() == [
        sum(m["role"] == "user" for m in r["messages"]) for r in rows
    ]
    assert set(frame["language"]) == {"English"} and frame["model"].n_unique() > 1
    assert frame.select(FIELDS).rows() == [tuple(r[k] for k in FIELDS) for r in rows]
    assert _yaml(path)["format"] == "lmsys"
    assert _yaml(path)["messages_column"] == "conversation"

    for writer, reader in ((write_turns_csv, pl.read_csv), (write_turns_parquet, pl.read_parquet)):
        suffix = ".csv" if writer is write_turns_csv else ".parquet"
        path = writer(rows, tmp_path / f"t{suffix}")
        frame = reader(path)
        assert (
            frame["conversation_id"].to_list()[:20]
            != [  # shuffled
                r["conversation_id"] for r in rows for _ in r["messages"]
            ][:20]
        )
        grouped = {
            key[0]: group.sort("turn")
            for key, group in frame.group_by("conversation_id", maintain_order=True)
        }
        assert list(sorted(grouped)) == [r["conversation_id"] for r in rows]
        for r in rows:
            g = grouped[r["conversation_id"]]
            assert g["turn"].to_list() == list(range(len(r["messages"])))
            assert g.select("role", "content").to_dicts() == _messages(r)
            assert set(g["user_id"]) == {r["user_id"]} and set(g["intent"]) == {r["intent"]}
        assert _yaml(path) == {
            "kind": "conversations",
            "format": "turns",
            "conversation_column": "conversation_id",
            "order_column": "turn",
            "role_column": "role",
            "content_column": "content",
            "user_column": "user_id",
            "label_column": "intent",
        }


def test_main_writes_a_dataset(tmp_path):
    path = main(["--n", "50", "--seed", "7", "--format", "turns", "--out", str(tmp_path)])
    assert path == tmp_path / "support_chats.csv" and path.with_suffix(".yaml").exists()
    assert pl.read_csv(path)["conversation_id"].n_unique() == 50


def test_shipped_sample_is_the_built_one():
    built = build_conversations(1200, seed=7)
    lines = SAMPLE.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [
        {**{k: r[k] for k in FIELDS}, "messages": _messages(r)} for r in built.rows
    ]
    assert SAMPLE.stat().st_size < 1_000_000
    assert _yaml(SAMPLE)["format"] == "messages"
