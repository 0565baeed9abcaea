"""The executor every job uses, named by CLUSTERING_EXECUTOR; its settings (max_concurrent, a
Kubernetes job's image and resources, a Celery broker) come from the run config's `execution`.

- `in_process` (default): one process per run, so the embedding model is loaded, and UMAP's numba
  code compiled, once per run.
- `multiprocess`: every step in its own process, independent steps at once.
- `k8s`: every step in its own Kubernetes job (needs `dagster-k8s`).
- `celery`: every step a Celery task on the workers' queue (needs `dagster-celery`).
"""

from dagster import ExecutorDefinition, in_process_executor, multiprocess_executor

from .core.errors import InputError

NAMES = ("in_process", "multiprocess", "k8s", "celery")


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

            return celery_executor
    except ImportError as err:
        raise InputError(
            f"CLUSTERING_EXECUTOR={name} needs the package dagster-{name} "
            f"(pip install dagster-{name} at the version of dagster): {err}"
        ) from err
    raise InputError(f"CLUSTERING_EXECUTOR={name!r}: use one of {', '.join(NAMES)}")
