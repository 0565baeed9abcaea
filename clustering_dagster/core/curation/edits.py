"""An edit as stored: one row of `clustering.edits`, what each kind holds in its `value`."""

from dataclasses import dataclass, field
from datetime import datetime

# kind -> what `value` holds
KINDS = {
    "rename": "name, and summary (optional)",
    "merge": "others: the [level_name, cluster_id] merged into the target",
    "move": "parent: the [level_name, cluster_id] the target now sits under",
    "move_texts": "nothing: the texts moved into the target are the edit's texts",
    "split": "name: of the new cluster that takes the edit's texts out of the target",
    "tag": "tag",
    "flag": "note: why it needs review",
    "undo": "edit: the id of the edit undone",
}

# A cluster a person made (by a split) has this id plus its edit's id: far above any id a run
# gives (runs number a level's clusters from 0, one more per new cluster).
PERSON_ID_BASE = 1_000_000


@dataclass(frozen=True)
class Edit:
    edit_id: int
    kind: str
    level_name: str | None  # the target (None for undo)
    cluster_id: int | None
    value: dict
    author: str
    note: str | None = None
    made_at: datetime | None = None
    made_on: str | None = None  # the published version of the tree it was made on
    texts: tuple[str, ...] = field(default=())  # text hashes moved (move_texts, split)

    @property
    def node_id(self) -> str | None:
        return None if self.level_name is None else f"{self.level_name}/{self.cluster_id}"

    def nodes(self) -> list[str]:
        return named_nodes(self.kind, self.node_id, self.value)


def named_nodes(kind: str, node_id: str | None, value: dict) -> list[str]:
    """Every node an edit names: its target, and those merged into it or moved under."""
    named = [node_id] if node_id else []
    if kind == "merge":
        named += ["{}/{}".format(*other) for other in value["others"]]
    if kind == "move":
        named.append("{}/{}".format(*value["parent"]))
    return named


def person_node(level_name: str, edit_id: int) -> tuple[str, int]:
    """The node id and cluster id of the cluster a split makes."""
    cluster = PERSON_ID_BASE + edit_id
    return f"{level_name}/{cluster}", cluster


def active(edits: list[Edit]) -> list[Edit]:
    """The edits in force: not undos, and not undone; in the order they were made."""
    undone = {e.value["edit"] for e in edits if e.kind == "undo"}
    return sorted(
        (e for e in edits if e.kind != "undo" and e.edit_id not in undone),
        key=lambda e: e.edit_id,
    )


def describe(kind: str, node_id: str | None, value: dict, texts: int = 0) -> str:
    """One line saying what an edit does."""
    if kind == "rename":
        return f"{node_id} named {value['name']!r}"
    if kind == "merge":
        return f"{', '.join('{}/{}'.format(*o) for o in value['others'])} merged into {node_id}"
    if kind == "move":
        return "{} moved under {}/{}".format(node_id, *value["parent"])
    if kind == "move_texts":
        return f"{texts} text(s) moved into {node_id}"
    if kind == "split":
        return f"{texts} text(s) of {node_id} split into a new cluster {value['name']!r}"
    if kind == "tag":
        return f"{node_id} tagged {value['tag']!r}"
    if kind == "flag":
        return f"{node_id} flagged for review: {value['note']}"
    return f"edit {value['edit']} undone"


def edit_dict(part, edit: Edit) -> dict:
    """An edit as `--json` and the explorer's JSON show it."""
    return {
        "edit_id": edit.edit_id,
        "dataset": part.dataset,
        "run_config": part.run_config,
        "kind": edit.kind,
        "node_id": edit.node_id,
        "value": edit.value,
        "texts": len(edit.texts),
        "what": describe(edit.kind, edit.node_id, edit.value, len(edit.texts)),
        "author": edit.author,
        "note": edit.note,
        "made_at": edit.made_at,
        "made_on": edit.made_on,
    }
