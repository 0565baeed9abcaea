"""The jobs: a full clustering, and the incremental assignment of appended texts."""

from dagster import AssetSelection, define_asset_job

from .assets import ALL_ASSETS, incremental_assignments

cluster_texts_job = define_asset_job(
    "cluster_texts",
    selection=AssetSelection.assets(*ALL_ASSETS),
    description="Texts -> embeddings -> projections -> cluster levels -> labels -> hierarchy.",
)

assign_new_texts_job = define_asset_job(
    "assign_new_texts",
    selection=AssetSelection.assets(incremental_assignments),
    description="Assign texts appended since the last clustering to its clusters.",
)
