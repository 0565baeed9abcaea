"""The questions of the merged hierarchy (Clio's four steps): prompts, answers and checks."""

import difflib
import html
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, Field, ValidationInfo, model_validator

from ..config.run_config import LLMSettings
from ..llm.client import Ask, escape, instructions
from ..llm.replies import Description, InvalidReply, Summary, Title, bare, not_copied, note_repair

# Children listed at most in one prompt that names a parent (the largest first).
MAX_CHILDREN_SHOWN = 40
# Tokens an answer needs at most: a title with 2-3 sentences, a choice, and per category.
DESCRIPTION_TOKENS = 400
CHOICE_TOKENS = 80
TOKENS_PER_CATEGORY = 120


def categories_tokens(n: int) -> int:
    return 50 + TOKENS_PER_CATEGORY * n


# The good and the bad category name the proposal prompt shows; a reply copying one is refused.
NAME_EXAMPLES = ("Card delivery and activation", "Banking")


@dataclass(frozen=True)
class Node:
    """A node of the merged tree: its title and summary; `fallback` when they are not the
    model's; `method` says how the node was formed ("llm", or "offline" for a stand-in)."""

    title: str
    summary: str
    fallback: bool = False
    method: str = "llm"


class Category(BaseModel):
    name: Title
    description: Description


class Categories(BaseModel):
    categories: list[Category] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _drop_blank(cls, data, info: ValidationInfo):
        """Entries without a name are dropped, a bare name gets itself as description."""
        items = data.get("categories") if isinstance(data, dict) else None
        if not isinstance(items, list):
            return data
        kept = []
        for item in items:
            if isinstance(item, str):
                item = {"name": item, "description": item}
                note_repair(info, "bare category name")
            if isinstance(item, dict) and not bare(str(item.get("name") or "")):
                note_repair(info, "blank category dropped")
                continue
            kept.append(item)
        return data | {"categories": kept or items}


class Choice(BaseModel):
    category: str = Field(min_length=1)


class ParentDescription(BaseModel):
    title: Title
    summary: Summary


def _cluster_xml(node: Node, chars: int, size: int | None = None) -> str:
    size_attribute = f' size="{size}"' if size is not None else ""
    return (
        f"<cluster{size_attribute}><title>{escape(node.title)}</title>"
        f"<summary>{escape(node.summary, chars)}</summary></cluster>"
    )


def _categories_xml(categories: Sequence[Category], chars: int) -> str:
    return "\n".join(
        f"<category><name>{escape(c.name)}</name>"
        f"<description>{escape(c.description, chars)}</description></category>"
        for c in categories
    )


CATEGORIES_FORMAT = (
    'Answer with a JSON object: {"categories": [{"name": "...", "description": "..."}]}'
)


def proposal_prompt(
    settings: LLMSettings, children: Sequence[Node], nearby: Sequence[Node], want: int
) -> str:
    """Clio's first step: candidate parents for one neighbourhood, nearby clusters as contrast."""
    chars = settings.chars_per_example
    parts = [
        instructions(
            settings,
            f"Below are {len(children)} clusters from one neighbourhood of a map of texts, each "
            f"with a title and a summary. Propose {fewest(want)} to at most {want} higher-level "
            "categories that together cover all of them. Each category is broader than the "
            "clusters it covers but still specific (for example "
            f'"{NAME_EXAMPLES[0]}", not "{NAME_EXAMPLES[1]}"): '
            "a name of at most 10 words and a one-sentence description.",
        ),
        "<clusters>\n" + "\n".join(_cluster_xml(c, chars) for c in children) + "\n</clusters>",
    ]
    if nearby:
        parts.append(
            "Nearby clusters outside this neighbourhood, for contrast only (do not cover them):\n"
            "<nearby>\n"
            + "\n".join(f"<cluster><title>{escape(c.title)}</title></cluster>" for c in nearby)
            + "\n</nearby>"
        )
    parts.append(CATEGORIES_FORMAT)
    return "\n\n".join(parts)


def dedupe_prompt(settings: LLMSettings, candidates: Sequence[Category], target: int) -> str:
    """Clio's second step: one list of distinct parents from every neighbourhood's candidates."""
    return "\n\n".join(
        [
            instructions(
                settings,
                f"Below are {len(candidates)} candidate categories proposed for different parts "
                "of one map of texts. Merge duplicates and near-duplicates and return "
                f"{fewest(target)} to at most {target} distinct categories that together cover "
                "all the candidates, each with "
                "a specific name of at most 10 words and a one-sentence description.",
            ),
            "<candidates>\n"
            + _categories_xml(candidates, settings.chars_per_example)
            + "\n</candidates>",
            CATEGORIES_FORMAT,
        ]
    )


