from dagster import AssetExecutionContext, DataVersion, MaterializeResult
from dagster_duckdb import DuckDBResource

from ..core.data_in.datasets import source_hash
from ..core.data_in.ingest import content_hash
from ..core.data_in.prepare import prepare
from ..resources import ClusteringSettings, connection
from .common import clustering_asset, stage, write_result
from .summary_runs import cost_metadata, facet_describer


@clustering_asset()
def raw_texts(
    context: AssetExecutionContext, duckdb: DuckDBResource, clustering: ClusteringSettings
) -> MaterializeResult:
    """The dataset's texts: validated, whitespace-normalised, hashed; duplicates kept and marked.
    A conversation dataset gives one text per conversation, the facet its run configuration
    clusters, and a facet row per conversation (from an LLM, or offline). With privacy.scrub,
    personal data is replaced by placeholders first."""
    part, config = stage(context, clustering)
    spec = clustering.dataset(part.dataset)
    llm, describe = facet_describer(duckdb, context, config, spec)
    prepared = prepare(spec, config, describe)
    texts, report = prepared.texts, prepared.report
    input_hash = content_hash(texts)
    llm_metadata = {}
    if llm is not None:
        llm_metadata = cost_metadata([llm], {"facets": {"facets": report["facet_fallbacks"]}})
        report |= {k: v for k, v in llm_metadata.items() if k != "summary_runs"}
    tables = {
        "texts": texts,
        "facets": prepared.facets,
        "private_rows": prepared.private_rows,
    }
    with connection(duckdb) as conn:
        write_result(conn, context, part, config, tables, input_hash, report)
    if report["undecodable_bytes"]:
        context.log.warning(
            f"{spec.path}: {report['undecodable_bytes']} undecodable bytes were replaced by U+FFFD"
        )
    scrubbed = {k: v for k, v in report.items() if k.startswith("scrubbed_")}
    return MaterializeResult(
        metadata={
            "texts": texts.height,
            "unique_texts": texts.height - report["duplicates"],
            "duplicates_marked": report["duplicates"],
            "empty_texts_skipped": report["empty_dropped"],
            "undecodable_bytes_replaced": report["undecodable_bytes"],
            "files": report["files"],
            "source": str(spec.path),
            "kind": spec.kind,
            "text_column": spec.text_column if spec.kind == "texts" else config.facets.embed,
            "label_column": spec.label_column or "",
            "content_hash": input_hash,
            "source_hash": source_hash(spec),
            "params_hash": config.params_hash(),
        }
        | {k: report[k] for k in ("conversations", "messages", "facet_fallbacks") if k in report}
        | scrubbed
        | llm_metadata,
        data_version=DataVersion(input_hash),
    )
