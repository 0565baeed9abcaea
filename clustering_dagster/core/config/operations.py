"""What the sensor and the nightly schedule decide, as pure functions over plain data."""

from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import Field, ValidationError

from ..data_in.datasets import DatasetSpec, fingerprint, source_hash
from ..errors import InputError
from .run_config import StrictModel


class NightlyConfig(StrictModel):
    cron: str = "0 2 * * *"
    timezone: str = "UTC"
    enabled: bool = True


class SensorConfig(StrictModel):
    interval_seconds: int = Field(60, ge=5)
    enabled: bool = True


class OperationsConfig(StrictModel):
    nightly: NightlyConfig = NightlyConfig()
    dataset_sensor: SensorConfig = SensorConfig()


def load_operations(path: Path) -> OperationsConfig:
    if not path.exists():
        return OperationsConfig()
    try:
        return OperationsConfig(**(yaml.safe_load(path.read_text()) or {}))
    except (yaml.YAMLError, ValidationError, TypeError) as err:
        raise InputError(f"{path}: invalid operations settings:\n{err}") from err


@dataclass(frozen=True)
class LastRun:
    """What the Dagster instance knows of a partition's latest materialisations."""

    source_hash: str | None = None  # of the dataset's files, at the last raw_texts
    params_hash: str | None = None  # of the run configuration, at the last raw_texts
    ingested_at: float | None = None  # timestamp of the last raw_texts
    clustered_at: float | None = None  # timestamp of the last cluster_hierarchy


def recluster_reason(current_source: str, current_params: str, last: LastRun) -> str | None:
    """Why a partition needs a full re-clustering tonight, or None if it is up to date."""
    if last.ingested_at is None:
        return "never clustered"
    if last.params_hash != current_params:
        return "run configuration changed"
    if last.source_hash != current_source:
        return "dataset files changed"
    if last.clustered_at is None or last.clustered_at < last.ingested_at:
        return "the last run did not reach the hierarchy"
    return None


@dataclass(frozen=True)
class FolderChanges:
    new: list[str]  # datasets seen for the first time
    changed: list[str]  # datasets whose content hash differs from the cursor's
    removed: list[str]  # datasets in the cursor that are gone from disk
    cursor: dict[str, dict]  # the next cursor: key -> {fingerprint, hash}


def folder_changes(datasets: dict[str, DatasetSpec], cursor: dict[str, dict]) -> FolderChanges:
    """Compare the datasets on disk with the sensor's cursor. Files are hashed only when their
    names, sizes or modification times changed, so an idle tick reads no file."""
    new, changed, following = [], [], {}
    for key, spec in sorted(datasets.items()):
        seen = cursor.get(key)
        mark = fingerprint(spec)
        if seen is not None and seen["fingerprint"] == mark:
            following[key] = seen
            continue
        content = source_hash(spec)
        following[key] = {"fingerprint": mark, "hash": content}
        if seen is None:
            new.append(key)
        elif seen["hash"] != content:
            changed.append(key)
    removed = sorted(set(cursor) - set(datasets))
    return FolderChanges(new, changed, removed, following)
