import json

import polars as pl
import pytest

from clustering_dagster.core.data_in.conversations import CONVERSATIONS_SCHEMA, load_conversations
from clustering_dagster.core.data_in.datasets import find_dataset, scan_datasets
from clustering_dagster.core.data_in.facets import FACETS_SCHEMA, offline_facets
from clustering_dagster.core.data_in.ingest import load_texts
from clustering_dagster.core.errors import InputError

MESSAGES = "kind: conversations\n"
TURNS = "kind: conversations\nformat: turns\n"


def _jsonl(*rows) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def _chat(*turns) -> list[dict]:
    """_chat("user", "hi", "assistant", "hello") -> messages in OpenAI chat format."""
    return [{"role": r, "content": c} for r, c in zip(turns[::2], turns[1::2], strict=True)]


def _load(tmp_path, name: str, content, spec: str):
    path = tmp_path / name
    if isinstance(content, pl.DataFrame):
        content.write_parquet(path)
    else:
        path.write_text(content)
    (tmp_path / (name.rsplit(".", 1)[0] + ".yaml")).write_text(spec)
    return load_conversations(find_dataset(tmp_path, name.rsplit(".", 1)[0]))


def _error(tmp_path, name, content, spec=MESSAGES) -> str:
    with pytest.raises(InputError) as err:
        _load(tmp_path, name, content, spec)
    return str(err.value)


# --- the YAML ---------------------------------------------------------------------------------


def test_text_datasets_are_unchanged_and_conversation_settings_have_defaults(tmp_path):
    (tmp_path / "t.csv").write_text("text\nhello\n")
    (tmp_path / "m.jsonl").write_text("{}\n")
    (tmp_path / "m.yaml").write_text("kind: conversations\nuser_column: person\n")
    (tmp_path / "l.parquet").write_text("")
    (tmp_path / "l.yaml").write_text("kind: conversations\nformat: lmsys\n")
    (tmp_path / "u.csv").write_text("")
    (tmp_path / "u.yaml").write_text(TURNS + "order_column: position\n")
    found, problems = scan_datasets(tmp_path)
    assert problems == {}
    text = found["t"]
    assert (text.kind, text.text_column) == ("texts", "text")
    assert text.format is text.messages_column is text.user_column is None
    m, lmsys, turns = found["m"], found["l"], found["u"]
    assert (m.format, m.messages_column, m.user_column) == ("messages", "messages", "person")
    assert (lmsys.format, lmsys.messages_column) == ("lmsys", "conversation")
    assert (turns.format, turns.order_column, turns.messages_column) == ("turns", "position", None)
    columns = (turns.conversation_column, turns.role_column, turns.content_column)
    assert columns == ("conversation_id", "role", "content")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("kind: chats\n", r"kind must be one of texts, conversations, got 'chats'"),
        (
            "kind: conversations\nformat: sharegpt\n",
            r"format must be one of messages, lmsys, turns",
        ),
        ("kind: conversations\ntext_column: body\n", r"text_column is a setting of text datasets"),
        ("kind: conversations\nembedding_column: v\n", r"embedding_column is a setting of text"),
        ("format: turns\n", r"format is a setting of conversation datasets; add 'kind: conv"),
        ("messages_column: chat\n", r"messages_column is a setting of conversation datasets"),
        (TURNS + "messages_column: chat\n", r"messages_column is not a setting of format turns"),
        (TURNS + "id_column: id\n", r"id_column is not a setting of format turns"),
        (MESSAGES + "order_column: turn\n", r"order_column is not a setting of format messages"),
        (MESSAGES + "user_column: [a]\n", r"user_column must be one column name"),
        (MESSAGES + "role_colum: who\n", r"unknown setting 'role_colum'"),
    ],
)
def test_bad_conversation_settings_name_the_yaml(tmp_path, spec, message):
    (tmp_path / "c.jsonl").write_text("{}\n")
    (tmp_path / "c.yaml").write_text(spec)
    _, problems = scan_datasets(tmp_path)
    assert "c.yaml" in problems["c"]
    with pytest.raises(InputError, match=message):
        find_dataset(tmp_path, "c")


# --- the formats ------------------------------------------------------------------------------


