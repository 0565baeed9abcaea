"""Every asset is partitioned by dataset (dynamic) x run configuration (named in YAML)."""

from dagster import (
    AssetExecutionContext,
    DynamicPartitionsDefinition,
    MultiPartitionKey,
    MultiPartitionsDefinition,
    StaticPartitionsDefinition,
)

from .core import settings
from .core.run_config import load_run_configs
from .core.storage import Partition

DATASET_DIMENSION = "dataset"
RUN_CONFIG_DIMENSION = "run_config"

dataset_partitions = DynamicPartitionsDefinition(name=DATASET_DIMENSION)
run_config_partitions = StaticPartitionsDefinition(
    sorted(load_run_configs(settings.run_configs_path()))
)
partitions_def = MultiPartitionsDefinition(
    {DATASET_DIMENSION: dataset_partitions, RUN_CONFIG_DIMENSION: run_config_partitions}
)


def partition_key(dataset: str, run_config: str) -> MultiPartitionKey:
    return MultiPartitionKey({DATASET_DIMENSION: dataset, RUN_CONFIG_DIMENSION: run_config})


def partition_of(context: AssetExecutionContext) -> Partition:
    keys = context.partition_key.keys_by_dimension
    return Partition(dataset=keys[DATASET_DIMENSION], run_config=keys[RUN_CONFIG_DIMENSION])
