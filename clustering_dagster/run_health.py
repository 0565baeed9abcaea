"""Runs whose process died (kill -9, out of memory, a reboot) are marked failed.

Dagster's run monitoring cannot see the process of a run started by `dagster asset materialize`
or the default run launcher, so such a run would stay STARTED for ever and hold its queue and
concurrency slots. Every run notes its process (host, pid, process start time) in its tags at its
first step; `reap_dead_runs` fails the runs whose process is gone and frees their slots. It runs
at the start of every run and in the `dead_run_sensor` every 30 s. A step run as a Celery task
tags nothing: its worker's death is the broker's to handle (the step is handed to another).
"""

import os
import socket
import sys
import time
from pathlib import Path

from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

TAG_HOST = "clustering/host"
TAG_PID = "clustering/pid"
TAG_PROCESS_START = "clustering/process_start"
GRACE_S = 30
RUNNING = [DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]


def process_start(pid: int) -> str | None:
    """When the process started (clock ticks since boot), or None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:  # no /proc (not Linux): existence only
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return "unknown"
    return stat.rsplit(")", 1)[1].split()[19]


def in_celery_task() -> bool:
    """Whether this step runs as a Celery worker's task: if that worker dies, the broker hands
    the step to another (executors.celery_settings), so the run lives on without its process."""
    state = sys.modules.get("celery._state")
    return state is not None and state.get_current_worker_task() is not None


def claim_run(instance: DagsterInstance, run_id: str) -> bool:
    """Tag the run with the process running its step (each step of a multiprocess run has its
    own; a Celery task's is not tagged); returns True when this process was tagged now (its
    first step)."""
    if in_celery_task():
        return False
    run = instance.get_run_by_id(run_id)
    if run is None or run.tags.get(TAG_PID) == str(os.getpid()):
        return False
    instance.add_run_tags(
        run_id,
        {
            TAG_HOST: socket.gethostname(),
            TAG_PID: str(os.getpid()),
            TAG_PROCESS_START: process_start(os.getpid()) or "",
        },
    )
    return True


def _dead(instance: DagsterInstance, run) -> bool:
    """The run's last tagged process is gone (or its pid reused) and the run has logged nothing
    for GRACE_S (between two steps of a multiprocess run, the next process is starting)."""
    tags = run.tags
    if tags.get(TAG_HOST) != socket.gethostname() or TAG_PID not in tags:
        return False
    started = process_start(int(tags[TAG_PID]))
    if started is not None and started in ("unknown", tags.get(TAG_PROCESS_START)):
        return False
    last = instance.event_log_storage.get_records_for_run(run.run_id, ascending=False, limit=1)
    return not last.records or time.time() - last.records[0].timestamp > GRACE_S


def reap_dead_runs(instance: DagsterInstance) -> list[str]:
    """Mark the running runs of this host whose process is gone as failed and free their
    concurrency slots; returns their ids."""
    reaped = []
    for run in instance.get_runs(RunsFilter(statuses=RUNNING)):
        if not _dead(instance, run):
            continue
        instance.report_run_failed(
            run,
            f"its process (pid {run.tags[TAG_PID]} on {run.tags[TAG_HOST]}) is gone: killed, "
            "out of memory or rebooted; marked failed by clustering_dagster",
        )
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        reaped.append(run.run_id)
    return reaped


def live_run_ids(instance: DagsterInstance) -> set[str]:
    """Runs that may still write: queued, starting or running."""
    return set(
        instance.get_run_ids(
            RunsFilter(statuses=[DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, *RUNNING])
        )
    )
