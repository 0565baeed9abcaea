"""Structured output that adapts to the server: the richest form it accepts, learned once.

Three forms, richest first: `json_schema` (OpenAI's structured outputs), `json_object` with the
schema (llama.cpp, Anyscale and others compile it into a grammar), and `prompt` (no
`response_format`: the prompt shows the schema and asks for the JSON object). The first request of
a run goes alone; when the server refuses its shape (a 400 or 422, or a 500 whose body says the
field is invalid, as llama.cpp's server answers `json_schema`), the next form is tried at once,
not retried as if transient, and the form that worked is kept for the rest of the run.
Schemas are made grammar-friendly: references inlined, no `maxLength` or `maxItems` (limits are
checked when the reply is read), no titles.
"""

import functools
import json
import re
from dataclasses import dataclass

from pydantic import BaseModel

FORMS = ("json_schema", "json_object", "prompt")

# What a 500 says when the server refused a field of the request rather than failed
# (llama.cpp: "Input should be 'text' or 'json_object'").
FIELD_REFUSED = re.compile(
    r"response_format|json_schema|input should be|extra inputs|not supported|unsupported"
    r"|unrecognized|unknown (?:field|param)|invalid (?:field|param|value|request|type)",
    re.I,
)
DROPPED_KEYWORDS = {"maxLength", "maxItems", "title", "description", "$defs"}


def _inline(node, defs: dict):
    """A schema with its references replaced by their definitions and the keywords a grammar
    compiler chokes on (or needs not) left out."""
    if isinstance(node, list):
        return [_inline(value, defs) for value in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        return _inline(defs[node["$ref"].rsplit("/", 1)[1]], defs)
    return {
        key: (
            {name: _inline(sub, defs) for name, sub in value.items()}
            if key == "properties"
            else _inline(value, defs)
        )
        for key, value in node.items()
        if key not in DROPPED_KEYWORDS
    }


@functools.cache
def _schema_text(schema: type[BaseModel]) -> str:
    raw = schema.model_json_schema()
    return json.dumps(_inline(raw, raw.get("$defs", {})))


def grammar_schema(schema: type[BaseModel]) -> dict:
    """The answer model's JSON schema as a grammar compiler takes it (a fresh copy each time:
    litellm may adapt it in place)."""
    return json.loads(_schema_text(schema))


def refuses_shape(err: Exception) -> bool:
    """Whether an error is the server refusing the request's shape, not failing on it."""
    status = getattr(err, "status_code", None)
    if status in (400, 422):
        return "context" not in type(err).__name__.casefold()  # too long a prompt is not shape
    return status == 500 and bool(FIELD_REFUSED.search(str(err)))


@dataclass
class OutputForm:
    """The form used for one model and server; `settled` once a request in it was accepted.
    Shared by the clients of one asset run that talk to the same model and `api_base`."""

    index: int = 0
    settled: bool = False

    @property
    def name(self) -> str:
        return FORMS[self.index]

    @property
    def used(self) -> str | None:
        """The form requests were accepted in, None before any was."""
        return self.name if self.settled else None

    def step_down(self) -> bool:
        """Move to the next, plainer form; False when there is none."""
        if self.index + 1 >= len(FORMS):
            return False
        self.index += 1
        return True

    def request(self, task: str, schema: type[BaseModel], messages: list[dict]) -> dict:
        """The keyword arguments of a completion request in this form."""
        body = grammar_schema(schema)
        if self.name == "json_schema":
            form = {"type": "json_schema", "json_schema": {"name": task, "schema": body}}
            return {"messages": messages, "response_format": form}
        if self.name == "json_object":
            return {
                "messages": messages,
                "response_format": {"type": "json_object", "schema": body},
            }
        shown = (
            "\n\nAnswer with only a JSON object that matches this JSON schema, no other text:\n"
            + json.dumps(body)
        )
        first_user = next(i for i, m in enumerate(messages) if m["role"] == "user")
        asked = dict(messages[first_user], content=messages[first_user]["content"] + shown)
        return {"messages": [*messages[:first_user], asked, *messages[first_user + 1 :]]}
