"""Facets of each conversation computed offline, with no model and no network: what the user
asked, the turns, the language. The facets an LLM gives (`task`, `concerning`) are null here."""

import functools
import re

import polars as pl
from py3langid.langid import MODEL_FILE, LanguageIdentifier

FACETS_SCHEMA = {
    "request": pl.String,
    "first_user_turn": pl.String,
    "conversation": pl.String,
    "task": pl.String,
    "language": pl.String,
    "concerning": pl.Int8,
    "user_turns": pl.Int32,
    "assistant_turns": pl.Int32,
    "turns": pl.Int32,
    "chars": pl.Int32,
}
CONVERSATION_CHARS = 2000  # the rendered conversation is cut to this many characters
LANGUAGE_CHARS = 2000  # the language is detected on this many characters of the user turns
MIN_LANGUAGE_CONFIDENCE = 0.05  # below it (e.g. "hi", "ok") the language is null, not a guess
# English is most of what chat logs hold: a prior that settles short, ambiguous English texts
# ("activate card", "hello there") and leaves longer or clearly other texts alone.
ENGLISH_PRIOR = 3.0
# A user turn made only of these words is a greeting, thanks or a call for help ("hi, I need some
# help", "can you help me?"), not the request.
SMALL_TALK = frozenset(
    """hi hello hey heya hiya howdy yo sup greetings good morning afternoon evening day night
    there all everyone again what s up whats how are is it going doing today you dear sir madam
    friend chatgpt gpt assistant bot claude thanks thank thx ty cheers so much very a lot ok
    okay great cool nice bonjour salut merci hallo danke hola gracias ciao grazie 你好 您好 谢谢
    i m need needs some help can could would me please pls have got question questions quick
    with something want wanted to ask hoping wonder wondering
    """.split()  # noqa: SIM905 (a list of strings reads worse)
)
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # written without spaces:
_WORD = re.compile(f"[{_CJK}]|[^\\s{_CJK}]+")  # each of their characters counts as a word


@functools.cache
def _identifier() -> LanguageIdentifier:
    """py3langid's model (in its wheel), limited to languages with an ISO 639-1 code."""
    identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    identifier.set_languages(sorted({code for code in identifier.labels if len(code) == 2}))
    return identifier


def detect_language(text: str) -> str | None:
    """The ISO 639-1 code of the text's language, or null when it has no letters or is too short
    to tell. Deterministic: a naive Bayes model, no sampling."""
    text = text[:LANGUAGE_CHARS]
    if not any(ch.isalpha() for ch in text):
        return None
    scores = dict(_identifier().rank(text))  # best first: ties go to the same language every run
    scores["en"] *= ENGLISH_PRIOR
    language = max(scores, key=scores.__getitem__)
    confidence = scores[language] / sum(scores.values())
    return language if confidence >= MIN_LANGUAGE_CONFIDENCE else None


def is_small_talk(text: str) -> bool:
    """A greeting, thanks, call for help or one-word turn ("hi", "hello there", "can you help
    me?", "thanks", "continue")."""
    words = re.findall(r"\w+", text.lower())
    return all(w in SMALL_TALK for w in words) or len(_WORD.findall(text)) <= 1


def request(user_turns: list[str]) -> str | None:
    """The first user turn that is not small talk; failing that, the longest user turn."""
    for turn in user_turns:
        if not is_small_talk(turn):
            return turn
    return max(user_turns, key=len, default=None)


def render(messages: list[dict]) -> str:
    """The conversation as `role: content` lines, cut to CONVERSATION_CHARS characters."""
    text = "\n".join(f"{m['role']}: {m['content']}" for m in messages)
    return text if len(text) <= CONVERSATION_CHARS else text[: CONVERSATION_CHARS - 1] + "…"


def _facets(messages: list[dict] | None) -> dict:
    messages = [{**m, "content": m["content"] or ""} for m in messages or ()]
    users = [m["content"] for m in messages if m["role"] == "user" and m["content"]]
    return {
        "request": request(users),
        "first_user_turn": users[0] if users else None,
        "conversation": render(messages),
        "task": None,
        "language": detect_language("\n".join(users)),
        "concerning": None,
        "user_turns": len(users),
        "assistant_turns": sum(m["role"] == "assistant" for m in messages),
        "turns": len(messages),
        "chars": sum(len(m["content"]) for m in messages),
    }


def offline_facets(conversations: pl.DataFrame) -> pl.DataFrame:
    """One row of facets per conversation (a `messages` column as `load_conversations` gives),
    in input order: `request` (the first user turn that is not a greeting, thanks or one word;
    else the longest), `first_user_turn`, `conversation` (every turn as `role: content` lines,
    cut to 2,000 characters), `language` (ISO 639-1 code of the user turns), turn counts (`turns`
    counts every message, system and tool too) and `chars` (of all contents); `task` and
    `concerning` are null until an LLM fills them."""
    rows = [_facets(messages) for messages in conversations["messages"].to_list()]
    return pl.DataFrame(rows, schema=FACETS_SCHEMA)
