"""Past one machine, run for real on this one: Redis (the Celery broker), PostgreSQL (the Dagster
instance of deploy/postgres/dagster.yaml) and two Celery workers (deploy/celery/worker.yaml), with
`dagster job backfill` running cluster_texts through the Celery executor. Each step runs in a
worker; a worker process killed in the middle of a step leaves the partition one complete result,
never a mix. The services come from Debian's packages (installed when missing, as root)."""

import os
import signal
import time

import pytest
import yaml

from clustering_dagster.executors import celery_config, celery_settings, pick_executor

from .support.faults import mismatches, sample_texts
from .support.paths import REPO
from .support.services import Distributed, ensure_installed

celery = pytest.importorskip("dagster_celery", reason="pip install -e '.[distributed]'")
pytest.importorskip("dagster_postgres", reason="pip install -e '.[distributed]'")


def test_the_workers_settings_are_the_executors(monkeypatch):
    """deploy/celery/worker.yaml holds the executor's Celery settings (late acknowledgement, the
    broker's visibility timeout), and CLUSTERING_CELERY_BROKER configures the executor without
    run config (a backfill, the schedule and the sensors cannot pass one)."""
    shipped = yaml.safe_load((REPO / "deploy/celery/worker.yaml").read_text())
    config = shipped["execution"]["config"]
    assert config["config_source"] == celery_settings(3600)
    assert config["broker"] == {"env": "CLUSTERING_CELERY_BROKER"}
    assert config["backend"] == {"env": "CLUSTERING_CELERY_BACKEND"}
    monkeypatch.setenv("CLUSTERING_CELERY_BROKER", "redis://broker:6379/0")
    monkeypatch.delenv("CLUSTERING_CELERY_BACKEND", raising=False)
    assert celery_config()["backend"] == {"env": "CLUSTERING_CELERY_BROKER"}
    assert celery_config()["config_source"] == celery_settings()
    assert pick_executor("celery").name == "celery"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    missing = ensure_installed()
    if missing:
        pytest.skip(missing)
    with Distributed(tmp_path_factory.mktemp("distributed"), workers=2, redeliver_s=60) as stack:
        yield stack


def test_a_backfill_runs_every_step_on_the_celery_workers(stack):
    """Two partitions backfilled at once against the PostgreSQL instance: both succeed, every step
    ran in a worker's pool process (not in the run's own process), and both workers took steps."""
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

    instance = stack.instance()
    assert isinstance(instance.run_storage, PostgresRunStorage)
    assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
    names = ["alpha", "beta"]
    for i, name in enumerate(names):
        stack.box.write_dataset(name, sample_texts(3 * i, 3))
    assert stack.box.register().returncode == 0
    before = time.monotonic()
    backfill = stack.backfill([f"{name}|default" for name in names])
    out, _ = backfill.communicate(timeout=900)
    assert "Launched backfill job" in out, out
    runs = stack.wait([run.run_id for run in stack.runs()])
    assert sorted(run.tags["dagster/partition"] for run in runs) == [f"{n}|default" for n in names]
    assert [run.status.value for run in runs] == ["SUCCESS"] * 2, out[-3000:]
    workers = stack.worker_pids()
    step_pids = set()
    for run in runs:
        started = [pid for _, kind, pid in stack.steps(run.run_id) if kind == "STEP_START"]
        assert len(started) >= 6
        step_pids |= set(started)
    assert step_pids <= set(workers), (step_pids, workers)  # every step in a worker process
    assert {workers[pid] for pid in step_pids} == {"w0", "w1"}
    hosts = set().union(*(stack.celery_hosts(run.run_id) for run in runs))
    assert {host.split("@")[0] for host in hosts} == {"w0", "w1"}  # Celery's own record
    for name in names:
        shown = stack.box.published_texts(f"{name}|default")
        assert sorted(shown["text"]) == sorted(sample_texts(3 * names.index(name), 3)["text"])
        assert sum(mismatches(stack.box, f"{name}|default").values()) == 0
    print(f"two partitions through Celery in {time.monotonic() - before:.0f} s")


def test_a_worker_killed_mid_step_leaves_one_complete_result(stack):
    """The next run of a partition, with 800 new texts: the worker process running its embeddings
    step is killed (-9) a second into it, while it encodes. The step goes back to the queue (acknowledged late)
    and runs again in a fresh process, so the run succeeds with the new texts; had it failed, the
    previous result would still be the one shown. Either way: nothing lost, nothing mixed."""
    partition = "alpha|default"
    if not stack.box.published_texts(partition).height:
        pytest.skip("needs the backfill test's partition")
    old = sorted(stack.box.published_texts(partition)["text"])
    new_texts = sample_texts(6, 40)
    stack.box.write_dataset("alpha", new_texts)
    known = {run.run_id for run in stack.runs()}
    backfill = stack.backfill([partition])
    try:
        run_id, victim = None, None
        deadline = time.monotonic() + 600
        while victim is None and time.monotonic() < deadline:
            fresh = stack.runs(exclude=known)
            if fresh:
                run_id = fresh[0].run_id
                victim = next(
                    (pid for step, kind, pid in stack.steps(run_id)
                     if step == "embeddings" and kind == "STEP_START"),
                    None,
                )  # fmt: skip
            time.sleep(0.2)
        assert victim is not None, "the run never started its embeddings step"
        time.sleep(1.0)
        assert stack.worker_of(victim) is not None
        os.kill(victim, signal.SIGKILL)
        [run] = stack.wait([run_id], timeout_s=600)
        backfill.communicate(timeout=120)
    finally:
        if backfill.poll() is None:
            os.killpg(backfill.pid, signal.SIGKILL)
    events = stack.steps(run_id)
    # the killed process never finished the step: the kill was mid-step
    assert ("embeddings", "STEP_SUCCESS", victim) not in events
    shown = sorted(stack.box.published_texts(partition)["text"])
    assert sum(mismatches(stack.box, partition).values()) == 0
    print(f"worker process killed 1 s into embeddings: run {run.status.value}")
    if run.status.value == "SUCCESS":  # retried in another process
        starts = [
            pid for step, kind, pid in events if step == "embeddings" and kind == "STEP_START"
        ]
        assert len(starts) == 2 and starts[1] != victim
        assert shown == sorted(new_texts["text"])
    else:
        assert run.status.value == "FAILURE"
        assert shown == old


def test_the_shipped_instance_queues_runs_for_the_daemon(stack):
    """deploy/postgres/dagster.yaml as shipped: a backfill only queues its runs, and
    `dagster-daemon run` starts them (two at once) through the Celery workers."""
    names = ["gamma", "delta", "epsilon"]
    for i, name in enumerate(names):
        stack.box.write_dataset(name, sample_texts(50 + 3 * i, 3))
    known = {run.run_id for run in stack.runs()}
    with stack.daemon():
        assert stack.box.register().returncode == 0
        out, _ = stack.backfill([f"{name}|default" for name in names]).communicate(timeout=300)
        assert "Launched backfill job" in out, out
        runs = stack.wait([run.run_id for run in stack.runs(exclude=known)], timeout_s=900)
    assert [run.status.value for run in runs] == ["SUCCESS"] * 3
    workers = stack.worker_pids()
    for run in runs:
        kinds = [
            e.dagster_event.event_type_value
            for e in stack.instance().all_logs(run.run_id)
            if e.dagster_event is not None
        ]
        assert "PIPELINE_ENQUEUED" in kinds  # queued by the backfill, started by the daemon
        started = {pid for _, kind, pid in stack.steps(run.run_id) if kind == "STEP_START"}
        assert started and started <= set(workers)
