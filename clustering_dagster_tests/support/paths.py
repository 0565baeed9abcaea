"""The repository's own data, as the tests and the benchmarks find it."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "datasets" / "banking77_sample.csv"
SHIPPED_CONFIGS = REPO / "data" / "run_configs.yaml"
FIXTURES = REPO / "clustering_dagster_tests" / "fixtures"
