"""Every asset is partitioned by dataset (dynamic) x run configuration (named in YAML)."""

import logging

from dagster import (
    AssetExecutionContext,
    DynamicPartitionsDefinition,
    MultiPartitionKey,
    MultiPartitionsDefinition,
    StaticPartitionsDefinition,
)

from .core.config import settings
from .core.config.run_config import load_run_configs
from .core.errors import InputError
from .core.storage.store import Partition

logger = logging.getLogger(__name__)

DATASET_DIMENSION = "dataset"
RUN_CONFIG_DIMENSION = "run_config"

dataset_partitions = DynamicPartitionsDefinition(name=DATASET_DIMENSION)


def _run_config_names() -> list[str]:
    """Every run configuration name; invalid entries are logged and fail only their own runs."""
    try:
        configs = load_run_configs(settings.run_configs_path())
    except InputError as err:
        logger.error(f"no run configurations: {err}")
        return []
    for message in configs.errors.values():
        logger.error(message)
    return configs.partition_names()


run_config_partitions = StaticPartitionsDefinition(_run_config_names())
partitions_def = MultiPartitionsDefinition(
    {DATASET_DIMENSION: dataset_partitions, RUN_CONFIG_DIMENSION: run_config_partitions}
)


def partition_key(dataset: str, run_config: str) -> MultiPartitionKey:
    return MultiPartitionKey({DATASET_DIMENSION: dataset, RUN_CONFIG_DIMENSION: run_config})


def partition_of(context: AssetExecutionContext) -> Partition:
    """The running asset's partition, versioned by the run's id."""
    keys = context.partition_key.keys_by_dimension
    return Partition(keys[DATASET_DIMENSION], keys[RUN_CONFIG_DIMENSION], context.run.run_id)
