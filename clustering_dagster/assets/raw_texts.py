from dataclasses import asdict

from dagster import AssetExecutionContext, DataVersion, MaterializeResult
from dagster_duckdb import DuckDBResource

from ..core.data_in.datasets import source_hash
from ..core.data_in.ingest import content_hash, load_texts
from ..resources import ClusteringSettings, connection
from .common import clustering_asset, stage, write_result


@clustering_asset()
def raw_texts(
    context: AssetExecutionContext, duckdb: DuckDBResource, clustering: ClusteringSettings
) -> MaterializeResult:
    """The dataset's texts: validated, whitespace-normalised, hashed; duplicates kept and marked."""
    part, config = stage(context, clustering)
    spec = clustering.dataset(part.dataset)
    texts, report = load_texts(spec)
    input_hash = content_hash(texts)
    with connection(duckdb) as conn:
        write_result(conn, context, part, config, {"texts": texts}, input_hash, asdict(report))
    if report.undecodable_bytes:
        context.log.warning(
            f"{spec.path}: {report.undecodable_bytes} undecodable bytes were replaced by U+FFFD"
        )
    return MaterializeResult(
        metadata={
            "texts": texts.height,
            "unique_texts": texts.height - report.duplicates,
            "duplicates_marked": report.duplicates,
            "empty_texts_skipped": report.empty_dropped,
            "undecodable_bytes_replaced": report.undecodable_bytes,
            "files": report.files,
            "source": str(spec.path),
            "text_column": spec.text_column,
            "label_column": spec.label_column or "",
            "content_hash": input_hash,
            "source_hash": source_hash(spec),
            "params_hash": config.params_hash(),
        },
        data_version=DataVersion(input_hash),
    )
