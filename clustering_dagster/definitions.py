"""The code location: `dagster dev` in the repository root loads these definitions."""

from dagster import AssetSelection, Definitions, define_asset_job, in_process_executor

from .assets import ALL_ASSETS
from .resources import default_resources

cluster_texts_job = define_asset_job(
    "cluster_texts",
    selection=AssetSelection.assets(*ALL_ASSETS),
    description="Texts -> embeddings -> projections -> cluster levels -> labels -> hierarchy.",
)

# One process per run: the embedding model and UMAP's numba compilation are loaded once per run.
defs = Definitions(
    assets=ALL_ASSETS,
    jobs=[cluster_texts_job],
    resources=default_resources(),
    executor=in_process_executor,
)
