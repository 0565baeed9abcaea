"""Past one machine, run for real on this one: Redis (the Celery broker), PostgreSQL (the Dagster
instance of deploy/postgres/dagster.yaml) and two Celery workers (deploy/celery/worker.yaml), with
`dagster job backfill` running cluster_texts through the Celery executor and the daemon. Each step
runs in a worker. A worker process killed in the middle of a step (the partition keeps one complete
result, never a mix) is the `distributed` benchmark's smoke, which test_benchmarks.py runs. The
services come from Debian's packages (installed when missing, as root)."""

import pytest
import yaml

from clustering_dagster.executors import celery_config, celery_settings, pick_executor
from clustering_dagster.run_health import TAG_PID

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


def test_the_shipped_instance_queues_runs_for_the_daemon(stack):
    """deploy/postgres/dagster.yaml as shipped: a backfill only queues its runs, and
    `dagster-daemon run` starts them (two at once) through the Celery workers: every step in a
    worker's pool process, both workers used, each partition one complete result. (A backfill
    without the daemon and a worker killed mid-step: the `distributed` benchmark's smoke, run by
    test_benchmarks.py.)"""
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

    instance = stack.instance()
    assert isinstance(instance.run_storage, PostgresRunStorage)
    assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
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
    workers, used = stack.worker_pids(), set()
    for run in runs:
        kinds = [
            e.dagster_event.event_type_value
            for e in stack.instance().all_logs(run.run_id)
            if e.dagster_event is not None
        ]
        assert "PIPELINE_ENQUEUED" in kinds  # queued by the backfill, started by the daemon
        started = {pid for _, kind, pid in stack.steps(run.run_id) if kind == "STEP_START"}
        assert started and started <= set(workers)
        used |= {workers[pid] for pid in started}
        # no step tagged the run with its worker's process: the dead-run reaper leaves a run
        # whose worker died to the broker, which hands its step to another worker
        assert TAG_PID not in run.tags
    assert used == {"w0", "w1"}
    for i, name in enumerate(names):
        shown = stack.box.published_texts(f"{name}|default")
        assert sorted(shown["text"]) == sorted(sample_texts(50 + 3 * i, 3)["text"])
        assert sum(mismatches(stack.box, f"{name}|default").values()) == 0
