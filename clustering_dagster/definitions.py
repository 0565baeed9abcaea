"""The code location: `dagster dev` in the repository root loads these definitions."""

from dagster import Definitions

from .assets import ALL_ASSETS
from .automation import dataset_folder_sensor, dead_run_sensor, nightly_reclustering
from .core.config.settings import executor_name
from .executors import pick_executor
from .jobs import assign_new_texts_job, cluster_texts_job
from .resources import default_resources

# By default one process per run: the embedding model and UMAP's numba compilation are loaded once
# per run. CLUSTERING_EXECUTOR picks another executor (see `executors`).
defs = Definitions(
    assets=ALL_ASSETS,
    jobs=[cluster_texts_job, assign_new_texts_job],
    sensors=[dataset_folder_sensor, dead_run_sensor],
    schedules=[nightly_reclustering],
    resources=default_resources(),
    executor=pick_executor(executor_name()),
)