def test_messages_jsonl(tmp_path):
    content = _jsonl(
        {
            "id": "a",
            "who": "u1",
            "intent": "card",
            "team": "x",
            "messages": [
                {"role": "system", "content": "You are   a bank\nassistant."},
                {"role": "user", "content": "  My card\t has not arrived "},
                {"role": "assistant", "content": ""},  # empty: left out
                {"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]},
                {"role": "tool", "content": "card status: posted"},
                {"role": "assistant", "content": [{"type": "text", "text": "It was"}, "posted."]},
            ],
        },
        {"messages": _chat("human", "Hi", "gpt", "Hello"), "team": "y"},
    )
    conversations, report = _load(
        tmp_path,
        "chats.jsonl",
        "\n" + content,  # a blank first line: the rows are lines 1 and 2 (0-based)
        MESSAGES + "id_column: id\nuser_column: who\nlabel_column: intent\n"
        "metadata_columns: [team]\n",
    )
    assert conversations.schema == pl.Schema(CONVERSATIONS_SCHEMA)
    first, second = conversations.rows(named=True)
    assert first["conversation_id"] == "a"
    assert first["messages"] == _chat(
        "system", "You are a bank assistant.",
        "user", "My card has not arrived",
        "tool", "card status: posted",
        "assistant", "It was posted.",
    )  # fmt: skip
    assert (first["user_id"], first["ground_truth"]) == ("u1", "card")
    assert first["metadata"] == '{"team":"x"}'
    assert (first["source_file"], first["line"]) == ("chats.jsonl", 1)
    assert second["conversation_id"] == "chats.jsonl:2"  # no id: <source_file>:<line>
    assert second["messages"] == _chat("user", "Hi", "assistant", "Hello")
    assert (second["user_id"], second["ground_truth"]) == (None, None)
    assert report.rows_read == 2 and report.conversations == 2 and report.messages == 6
    assert report.files == 1 and report.undecodable_bytes == 0


def test_messages_parquet_in_a_folder_with_undecodable_bytes_counted(tmp_path):
    folder = tmp_path / "support"
    folder.mkdir()
    pl.DataFrame(
        {
            "chat": [_chat("user", "Where is my card?", "assistant", "On its way.")],
            "ticket": [7],
        }
    ).write_parquet(folder / "a.parquet")
    row = json.dumps({"chat": _chat("USER", "caf\u00e9 order"), "ticket": 8})
    (folder / "b.jsonl").write_bytes(row.encode().replace(b"\\u00e9", b"\xe9") + b"\n")  # Latin-1
    (tmp_path / "support.yaml").write_text(MESSAGES + "messages_column: chat\nid_column: ticket\n")
    conversations, report = load_conversations(find_dataset(tmp_path, "support"))
    assert conversations["conversation_id"].to_list() == ["7", "8"]
    assert conversations["source_file"].to_list() == ["a.parquet", "b.jsonl"]
    assert conversations["messages"][1].to_list() == _chat("user", "caf\ufffd order")
    assert conversations["line"].to_list() == [0, 0]
    assert report.files == 2 and report.undecodable_bytes == 1


def _lmsys_rows():
    return {
        "conversation_id": ["c1", "c2"],
        "model": ["vicuna-13b", "koala-13b"],
        "conversation": [
            _chat("user", "Bonjour, comment ça va ?", "assistant", "Très bien, merci."),
            _chat("user", "Write a haiku about rain", "assistant", "Rain on the roof..."),
        ],
        "turn": [1, 1],
        "language": ["French", "English"],
        "user": ["u1", "u2"],
    }


@pytest.mark.parametrize("suffix", ["parquet", "jsonl"])
def test_lmsys_keeps_model_and_language_as_metadata(tmp_path, suffix):
    rows = _lmsys_rows()
    content = pl.DataFrame(rows) if suffix == "parquet" else _jsonl(*pl.DataFrame(rows).to_dicts())
    conversations, report = _load(
        tmp_path,
        f"lmsys.{suffix}",
        content,
        "kind: conversations\nformat: lmsys\nuser_column: user\n",
    )
    assert conversations["conversation_id"].to_list() == ["c1", "c2"]  # conversation_id, unset
    assert conversations["user_id"].to_list() == ["u1", "u2"]
    assert conversations["metadata"].to_list() == [
        '{"model":"vicuna-13b","language":"French"}',
        '{"model":"koala-13b","language":"English"}',
    ]
    assert conversations["messages"][1].to_list() == rows["conversation"][1]
    assert conversations["line"].to_list() == [0, 1]
    assert report.conversations == 2 and report.messages == 4


TURN_ROWS = [  # (conversation, turn, role, content, user), shuffled
    ("b", 2, "assistant", "Sure, here is one.", "u2"),
    ("a", 3, "user", "thanks!", "u1"),
    ("a", 1, "user", "How do I reset my PIN?", "u1"),
    ("b", 1, "user", "Tell me a joke", "u2"),
    ("a", 2, "assistant", "Go to Settings > Card > PIN.", "u1"),
]


@pytest.mark.parametrize("suffix", ["csv", "parquet", "jsonl"])
def test_turns_are_grouped_and_ordered(tmp_path, suffix):
    frame = pl.DataFrame(
        TURN_ROWS, schema=["conv", "turn", "role", "content", "user"], orient="row"
    )
    content = {
        "csv": lambda: frame.write_csv(),
        "parquet": lambda: frame,
        "jsonl": lambda: _jsonl(*frame.to_dicts()),
    }[suffix]()
    conversations, report = _load(
        tmp_path,
        f"turns.{suffix}",
        content,
        TURNS + "conversation_column: conv\nuser_column: user\nmetadata_columns: [user]\n",
    )
    assert conversations["conversation_id"].to_list() == ["b", "a"]  # by their first rows
    assert conversations["line"].to_list() == [0, 1]
    assert conversations["user_id"].to_list() == ["u2", "u1"]
    assert conversations["metadata"].to_list() == ['{"user":"u2"}', '{"user":"u1"}']
    assert conversations["messages"].to_list() == [
        _chat("user", "Tell me a joke", "assistant", "Sure, here is one."),
        _chat(
            "user", "How do I reset my PIN?",
            "assistant", "Go to Settings > Card > PIN.",
            "user", "thanks!",
        ),
    ]  # fmt: skip
    assert report.rows_read == 5 and report.conversations == 2 and report.messages == 5


def test_turn_order_is_numeric_not_text(tmp_path):
    csv = "conversation_id,turn,role,content\nx,10,assistant,ten\nx,9,user,nine\nx,1.5,user,one\n"
    conversations, _ = _load(tmp_path, "t.csv", csv, TURNS)
    assert [m["content"] for m in conversations["messages"][0]] == ["one", "nine", "ten"]


# --- the errors -------------------------------------------------------------------------------


def test_missing_columns_name_file_line_and_column(tmp_path):
    content = _jsonl({"messages": _chat("user", "a")}, {"chat": _chat("user", "b")})
    message = _error(tmp_path, "m.jsonl", content)
    assert "m.jsonl, line 2: no column 'messages' (messages_column)" in message
    assert "['chat']" in message
    frame = pl.DataFrame({"chat": [_chat("user", "a")]})
    message = _error(tmp_path, "p.parquet", frame)
    assert "p.parquet: no column 'messages' (messages_column); its columns are ['chat']" in message
    message = _error(
        tmp_path,
        "u.jsonl",
        _jsonl({"messages": _chat("user", "a")}),
        MESSAGES + "user_column: who\n",
    )
    assert "u.jsonl: no column 'who' (user_column)" in message
    message = _error(tmp_path, "t.csv", "conversation_id,role,content\nx,user,hi\n", TURNS)
    assert "t.csv: no column 'turn' (order_column)" in message


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (
            {"messages": "hello"},
            "line 2: column 'messages' holds str \"hello\", not a list of messages",
        ),
        ({"messages": None}, "line 2: column 'messages' holds null, not a list"),
        ({"messages": [{"content": "hi"}]}, "line 2: column 'messages', message 1 has no role"),
        ({"messages": [{"role": "user"}]}, "line 2: column 'messages', message 1 has no content"),
        ({"messages": ["hi"]}, "line 2: column 'messages', message 1 is str \"hi\", not a {role"),
        (
            {"messages": _chat("user", "a", "narrator", "b")},
            "line 2: column 'messages', message 2 has role str \"narrator\"; roles are system",
        ),
        (
            {"messages": [{"role": "user", "content": 5}]},
            "line 2: column 'messages', message 1 has content int 5, not text",
        ),
        ({"messages": []}, "line 2: column 'messages' holds an empty conversation (no messages)"),
        (
            {"messages": _chat("system", "be nice", "user", "  ", "assistant", "ok")},
            "line 2: column 'messages' holds a conversation with no user message with content",
        ),
    ],
)
def test_bad_messages_name_file_line_and_column(tmp_path, row, expected):
    content = _jsonl({"messages": _chat("user", "fine")}, row)
    message = _error(tmp_path, "m.jsonl", content)
    assert f"m.jsonl, {expected}" in message