def assignment_prompt(settings: LLMSettings, child: Node, parents: Sequence[Category]) -> str:
    """Clio's third step: the one parent that fits a child best."""
    return "\n\n".join(
        [
            instructions(
                settings,
                "Which one of the categories below fits this cluster best? Give the category's "
                "name exactly as written.",
            ),
            _cluster_xml(child, settings.chars_per_example),
            "<categories>\n"
            + _categories_xml(parents, settings.chars_per_example)
            + "\n</categories>",
            'Answer with a JSON object: {"category": "..."}',
        ]
    )


def rename_prompt(settings: LLMSettings, children: Sequence[Node], sizes: Sequence[int]) -> str:
    """Clio's last step: a parent named from the children it actually got."""
    order = np.argsort(-np.asarray(sizes), kind="stable")[:MAX_CHILDREN_SHOWN]
    return "\n\n".join(
        [
            instructions(
                settings,
                "The clusters below were grouped under one category. Write a title of at most "
                "10 words and a summary of 2-3 sentences that say precisely what these clusters "
                "have in common, specific enough to tell this group apart from other groups.",
            ),
            "<clusters>\n"
            + "\n".join(
                _cluster_xml(children[i], settings.chars_per_example, int(sizes[i])) for i in order
            )
            + "\n</clusters>",
            'Answer with a JSON object: {"title": "...", "summary": "..."}',
        ]
    )


def normalised(name: str) -> str:
    """A name without case, punctuation or extra whitespace."""
    return " ".join(re.sub(r"[^\w]+", " ", name).casefold().split())


def matching_name(given: str, names: Sequence[str]) -> str | None:
    """The one of `names` a reply means: equal but for case, whitespace, punctuation or HTML
    escapes (small models copy "&amp;" from the prompt), else the only one it contains (or that
    contains it), else the only close spelling."""
    by_form = {normalised(n): n for n in names}
    form = normalised(html.unescape(given))
    if form in by_form:
        return by_form[form]
    padded = f" {form} "
    inside = [n for f, n in by_form.items() if f" {f} " in padded or padded in f" {f} "]
    if len(inside) == 1 and form:
        return inside[0]
    close = difflib.get_close_matches(form, list(by_form), n=2, cutoff=0.8)
    if len(close) == 1:
        return by_form[close[0]]
    return None


def fewest(wanted: int) -> int:
    """The fewest categories accepted when up to `wanted` are asked for: one category for a
    whole neighbourhood would collapse the level."""
    return min(2, wanted)


def at_least(n: int) -> Callable[[Categories], Categories]:
    """A check that a reply gives at least `n` distinct categories."""

    def enough_categories(answer: Categories) -> Categories:
        if len({normalised(c.name) for c in answer.categories}) < n:
            raise InvalidReply(f"give at least {n} distinct categories")
        return answer

    return enough_categories


def not_a_child(children: Sequence[Node]) -> Callable[[BaseModel], BaseModel]:
    """A check that a group of two or more children is not named after one of them."""
    titles = [c.title for c in children] if len(children) > 1 else []
    return not_copied(titles, "one cluster's own title")


def one_of(parents: Sequence[Category]) -> Callable[[Choice], Choice]:
    """A check that a reply names one of `parents`; a near miss is repaired to the exact name."""
    names = [p.name for p in parents]

    def near_miss_name(choice: Choice) -> Choice:
        name = matching_name(choice.category, names)
        if name is None:
            raise InvalidReply(
                f"{choice.category!r} is not one of the categories; give one of them exactly"
            )
        return choice if name == choice.category else Choice(category=name)

    return near_miss_name


def proposal_question(
    settings: LLMSettings, children: Sequence[Node], nearby: Sequence[Node], want: int
) -> Ask:
    checks = (
        at_least(fewest(want)),
        not_copied(NAME_EXAMPLES, "the prompt's example"),
        not_a_child(children),
    )
    prompt = proposal_prompt(settings, children, nearby, want)
    return Ask("parent_candidates", prompt, Categories, checks, categories_tokens(want))


def dedupe_question(settings: LLMSettings, candidates: Sequence[Category], target: int) -> Ask:
    checks = (at_least(fewest(min(target, len(candidates)))),)
    prompt = dedupe_prompt(settings, candidates, target)
    return Ask("deduplicated_categories", prompt, Categories, checks, categories_tokens(target))


def assignment_question(settings: LLMSettings, child: Node, parents: Sequence[Category]) -> Ask:
    prompt = assignment_prompt(settings, child, parents)
    return Ask("parent_assignment", prompt, Choice, (one_of(parents),), CHOICE_TOKENS)


def rename_question(settings: LLMSettings, children: Sequence[Node], sizes: Sequence[int]) -> Ask:
    prompt = rename_prompt(settings, children, sizes)
    return Ask(
        "parent_description",
        prompt,
        ParentDescription,
        (not_a_child(children),),
        DESCRIPTION_TOKENS,
    )
