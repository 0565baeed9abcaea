"""Named run configurations: complete, validated parameter sets read from one YAML file."""

import hashlib
import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import InputError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EmbeddingConfig(_Strict):
    backend: Literal["sentence-transformers", "litellm"] = "sentence-transformers"
    model: str = "sentence-transformers/all-MiniLM-L6-v2"
    device: str = "auto"
    batch_size: int = Field(64, ge=1)
    normalize: bool = True
    api_base: str | None = None


class ProjectionConfig(_Strict):
    pca_components: int | None = Field(50, ge=2)
    n_components: int = Field(5, ge=2)
    n_neighbors: int = Field(30, ge=2)
    min_dist: float = Field(0.0, ge=0.0)
    map_min_dist: float = Field(0.1, ge=0.0)
    random_state: int | None = None


class LevelConfig(_Strict):
    name: str
    method: Literal["hdbscan", "kmeans"] = "hdbscan"
    min_cluster_size: float = Field(
        0.003, gt=0, description="texts per cluster at least; a value below 1 is a share of n"
    )
    min_samples: int | None = Field(None, ge=1)
    cluster_selection_method: Literal["eom", "leaf"] = "eom"
    k: int | None = Field(None, ge=1, description="number of clusters, for kmeans")

    @model_validator(mode="after")
    def _kmeans_needs_k(self):
        if self.method == "kmeans" and self.k is None:
            raise ValueError(f"level {self.name!r}: method kmeans needs k")
        return self


class LabelerConfig(_Strict):
    kind: Literal["keywords"] = "keywords"
    n_keywords: int = Field(8, ge=1)
    n_examples: int = Field(5, ge=1)


class QualityConfig(_Strict):
    min_nmi: float = 0.5
    min_ari: float = 0.3


class RunConfig(_Strict):
    name: str
    description: str = ""
    embedding: EmbeddingConfig = EmbeddingConfig()
    projection: ProjectionConfig = ProjectionConfig()
    levels: tuple[LevelConfig, ...] = Field(min_length=1)
    labeler: LabelerConfig = LabelerConfig()
    quality: QualityConfig = QualityConfig()

    @model_validator(mode="after")
    def _unique_level_names(self):
        names = [level.name for level in self.levels]
        if len(set(names)) != len(names):
            raise ValueError(f"level names must be unique, got {names}")
        return self

    def params(self) -> dict:
        return self.model_dump(mode="json")

    def params_hash(self) -> str:
        return stable_hash(self.params())


def stable_hash(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def load_run_configs(path: Path) -> dict[str, RunConfig]:
    """All run configurations in a YAML mapping of name -> parameters (levels listed coarse first)."""
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError as err:
        raise InputError(f"run configuration file {path} does not exist") from err
    except yaml.YAMLError as err:
        raise InputError(f"{path}: not valid YAML ({err})") from err
    if not isinstance(raw, dict) or not raw:
        raise InputError(f"{path}: expected a mapping of run configuration names to parameters")
    configs = {}
    for name, params in raw.items():
        try:
            configs[name] = RunConfig(name=name, **(params or {}))
        except (ValidationError, TypeError) as err:
            raise InputError(f"{path}: run configuration {name!r} is invalid:\n{err}") from err
    return configs