def test_bad_messages_in_parquet_name_the_row(tmp_path):
    frame = pl.DataFrame({"messages": [_chat("user", "fine"), _chat("assistant", "only me")]})
    message = _error(tmp_path, "m.parquet", frame)
    assert (
        "m.parquet, row 2: column 'messages' holds a conversation with no user message" in message
    )


def test_unreadable_and_empty_files(tmp_path):
    assert "m.jsonl, line 2: not valid JSON" in _error(
        tmp_path, "m.jsonl", '{"messages": []}\n{oops\n'
    )
    assert "n.jsonl, line 1: expected a JSON object per line" in _error(
        tmp_path, "n.jsonl", "[1]\n"
    )
    assert "e.jsonl: the file is empty" in _error(tmp_path, "e.jsonl", "")
    assert "h.csv: the file has a header but no rows" in _error(tmp_path, "h.csv", "a,b\n", TURNS)
    assert "c.csv: format messages reads jsonl, ndjson, parquet files, not csv" in _error(
        tmp_path, "c.csv", "messages\nx\n"
    )


def test_a_text_dataset_is_not_read_as_conversations(tmp_path):
    (tmp_path / "t.csv").write_text("text\nhi\n")
    with pytest.raises(InputError, match=r"t\.csv: not a conversation dataset; set 'kind: conv"):
        load_conversations(find_dataset(tmp_path, "t"))
    texts, _ = load_texts(find_dataset(tmp_path, "t"))  # and texts load as before
    assert texts["text"].to_list() == ["hi"]


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        (
            "x,1,user,a\nx,2,assistant,b\nx,1,user,c\n",
            "t.csv, row 3: column 'turn': conversation 'x' repeats order '1' (also at row 1)",
        ),
        ("x,1,user,a\nx,,assistant,b\n", "t.csv, row 2: column 'turn' is null"),
        (
            "x,1,user,a\nx,two,assistant,b\n",
            "t.csv, row 2: column 'turn' holds str \"two\", not a number",
        ),
        ("x,1,user,a\nx,2,robot,b\n", "t.csv, row 2: column 'role' has role str \"robot\""),
        ("x,1,user,a\nx,2,,b\n", "t.csv, row 2: column 'role' has no role"),
        ("x,1,user,a\nx,2,assistant,\n", "t.csv, row 2: column 'content' has no content"),
        (
            "x,1,user,a\ny,1,assistant,b\n",
            "t.csv, row 2: conversation 'y': column 'content' holds a conversation with no user message",
        ),
        ("x,1,user,a\n,2,user,b\n", "t.csv, row 2: column 'conversation_id' is null"),
    ],
)
def test_bad_turns_name_file_row_and_column(tmp_path, rows, expected):
    message = _error(tmp_path, "t.csv", "conversation_id,turn,role,content\n" + rows, TURNS)
    assert expected in message


