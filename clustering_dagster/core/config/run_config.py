"""Named run configurations: complete, validated parameter sets read from one YAML file."""

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import InputError


class StrictModel(BaseModel):
    """Settings read from YAML: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class EmbeddingConfig(StrictModel):
    backend: Literal["sentence-transformers", "litellm"] = "sentence-transformers"
    model: str = "sentence-transformers/all-MiniLM-L6-v2"
    device: str = "auto"
    batch_size: int = Field(64, ge=1)
    precision: Literal["auto", "float32", "float16"] = Field(
        "auto", description="auto: float16 on a CUDA GPU, float32 elsewhere"
    )
    normalize: bool = True
    api_base: str | None = None
    worker_devices: tuple[str, ...] | None = Field(
        None,
        description="encode in one worker process per entry, e.g. [cuda:0, cuda:1]; null: in "
        "this process on `device`",
    )


class ProjectionConfig(StrictModel):
    pca_components: int | None = Field(50, ge=2)
    n_components: int = Field(5, ge=2)
    n_neighbors: Annotated[int, Field(ge=2)] | Literal["auto"] = Field(
        "auto",
        description="UMAP's neighbours per text; auto: about the finest level's minimum cluster "
        "size among the texts UMAP fits, 10 to 30 (small data keeps small topics apart)",
    )
    min_dist: float = Field(0.0, ge=0.0)
    map_min_dist: float = Field(0.1, ge=0.0)
    random_state: int | None = None
    fit_sample: int = Field(
        25_000,
        ge=100,
        description="UMAP is fitted on at most this many distinct texts, drawn at random; the "
        "others are placed by their nearest sampled texts",
    )


# The fields each clustering method reads; any other method's field given on a level is an error.
METHOD_FIELDS = {
    "hdbscan": {
        "min_cluster_size",
        "min_cluster_size_cap",
        "min_samples",
        "cluster_selection_method",
    },
    "kmeans": {"k"},
    "merge": {"n_clusters", "branching", "linkage", "min_gap"},
}


class LevelConfig(StrictModel):
    """One level of the tree. `hdbscan` and `kmeans` cluster the texts' cluster space; `merge`
    joins the clusters of the level below it, so it nests by construction."""

    name: str
    method: Literal["hdbscan", "kmeans", "merge"] = "hdbscan"
    min_cluster_size: float = Field(
        0.003, gt=0, description="texts per cluster at least; a value below 1 is a share of n"
    )
    min_cluster_size_cap: float | None = Field(
        None,
        ge=2,
        description="a share-based min_cluster_size is never above this many texts, so data with "
        "many topics is not merged into few clusters",
    )
    min_samples: int | None = Field(None, ge=1)
    cluster_selection_method: Literal["eom", "leaf"] = "eom"
    k: int | None = Field(None, ge=1, description="number of clusters, for kmeans")
    n_clusters: int | None = Field(None, ge=1, description="merge: about this many nodes")
    branching: float | None = Field(
        None, gt=1, description="merge: about this many clusters of the level below per node"
    )
    linkage: Literal["ward", "average"] = Field("ward", description="merge: how clusters join")
    min_gap: float | None = Field(
        None,
        gt=1,
        description="merge: cut where the next join costs this many times the previous one, "
        "if that happens within a factor 2 of the target number of nodes",
    )

    @model_validator(mode="after")
    def _fields_match_method(self):
        others = set().union(*METHOD_FIELDS.values()) - METHOD_FIELDS[self.method]
        stray = sorted(others & self.model_fields_set)
        if stray:
            raise ValueError(
                f"level {self.name!r}: {', '.join(stray)} not used by method {self.method}"
            )
        if self.method == "kmeans" and self.k is None:
            raise ValueError(f"level {self.name!r}: method kmeans needs k")
        if self.method == "merge" and (self.n_clusters is None) == (self.branching is None):
            raise ValueError(f"level {self.name!r}: method merge needs n_clusters or branching")
        return self

    def size_hint(self) -> tuple[str, float] | None:
        """What orders this level against others of its kind: (unit, value), larger = finer."""
        if self.method == "kmeans":
            return "clusters", self.k
        if self.method == "merge" and self.n_clusters is not None:
            return "clusters", self.n_clusters
        if self.method == "hdbscan":
            unit = "share" if self.min_cluster_size < 1 else "texts"
            return f"min_cluster_size {unit}", -self.min_cluster_size
        return None


class UpperLevelsConfig(StrictModel):
    """Merged levels above the coarsest listed level, as many as its clusters need (names:
    coarse, medium, medium_2, ... top first)."""

    top_clusters: float = Field(10, ge=2, description="about this many nodes at the top")
    max_branching: float = Field(
        5, gt=1, description="children per node at most, on average, before a level is added"
    )
    min_branching: float = Field(3, gt=1, description="children per node at least, on average")
    linkage: Literal["ward", "average"] = "ward"
    min_gap: float | None = Field(
        2.0, gt=1, description="the top level: cut at a clear gap in the join costs (see merge)"
    )

    @model_validator(mode="after")
    def _branching_order(self):
        if self.min_branching > self.max_branching:
            raise ValueError("upper_levels: min_branching cannot exceed max_branching")
        return self


def check_level_order(levels: Sequence[LevelConfig]) -> None:
    """Levels are listed coarse first: a merge level needs a level below it, and wherever two
    levels can be compared (cluster counts, or HDBSCAN minimum sizes in one unit) the one further
    down the list must be finer."""
    if levels[-1].method == "merge":
        raise ValueError(
            f"levels are listed coarse first, and the last, {levels[-1].name!r}, is the finest: "
            "it cannot be method merge (merge joins the clusters of the level below it)"
        )
    for upper_index, upper in enumerate(levels):
        for lower in levels[upper_index + 1 :]:
            a, b = upper.size_hint(), lower.size_hint()
            if a is None or b is None or a[0] != b[0] or a[1] <= b[1]:
                continue
            field = "min_cluster_size" if a[0].startswith("min") else "the number of clusters"
            raise ValueError(
                f"levels are listed coarse first, but level {lower.name!r}, listed below "
                f"{upper.name!r}, is coarser ({field} {abs(b[1]):g} against {abs(a[1]):g}): "
                "list the coarsest level first"
            )


class LLMSettings(StrictModel):
    """One LLM summary run: the model, its limits, the prompt, and how the merged tree is built."""

    model: str = Field(min_length=1, description="a litellm model string, e.g. ollama/llama3.1")
    api_base: str | None = None
    temperature: float = Field(0.0, ge=0, le=2)
    max_tokens: int = Field(1000, ge=16)
    max_concurrency: int = Field(8, ge=1)
    requests_per_minute: float | None = Field(None, gt=0)
    timeout_s: float = Field(120.0, gt=0)
    max_retries: int = Field(5, ge=0, description="retries after a 429, a 5xx or a timeout")
    invalid_retries: int = Field(2, ge=0, description="re-asks after a reply that is not valid")
    backoff_s: float = Field(1.0, ge=0, description="first retry delay; doubles, with jitter")
    examples_per_cluster: int = Field(10, ge=1)
    random_examples: int = Field(4, ge=0, description="of the examples, drawn at random")
    chars_per_example: int = Field(300, ge=20)
    contrast_clusters: int = Field(3, ge=0, description="nearest other clusters shown")
    contrast_examples: int = Field(2, ge=1, description="texts shown per contrast cluster")
    prompt: str | None = Field(None, description="replaces the default instructions")
    business_context: str | None = None
    parent_levels: int = Field(2, ge=0, description="merged levels above the base clusters")
    merge_ratio: float = Field(4.0, gt=1, description="children per parent, on average")
    neighbourhood_size: int = Field(20, ge=2, description="clusters per proposal prompt")

    @model_validator(mode="after")
    def _random_within_examples(self):
        if self.random_examples > self.examples_per_cluster:
            raise ValueError("random_examples cannot exceed examples_per_cluster")
        return self


# The alias under which the offline keyword labeler's summaries and tree are stored.
OFFLINE_ALIAS = "keywords"


class LabelerConfig(StrictModel):
    kind: Literal["keywords", "llm"] = "keywords"
    n_keywords: int = Field(8, ge=1)
    n_examples: int = Field(5, ge=1)
    max_texts: int = Field(
        100_000,
        ge=1000,
        description="keyword labels are drawn from at most about this many texts, a random share "
        "of every cluster",
    )
    summaries: dict[str, LLMSettings] = Field(
        default_factory=dict, description="kind llm: summary runs by alias, kept side by side"
    )

    @model_validator(mode="after")
    def _summaries_match_kind(self):
        if self.kind == "llm" and not self.summaries:
            raise ValueError("labeler kind llm needs summaries: {alias: {model: ...}}")
        if self.kind == "keywords" and self.summaries:
            raise ValueError("summaries need labeler kind llm")
        for alias in self.summaries:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", alias) or alias == OFFLINE_ALIAS:
                raise ValueError(
                    f"summary alias {alias!r}: use letters, digits, _ . - (not {OFFLINE_ALIAS!r})"
                )
        return self

    def aliases(self) -> list[str]:
        """The summary runs this configuration materialises, by alias."""
        return list(self.summaries) if self.kind == "llm" else [OFFLINE_ALIAS]


class QualityConfig(StrictModel):
    min_nmi: float = 0.5
    min_ari: float = 0.3


class IncrementalConfig(StrictModel):
    neighbours: int = Field(10, ge=1, description="clustered texts that vote on a new text")
    max_new_share: float = Field(
        0.2, gt=0, description="above this share of appended texts the schedule re-clusters"
    )
    max_outlier_share: float = Field(
        0.1, gt=0, description="above this share of ill-fitting new texts it re-clusters"
    )


class PrivacyConfig(StrictModel):
    """What a person may see: no cluster of fewer conversations (texts) or users than the
    thresholds, and personal data replaced by placeholders before any model or output."""

    min_conversations: int = Field(
        1,
        ge=1,
        description="clusters of fewer conversations (texts, for a text dataset) are folded into "
        "one node per level that shows its count only; 1: every cluster is shown",
    )
    min_users: int | None = Field(
        None, ge=1, description="and of fewer distinct users (the dataset's user_column)"
    )
    scrub: bool = Field(
        False, description="replace e-mails, phones, cards, IBANs, IPs and secret URLs"
    )

    @property
    def threshold(self) -> bool:
        """Whether small clusters are hidden."""
        return self.min_conversations > 1 or self.min_users is not None


class FacetsConfig(StrictModel):
    """Conversation datasets: which facet is clustered, and whether an LLM writes the facets."""

    embed: Literal["request", "first_user_turn", "conversation"] = Field(
        "request", description="the facet embedded and clustered"
    )
    llm: LLMSettings | None = Field(
        None, description="facets from this model (Clio's facet prompts); null: offline facets"
    )


class ChangesConfig(StrictModel):
    """The change report after each full clustering (`cluster_changes`): which clusters are
    emerging, and which of them the `emerging_clusters` check warns about."""

    emerging_min_share: float = Field(
        0.005,
        gt=0,
        lt=1,
        description="a cluster is emerging only if it holds at least this share of the texts "
        "(new), or its share grew by at least this much (kept)",
    )
    emerging_growth: float = Field(
        2.0, gt=1, description="a kept cluster is emerging when its share grew by this factor"
    )
    alert_share: float = Field(
        0.01,
        gt=0,
        le=1,
        description="the emerging_clusters check warns about emerging clusters of at least this "
        "share of the texts",
    )


class RunConfig(StrictModel):
    name: str
    description: str = ""
    active: bool = Field(True, description="clustered by the dataset sensor and the schedule")
    embedding: EmbeddingConfig = EmbeddingConfig()
    projection: ProjectionConfig = ProjectionConfig()
    levels: tuple[LevelConfig, ...] = Field(min_length=1)
    upper_levels: UpperLevelsConfig | None = Field(
        None, description="merged levels added above the listed ones, as many as needed"
    )
    labeler: LabelerConfig = LabelerConfig()
    quality: QualityConfig = QualityConfig()
    incremental: IncrementalConfig = IncrementalConfig()
    facets: FacetsConfig = FacetsConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    changes: ChangesConfig = ChangesConfig()

    @model_validator(mode="after")
    def _levels_unique_and_coarse_first(self):
        names = [level.name for level in self.levels]
        if len(set(names)) != len(names):
            raise ValueError(f"level names must be unique, got {names}")
        if self.upper_levels is not None:
            clash = [n for n in names if n in ("coarse", "medium") or n.startswith("medium_")]
            if clash:
                raise ValueError(
                    f"with upper_levels, the levels above are named coarse, medium, medium_2, "
                    f"...: rename level {clash[0]!r}"
                )
        check_level_order(self.levels)
        return self

    def params(self) -> dict:
        return self.model_dump(mode="json")

    def params_hash(self) -> str:
        """Hash of what shapes the clusters (not the name, description, `active`, where the
        vectors are computed, or the change report's thresholds: tuning an alert re-clusters
        nothing)."""
        exclude = {"name": True, "description": True, "active": True, "changes": True}
        return stable_hash(
            self.model_dump(mode="json", exclude=exclude | {"embedding": {"worker_devices"}})
        )


def stable_hash(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


# Run configuration names are partition keys: Dagster forbids | , [ ] in them.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class _StrictLoader(yaml.SafeLoader):
    """YAML where a key given twice in one mapping is an error (not: the last one wins)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


