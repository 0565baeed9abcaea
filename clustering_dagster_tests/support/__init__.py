"""What the tests and the benchmarks share: paths of the repository's data (`paths`), a
materialising workspace and its helpers (`workspace`), child runs killed at chosen steps
(`faults`), the OpenAI-compatible test server (`openai_server`), llama.cpp's server
(`llama_server`), headless Chromium (`chromium`), the explored results database (`explored`),
hostile input for the result tools (`hostile`) and issue 8's function words (`vocabulary`).

Tests import them as `from .support.workspace import Workspace`; benchmarks, run from the
repository root as `python -m benchmarks.NAME`, as `from clustering_dagster_tests.support.faults
import Sandbox`. This file imports nothing: `vocabulary`, `paths`, `faults` and the servers load
without the code location (whose run configurations a benchmark may set first)."""
