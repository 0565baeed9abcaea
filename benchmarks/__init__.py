"""The benchmarks, each run from the repository root as `python -m benchmarks.NAME` (so that this
checkout's `clustering_dagster` and the tests' shared helpers, `clustering_dagster_tests.support`,
are importable without editing sys.path). Each has `--smoke`: a few hundred texts, whose last
output line is still the benchmark's JSON object (run by clustering_dagster_tests/test_benchmarks.py)."""