def test_repeated_conversation_ids_are_named_with_their_places(tmp_path):
    content = _jsonl(
        {"id": "a", "messages": _chat("user", "one")},
        {"id": "b", "messages": _chat("user", "two")},
        {"id": "a", "messages": _chat("user", "three")},
    )
    message = _error(tmp_path, "m.jsonl", content, MESSAGES + "id_column: id\n")
    assert "column 'id' repeats 1 conversation ids" in message
    assert "'a' at m.jsonl line 1, m.jsonl line 3" in message
    folder = tmp_path / "turns"
    folder.mkdir()
    (folder / "1.csv").write_text("conversation_id,turn,role,content\nx,1,user,a\n")
    (folder / "2.csv").write_text("conversation_id,turn,role,content\ny,1,user,b\nx,1,user,c\n")
    (tmp_path / "turns.yaml").write_text(TURNS)
    with pytest.raises(
        InputError, match=r"'conversation_id' repeats .* 'x' at 1.csv row 1, 2.csv row 2"
    ):
        load_conversations(find_dataset(tmp_path, "turns"))


# --- offline facets ---------------------------------------------------------------------------


def _facets(*conversations: list[dict]) -> list[dict]:
    frame = pl.DataFrame(
        {"messages": list(conversations)}, schema={"messages": CONVERSATIONS_SCHEMA["messages"]}
    )
    facets = offline_facets(frame)
    assert facets.schema == pl.Schema(FACETS_SCHEMA)
    return facets.rows(named=True)


