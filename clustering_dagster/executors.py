"""The executor every job uses, named by CLUSTERING_EXECUTOR; its settings (max_concurrent, a
Kubernetes job's image and resources, a Celery broker) come from the run config's `execution`.

- `in_process` (default): one process per run, so the embedding model is loaded, and UMAP's numba
  code compiled, once per run.
- `multiprocess`: every step in its own process, independent steps at once.
- `k8s`: every step in its own Kubernetes job (needs `dagster-k8s`).
- `celery`: every step a Celery task on the workers' queue (needs `dagster-celery`). When
  CLUSTERING_CELERY_BROKER is set (e.g. `redis://redis:6379/0`), the executor takes its broker and
  CLUSTERING_CELERY_BACKEND (the result backend, by default the broker) from the environment of
  the process that runs the run, so runs need no `execution` config: `dagster job backfill`, the
  schedule and the sensors cannot pass one. The workers read the same variables through
  `deploy/celery/worker.yaml` (docs/distributed.md).
"""

import os

from dagster import ExecutorDefinition, in_process_executor, multiprocess_executor

from .core.errors import InputError

NAMES = ("in_process", "multiprocess", "k8s", "celery")

CELERY_BROKER_ENV = "CLUSTERING_CELERY_BROKER"
CELERY_BACKEND_ENV = "CLUSTERING_CELERY_BACKEND"


def celery_settings(redeliver_s: int = 3600) -> dict:
    """Celery settings of the runs and the workers alike. A task is acknowledged when its step has
    ended, not when a worker takes it, so a step whose worker died is not lost: if the worker's
    pool process dies, its worker hands the step back at once; if the whole worker (or machine)
    is gone, the other workers hand it to one of them `redeliver_s` seconds after it was taken
    (the broker's visibility timeout, which must exceed the longest step: a step still running
    then would be started a second time), checking every 10 s (kombu's default checks every
    100 s). The workers' copy (deploy/celery/worker.yaml) is the one whose
    timeout counts: the workers hand back what a dead worker held."""
    return {
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "broker_transport_options": {
            "visibility_timeout": redeliver_s,
            "unacked_restore_interval": 10,
            "unacked_restore_throttle": 1,
            "max_retries": 3,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
        },
    }


def celery_config() -> dict:
    """The Celery executor's config from the environment: the broker, the result backend (the
    broker unless CLUSTERING_CELERY_BACKEND says otherwise), both read when a run starts."""
    backend = CELERY_BACKEND_ENV if os.environ.get(CELERY_BACKEND_ENV) else CELERY_BROKER_ENV
    return {
        "broker": {"env": CELERY_BROKER_ENV},
        "backend": {"env": backend},
        "config_source": celery_settings(),
    }


def pick_executor(name: str) -> ExecutorDefinition:
    if name == "in_process":
        return in_process_executor
    if name == "multiprocess":
        return multiprocess_executor
    try:
        if name == "k8s":
            from dagster_k8s import k8s_job_executor

            return k8s_job_executor
        if name == "celery":
            from dagster_celery import celery_executor

            if os.environ.get(CELERY_BROKER_ENV):
                return celery_executor.configured(celery_config(), name="celery")
            return celery_executor
    except ImportError as err:
        raise InputError(
            f"CLUSTERING_EXECUTOR={name} needs the package dagster-{name} "
            f"(pip install dagster-{name} at the version of dagster): {err}"
        ) from err
    raise InputError(f"CLUSTERING_EXECUTOR={name!r}: use one of {', '.join(NAMES)}")
