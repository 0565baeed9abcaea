"""Reading a model's reply: the JSON object in it, its harmless defects repaired, validated.

Small models wrap JSON in code fences or prose, leave trailing commas and raw control characters
in strings, capitalise keys, nest the object one level down, return a bare list, or add an empty
entry to a list; all of that is repaired, and each repair is noted. What changes the meaning (a
missing field, a coherence of 11) is refused with a message that tells the model what to fix.
Length limits are checked here, not in the JSON schema (a server compiles the schema into a
grammar, and a large `maxLength` can crash its compiler): a reply over a limit is refused once,
and cut at a word boundary (marked "…") when it is over the limit again (`lenient`).
"""

import html
import json
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
)

# Titles are asked for in at most 10 words; a reply of up to 12 is accepted, a longer one is cut
# to 10 once the model was asked again.
ASKED_TITLE_WORDS = 10
MAX_TITLE_WORDS = 12
MAX_SUMMARY_CHARS = 1200
MAX_DESCRIPTION_CHARS = 600


class InvalidReply(ValueError):
    """A reply that is not the requested JSON; the message tells the model what to fix."""


@dataclass
class Reading:
    """How one reply is read: `lenient` allows cutting over-long text; `repairs` collects what
    was repaired (it is shared with the validators through pydantic's validation context)."""

    lenient: bool = False
    repairs: list[str] = field(default_factory=list)


def _reading(info: ValidationInfo) -> Reading:
    return info.context if isinstance(info.context, Reading) else Reading()


# The tags prompts wrap data in; small models echo them, escaped or not, into their answers.
PROMPT_MARKUP = re.compile(
    r"</?(?:text|title|summary|name|description|cluster|clusters|neighbour_cluster|category"
    r"|categories|candidates|nearby)\b[^>]*>"
)


def clean(text: str, info: ValidationInfo | None = None) -> str:
    """Whitespace collapsed, control characters (raw or escaped in the JSON) made spaces, HTML
    escapes and the prompt's tags undone; with `info`, each kind of repair made is noted."""
    spaced = "".join(" " if unicodedata.category(c) == "Cc" else c for c in text)
    unescaped = PROMPT_MARKUP.sub(" ", html.unescape(spaced))
    if info is not None:
        if spaced != text:
            note_repair(info, "control characters")
        if unescaped != spaced:
            note_repair(info, "prompt markup")
    return " ".join(unescaped.split())


def cut_words(text: str, words: int) -> str:
    return " ".join(text.split()[:words]).rstrip(" ,;:-") + "…"


def cut_chars(text: str, chars: int) -> str:
    head = text[: chars - 1]
    return (head.rsplit(" ", 1)[0] if " " in head else head).rstrip(" ,;:-") + "…"


def bare(name: str, info: ValidationInfo | None = None) -> str:
    """A title or name cleaned, without surrounding quotes, dots or the "…" of a cut."""
    return clean(name, info).strip(" .\"'…")


def _allow_cut(info: ValidationInfo, too_long: str, repair: str) -> None:
    """An over-long value is refused on the first reading and cut (noted) on the lenient one."""
    reading = _reading(info)
    if not reading.lenient:
        raise ValueError(too_long)
    reading.repairs.append(repair)


def _title(value: str, info: ValidationInfo) -> str:
    value = bare(value, info)
    if not value:
        raise ValueError("the title is empty")
    if len(value.split()) > MAX_TITLE_WORDS:
        _allow_cut(info, f"the title has more than {MAX_TITLE_WORDS} words", "title cut")
        value = cut_words(value, ASKED_TITLE_WORDS)
    return value


def _prose(limit: int):
    def check(value: str, info: ValidationInfo) -> str:
        value = clean(value, info)
        if not value:
            raise ValueError("the text is empty")
        if len(value) > limit:
            _allow_cut(info, f"the text has more than {limit} characters", "text cut")
            value = cut_chars(value, limit)
        return value

    return check


