"""A partition is one consistent snapshot whatever fails: runs of the README's command killed
with kill -9 at chosen steps, a reader holding the DuckDB file, a stage failing late; a dead run
blocks nothing and is marked failed."""

import duckdb
import pytest
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from clustering_dagster import run_health

from .support.faults import Sandbox, mismatches, sample_texts, step_start

OLD = sample_texts(0, 10)  # 200 queries
NEW = sample_texts(10, 40)  # 800 other queries: embedding them takes seconds
CONSISTENT = dict.fromkeys(
    ["assignment_text", "embedding_text", "text_unassigned", "cluster_label", "tree_label",
     "summary_cluster"], 0
)  # fmt: skip


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> Sandbox:
    """A partition `bank|default` clustered once from OLD."""
    box = Sandbox(tmp_path_factory.mktemp("faults"), lock_timeout_s=5)
    box.write_dataset("bank", OLD)
    assert box.register().returncode == 0
    run = box.start()
    assert run.finish(), run.output[-3000:]
    return box


def _texts(box: Sandbox, partition: str = "bank|default") -> list[str]:
    return sorted(box.published_texts(partition)["text"])


def test_killed_runs_leave_the_previous_snapshot_and_the_next_run_resumes(sandbox, monkeypatch):
    sandbox.write_dataset("bank", NEW)  # other texts: a mix would show at once
    stored = sandbox.stored_vectors()

    embedding = sandbox.start()
    assert embedding.wait_for("embedded ") is not None, embedding.output[-3000:]
    embedding.kill()  # kill -9 while embedding, after a chunk was committed
    assert _texts(sandbox) == sorted(OLD["text"]) and mismatches(sandbox) == CONSISTENT
    kept = sandbox.stored_vectors() - stored
    assert 0 < kept < NEW.height  # the committed chunks survive the kill

    clustered = sandbox.start()
    assert clustered.wait_for(step_start("cluster_labels")) is not None, clustered.output[-3000:]
    clustered.kill()  # texts, vectors, projection and levels of NEW written, none published
    assert _texts(sandbox) == sorted(OLD["text"]) and mismatches(sandbox) == CONSISTENT
    assert sandbox.embedded_by_last_run() == NEW["text"].n_unique() - kept  # resumed

    again = sandbox.start()  # starts at once: a dead run holds no slot and no lock
    assert again.finish(), again.output[-3000:]
    assert _texts(sandbox) == sorted(NEW["text"]) and mismatches(sandbox) == CONSISTENT
    assert sandbox.embedded_by_last_run() == 0  # nothing embedded twice

    instance = DagsterInstance.from_config(str(sandbox.home))  # no `with`: see test_pipeline
    monkeypatch.setattr(run_health, "GRACE_S", 0)  # (a run's first step reaps after 30 s)
    run_health.reap_dead_runs(instance)
    for run_id in (embedding.run_id, clustered.run_id):
        assert instance.get_run_by_id(run_id).status == DagsterRunStatus.FAILURE
    assert not instance.get_runs(RunsFilter(statuses=run_health.RUNNING))


def test_a_reader_holding_the_file_makes_the_writer_wait_then_fail_cleanly(sandbox):
    before = _texts(sandbox)
    sandbox.write_dataset("bank", OLD)
    with duckdb.connect(str(sandbox.database), read_only=True):
        run = sandbox.start()
        assert not run.finish()
    assert "is locked by" in run.output and "waiting up to 5 s" in run.output
    assert "stayed locked by" in run.output
    assert _texts(sandbox) == before and mismatches(sandbox) == CONSISTENT


def test_a_stage_failing_late_publishes_nothing(sandbox):
    configs = sandbox.configs.read_text()
    sandbox.configs.write_text(
        configs + "\nflaky:\n  levels: [{name: fine, min_cluster_size: 5}]\n"
    )
    sandbox.write_dataset("bank", OLD)
    assert sandbox.start("bank|flaky").finish()
    sandbox.configs.write_text(
        configs + "\nflaky:\n  levels: [{name: fine, min_cluster_size: 5}]\n"
        "  labeler: {kind: llm, summaries: {down: {model: hosted_vllm/x, "
        "api_base: 'http://127.0.0.1:9/v1'}}}\n"
    )
    sandbox.write_dataset("bank", NEW)
    run = sandbox.start("bank|flaky")  # texts .. labels written, then the LLM is unreachable
    assert not run.finish()
    assert "127.0.0.1:9" in run.output
    assert _texts(sandbox, "bank|flaky") == sorted(OLD["text"])
    assert mismatches(sandbox, "bank|flaky") == CONSISTENT


def test_bad_entries_are_reported_and_stop_nothing_else(sandbox):
    (sandbox.datasets / "数据.csv").write_text("text\nhello\n")
    (sandbox.datasets / "other.csv").write_text("text\nhello\nworld\n")
    sandbox.configs.write_text(sandbox.configs.read_text() + "\nbroken: {levels: [], typo: 1}\n")
    done = sandbox.register()
    assert done.returncode == 0, done.stderr
    assert "other" in done.stdout and "cannot make a dataset key" in done.stderr
    run = sandbox.start("other|broken")  # the code location loads; only this partition fails
    assert not run.finish()
    assert "run configuration 'broken' is invalid" in run.output
    hierarchy_only = sandbox.start("other|default", select="cluster_hierarchy")
    assert not hierarchy_only.finish()
    assert "partition other|default has no assignments yet: materialise cluster_levels" in (
        hierarchy_only.output
    )