class RunConfigs(Mapping):
    """The valid run configurations of a file by name, and a message per invalid one: one bad
    entry fails only its own partitions. Looking up an invalid name raises its InputError."""

    def __init__(self, valid: dict[str, RunConfig], errors: dict[str, str]):
        self.valid, self.errors = valid, errors

    def __getitem__(self, name: str) -> RunConfig:
        if name in self.errors:
            raise InputError(self.errors[name])
        return self.valid[name]

    def __iter__(self):
        return iter(self.valid)

    def __len__(self) -> int:
        return len(self.valid)

    def partition_names(self) -> list[str]:
        """Every name usable as a partition key, valid or not (an invalid one fails its runs)."""
        return sorted(name for name in {*self.valid, *self.errors} if NAME.fullmatch(name))


def load_run_configs(path: Path) -> RunConfigs:
    """All run configurations in a YAML mapping of name -> parameters (levels listed coarse first).
    A file that cannot be read as such a mapping is an InputError; a bad entry is reported in
    `errors` with the file, line and entry."""
    try:
        loader = _StrictLoader(path.read_text())
    except FileNotFoundError as err:
        raise InputError(f"run configuration file {path} does not exist") from err
    try:
        root = loader.get_single_node()
    except yaml.YAMLError as err:
        raise InputError(f"{path}: not valid YAML ({err})") from err
    if not isinstance(root, yaml.MappingNode) or not root.value:
        raise InputError(f"{path}: expected a mapping of run configuration names to parameters")
    valid, errors, lines = {}, {}, {}
    for key_node, value_node in root.value:
        name, line = str(key_node.value), key_node.start_mark.line + 1
        where = f"{path}, line {line}: run configuration {name!r}"
        if name in lines:
            errors[name] = f"{where} is defined twice (first at line {lines[name]})"
            valid.pop(name, None)
            continue
        lines[name] = line
        if not NAME.fullmatch(name):
            errors[name] = f"{where}: a name may hold only letters, digits, _ . and -"
            continue
        try:
            params = loader.construct_object(value_node, deep=True) or {}
            if not isinstance(params, dict):
                raise TypeError(f"expected a mapping of parameters, got {params!r}")
            valid[name] = RunConfig(name=name, **params)
        except (ValidationError, TypeError, yaml.YAMLError) as err:
            errors[name] = f"{where} is invalid:\n{err}"
    return RunConfigs(valid, errors)