# min_length reaches the JSON schema, so a grammar cannot produce an empty string
Title = Annotated[str, Field(min_length=1), AfterValidator(_title)]
Summary = Annotated[str, Field(min_length=1), AfterValidator(_prose(MAX_SUMMARY_CHARS))]
Description = Annotated[str, Field(min_length=1), AfterValidator(_prose(MAX_DESCRIPTION_CHARS))]


def _json_text(content: str) -> str:
    text = content.strip()
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.S)
    if fenced:
        text = fenced.group(1)
    start = next((i for i, c in enumerate(text) if c in "{["), -1)
    end = text.rfind("}" if start < 0 or text[start] == "{" else "]")
    if start < 0 or end < start or "}" not in text[start:]:
        raise InvalidReply("the reply holds no JSON object")
    return text[start : end + 1]


def _load(text: str, reading: Reading):
    """The JSON value; raw control characters inside strings (the validators replace them) and
    trailing commas are let pass."""
    without_commas = re.sub(r",\s*([}\]])", r"\1", text)
    for candidate, repair in ((text, None), (without_commas, "trailing comma")):
        try:
            data = json.loads(candidate, strict=False)
        except json.JSONDecodeError as err:
            error = err
            continue
        if repair:
            reading.repairs.append(repair)
        return data
    raise InvalidReply(f"the reply is not valid JSON ({error})") from error


def _reshape(data, schema: type[BaseModel], reading: Reading):
    """A bare list, a single-item list, an object nested one level down or keys in other case
    made into the object the schema asks for."""
    fields = list(schema.model_fields)
    if isinstance(data, list):
        if len(fields) == 1:
            reading.repairs.append("bare list")
            return {fields[0]: data}
        if len(data) == 1:
            reading.repairs.append("single-item list")
            data = data[0]
    if not isinstance(data, dict):
        raise InvalidReply("the reply is not a JSON object")
    if len(data) == 1 and not set(fields) & set(data):
        inner = next(iter(data.values()))
        if isinstance(inner, dict):
            reading.repairs.append("nested object")
            data = inner
    keys = {str(k).strip().casefold(): k for k in data}
    renamed = {f: data[keys[f]] for f in fields if f not in data and f in keys}
    if renamed:
        reading.repairs.append("key case")
    return data | renamed


def parse_reply(content: str, schema: type[BaseModel], reading: Reading | None = None) -> BaseModel:
    """The reply's JSON object, repaired and validated against `schema`."""
    reading = reading or Reading()
    data = _reshape(_load(_json_text(content), reading), schema, reading)
    try:
        return schema.model_validate(data, context=reading)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'object'}: {e['msg']}" for e in err.errors()
        )
        raise InvalidReply(f"the JSON does not match the requested fields ({problems})") from err


def not_copied(copied: Sequence[str], what: str) -> Callable[[BaseModel], BaseModel]:
    """A check that no title or name in a reply is one of the `copied` names (small models copy
    the prompt's examples, or one child's title for a whole group); `what` says what they are."""
    banned = {bare(name).casefold() for name in copied}

    def names(value):
        if isinstance(value, dict):
            for key, item in value.items():
                if key in ("title", "name") and isinstance(item, str):
                    yield item
                else:
                    yield from names(item)
        elif isinstance(value, list):
            for item in value:
                yield from names(item)

    def check(answer: BaseModel) -> BaseModel:
        found = [n for n in names(answer.model_dump()) if bare(n).casefold() in banned]
        if found:
            raise InvalidReply(f"{found[0]!r} is {what}, not a name for what they have in common")
        return answer

    return check


def note_repair(info: ValidationInfo, what: str) -> None:
    """Record a repair made by a model's own validator."""
    _reading(info).repairs.append(what)


def clamped(low: int, high: int, what: str):
    """An integer answer from `low` to `high`: one outside (a grammar cannot bound integers) is
    clamped and noted as a repair, not asked again."""

    def clamp(value: int, info: ValidationInfo) -> int:
        if low <= value <= high:
            return value
        note_repair(info, f"{what} clamped")
        return min(high, max(low, value))

    schema = {"type": "integer", "minimum": low, "maximum": high}
    return Annotated[int, AfterValidator(clamp), WithJsonSchema(schema)]
