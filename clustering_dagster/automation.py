"""Work without hand-holding: a sensor on the datasets folder and a nightly re-clustering."""

import json
from pathlib import Path

from dagster import (
    AddDynamicPartitionsRequest,
    AssetKey,
    AssetRecordsFilter,
    DagsterInstance,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunRequest,
    ScheduleEvaluationContext,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    schedule,
    sensor,
)

from .core.config import settings
from .core.config.operations import LastRun, folder_changes, load_operations, recluster_reason
from .core.data_in.datasets import scan_datasets, source_hash
from .core.errors import InputError
from .jobs import assign_new_texts_job, cluster_texts_job
from .partitions import DATASET_DIMENSION, partition_key
from .resources import ClusteringSettings
from .run_health import reap_dead_runs

OPERATIONS = load_operations(settings.operations_path())


def _latest(instance: DagsterInstance, asset: str, key: str):
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(asset), asset_partitions=[key]), limit=1
    ).records
    return records[0] if records else None


def last_run(instance: DagsterInstance, key: str) -> LastRun:
    """The partition's latest ingestion (with its source and parameter hashes) and clustering."""
    ingested = _latest(instance, "raw_texts", key)
    clustered = _latest(instance, "cluster_hierarchy", key)
    if ingested is None:
        return LastRun()
    metadata = ingested.asset_materialization.metadata
    return LastRun(
        source_hash=metadata["source_hash"].value if "source_hash" in metadata else None,
        params_hash=metadata["params_hash"].value if "params_hash" in metadata else None,
        ingested_at=ingested.timestamp,
        clustered_at=clustered.timestamp if clustered else None,
    )


def _active_configs(clustering: ClusteringSettings, log) -> list:
    """The active valid run configurations; invalid ones are logged (their runs would fail)."""
    try:
        configs = clustering.run_configs()
    except InputError as err:
        log.error(f"no run configuration can be read: {err}")
        return []
    for message in configs.errors.values():
        log.error(f"{message}\n(left out until it is fixed)")
    return [config for config in configs.values() if config.active]


@sensor(
    jobs=[cluster_texts_job, assign_new_texts_job],
    minimum_interval_seconds=OPERATIONS.dataset_sensor.interval_seconds,
    default_status=DefaultSensorStatus.RUNNING
    if OPERATIONS.dataset_sensor.enabled
    else DefaultSensorStatus.STOPPED,
)
def dataset_folder_sensor(context: SensorEvaluationContext, clustering: ClusteringSettings):
    """New dataset files become partitions and are clustered with the active run configurations;
    changed files get their appended texts assigned (or a full clustering if there is none yet);
    removed files are reported and their results kept."""
    root = Path(clustering.datasets_dir)
    datasets, problems = scan_datasets(root)
    for problem in problems.values():
        context.log.error(f"{problem}; nothing is run for it")
    changes = folder_changes(datasets, json.loads(context.cursor or "{}"))
    for key in changes.removed:
        context.log.warning(f"dataset {key!r} is gone from {root}: its partition and results stay")
    registered = set(context.instance.get_dynamic_partitions(DATASET_DIMENSION))
    requests = []
    configs = _active_configs(clustering, context.log)
    for key in [*changes.new, *changes.changed]:
        content = changes.cursor[key]["hash"]
        for config in configs:
            pk = partition_key(key, config.name)
            last = last_run(context.instance, pk) if key in registered else LastRun()
            if last.source_hash == content and last.params_hash == config.params_hash():
                continue  # already clustered from exactly these files
            incremental = last.clustered_at is not None and last.params_hash == config.params_hash()
            job = assign_new_texts_job if incremental else cluster_texts_job
            requests.append(
                RunRequest(
                    run_key=f"{job.name}:{pk}:{content}",
                    job_name=job.name,
                    partition_key=pk,
                    tags={"clustering/trigger": "dataset_sensor"},
                )
            )
    added = sorted(set(changes.new) - registered)
    if added:
        context.log.info(f"registering datasets {added}")
    cursor = json.dumps(changes.cursor, sort_keys=True)
    if not requests and not added:
        return SensorResult(
            skip_reason=SkipReason("no new or changed dataset files"), cursor=cursor
        )
    return SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[AddDynamicPartitionsRequest(DATASET_DIMENSION, added)]
        if added
        else [],
        cursor=cursor,
    )


@schedule(
    job=cluster_texts_job,
    cron_schedule=OPERATIONS.nightly.cron,
    execution_timezone=OPERATIONS.nightly.timezone,
    default_status=DefaultScheduleStatus.RUNNING
    if OPERATIONS.nightly.enabled
    else DefaultScheduleStatus.STOPPED,
)
def nightly_reclustering(context: ScheduleEvaluationContext, clustering: ClusteringSettings):
    """Re-cluster every registered dataset x active run configuration whose files or parameters
    changed since its last clustering; skip the others, saying why."""
    datasets, problems = scan_datasets(Path(clustering.datasets_dir))
    for problem in problems.values():
        context.log.error(problem)
    configs = _active_configs(clustering, context.log)
    requests, skipped = [], []
    tick = context.scheduled_execution_time.isoformat()
    for key in sorted(context.instance.get_dynamic_partitions(DATASET_DIMENSION)):
        if key not in datasets:
            skipped.append(f"{key}: its files are gone or ambiguous")
            continue
        content = source_hash(datasets[key])
        for config in configs:
            pk = partition_key(key, config.name)
            reason = recluster_reason(content, config.params_hash(), last_run(context.instance, pk))
            if reason is None:
                skipped.append(f"{pk}: unchanged since its last clustering")
                continue
            context.log.info(f"{pk}: re-clustering ({reason})")
            requests.append(
                RunRequest(
                    run_key=f"nightly:{pk}:{tick}",
                    partition_key=pk,
                    tags={"clustering/trigger": "nightly", "clustering/reason": reason},
                )
            )
    for line in skipped:
        context.log.info(f"skip {line}")
    if not requests:
        return SkipReason("nothing changed: " + "; ".join(skipped) if skipped else "no datasets")
    return requests


@sensor(minimum_interval_seconds=30, default_status=DefaultSensorStatus.RUNNING)
def dead_run_sensor(context: SensorEvaluationContext):
    """Fail runs whose process died (kill -9, out of memory, a reboot), freeing their slots."""
    reaped = reap_dead_runs(context.instance)
    for run_id in reaped:
        context.log.warning(f"run {run_id}: its process is gone; marked failed")
    return SkipReason(f"marked {len(reaped)} dead runs failed" if reaped else "no dead runs")