def test_request_skips_greetings_thanks_and_one_word_turns():
    rows = _facets(
        _chat("user", "hi", "assistant", "Hello!", "user", "my card has not arrived yet"),
        _chat("user", "Hello there", "user", "Good morning!", "user", "hey!", "user", "Continue",
              "user", "Thank you so much", "user", "Why was I charged twice?"),
        _chat("user", "hi", "assistant", "Hi!", "user", "thanks", "user", "ok"),  # none: the longest
        _chat("user", "你好", "user", "请帮我写一首关于大海的诗"),
    )  # fmt: skip
    assert [r["request"] for r in rows] == [
        "my card has not arrived yet",
        "Why was I charged twice?",
        "thanks",
        "请帮我写一首关于大海的诗",
    ]
    assert [r["first_user_turn"] for r in rows] == ["hi", "Hello there", "hi", "你好"]


def test_counts_and_whole_conversation_rendering():
    (row,) = _facets(
        _chat(
            "system", "You are a bank assistant.",
            "user", "Where is my card?",
            "assistant", "Let me check.",
            "tool", "status: posted",
            "assistant", "It was posted yesterday.",
            "user", "thanks",
        )
    )  # fmt: skip
    assert row["conversation"] == (
        "system: You are a bank assistant.\nuser: Where is my card?\nassistant: Let me check.\n"
        "tool: status: posted\nassistant: It was posted yesterday.\nuser: thanks"
    )
    assert (row["user_turns"], row["assistant_turns"], row["turns"]) == (2, 2, 6)
    assert row["chars"] == sum(
        map(len, ["You are a bank assistant.", "Where is my card?", "Let me check.",
                  "status: posted", "It was posted yesterday.", "thanks"])
    )  # fmt: skip
    assert row["task"] is None and row["concerning"] is None


def test_a_long_conversation_is_cut_to_2000_characters():
    (row,) = _facets(_chat("user", "word " * 300, "assistant", "answer " * 300))
    assert len(row["conversation"]) == 2000 and row["conversation"].endswith("…")
    assert row["conversation"].startswith("user: word word")
    assert row["chars"] == len("word " * 300) + len("answer " * 300)


def test_language_of_the_user_turns():
    rows = _facets(
        _chat("user", "hi", "assistant", "Bonjour !", "user", "my card has not arrived"),
        _chat("user", "activate card"),
        _chat("user", "passcode reset", "user", "it says my code is wrong"),  # joined turns
        _chat("user", "Bonjour, je n'arrive pas à me connecter à mon compte."),
        _chat("user", "Hallo, ich habe meine Karte verloren. Was soll ich tun?"),
        _chat("user", "Hola, ¿cómo puedo cambiar mi contraseña?"),
        _chat("user", "hi", "assistant", "hello"),  # too short to tell: null, not a guess
    )
    assert [r["language"] for r in rows] == ["en", "en", "en", "fr", "de", "es", None]


def test_short_english_bank_queries_come_out_english():
    queries = [
        "my card has not arrived", "card not working", "how do I top up", "pending transfer",
        "why was I charged a fee", "exchange rate wrong", "lost my card", "change my PIN",
        "refund not showing", "verify my identity", "apple pay not working", "where is my money",
    ]  # fmt: skip
    rows = _facets(*(_chat("user", "hello", "user", q) for q in queries))
    assert [r["language"] for r in rows] == ["en"] * len(queries)
    assert [r["request"] for r in rows] == queries


def test_facets_of_loaded_conversations_keep_input_order(tmp_path):
    frame = pl.DataFrame(
        TURN_ROWS, schema=["conversation_id", "turn", "role", "content", "u"], orient="row"
    )
    conversations, _ = _load(tmp_path, "t.csv", frame.write_csv(), TURNS)
    facets = offline_facets(conversations)
    assert facets["request"].to_list() == ["Tell me a joke", "How do I reset my PIN?"]
    assert facets["turns"].to_list() == [2, 3]
    assert offline_facets(conversations.head(0)).height == 0
