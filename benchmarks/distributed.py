"""Past one machine, on this one: Redis, PostgreSQL and two Celery workers, a backfill through the
Celery executor against the PostgreSQL-backed Dagster instance, and workers killed mid-step.

Starts throwaway Redis and PostgreSQL servers (Debian's packages, installed when missing) and two
`dagster-celery` workers of one pool process each, as deploy/celery/worker.yaml and
deploy/postgres/dagster.yaml say (the broker's visibility timeout cut to 60 s), then:

1. `dagster job backfill` of cluster_texts over several partitions of real Banking77 queries
   (4 x 200 texts; --smoke: 3 x 60), CLUSTERING_EXECUTOR=celery: every step is a Celery task.
2. One more run of the first partition with new texts: the worker's pool process running its
   embeddings step is killed (-9) a second into the step. The worker hands the step back at once
   and it runs again in a fresh process.
3. (not with --smoke) One more run of the second partition with new texts: the whole worker that
   runs its embeddings step (main process and pool) is killed (-9) a second into the step, as when
   a machine is lost; Redis hands the step to the other worker once the visibility timeout passes.

After each kill: `mismatched_rows` counts rows a reader sees that do not belong with the
partition's other results, `lost_rows` the texts that differ from the complete result the run's
outcome implies (the new texts if it succeeded, the previous ones if it failed), as in
benchmarks/reliability.py. Results go to a DuckLake, the store several machines share (catalog in
the same PostgreSQL, data in a local folder: docs/distributed.md), or with --file to one DuckDB
file on this machine. Prints a table of runs; the last line is one JSON object.

From the repository root (needs pip install -e ".[distributed,lake]", the dev extra has both):

    python -m benchmarks.distributed [--smoke] [--file]
"""

import argparse
import json
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

from clustering_dagster_tests.support.faults import mismatches, sample_texts
from clustering_dagster_tests.support.services import Distributed, ensure_installed

REDELIVER_S = 60


def kill_mid_step(stack: Distributed, partition: str, texts, step: str, whole: bool) -> dict:
    """Write `texts` as the partition's dataset, run it, kill -9 the process running `step` (or
    its whole worker) a second into the step; what a reader sees afterwards."""
    dataset = partition.split("|")[0]
    old = sorted(stack.box.published_texts(partition)["text"])
    stack.box.write_dataset(dataset, texts)
    known = {run.run_id for run in stack.runs()}
    started = time.monotonic()
    backfill = stack.backfill([partition])
    run_id, victim = None, None
    try:
        while victim is None and time.monotonic() - started < 600:
            fresh = stack.runs(exclude=known)
            if fresh:
                run_id = fresh[0].run_id
                victim = next(
                    (pid for key, kind, pid in stack.steps(run_id)
                     if key == step and kind == "STEP_START"),
                    None,
                )  # fmt: skip
            time.sleep(0.2)
        if victim is None:
            raise RuntimeError(f"the run of {partition} never started {step}")
        time.sleep(1.0)
        worker = stack.worker_of(victim)
        if worker is None:
            raise RuntimeError(f"step {step} ran in pid {victim}, no worker's process")
        if whole:
            os.killpg(worker.process.pid, signal.SIGKILL)
            worker.process.wait()
        else:
            os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        [run] = stack.wait([run_id], timeout_s=900)
        backfill.communicate(timeout=120)
    finally:
        if backfill.poll() is None:
            os.killpg(backfill.pid, signal.SIGKILL)
    events = stack.steps(run_id)
    status = run.status.value
    expected = sorted(texts["text"]) if status == "SUCCESS" else old
    shown = sorted(stack.box.published_texts(partition)["text"])
    starts = [pid for key, kind, pid in events if key == step and kind == "STEP_START"]
    return {
        "scenario": f"kill -9 the {'whole worker' if whole else 'pool process'} 1 s into {step}",
        "partition": partition,
        "worker": worker.name,
        "mid_step": (step, "STEP_SUCCESS", victim) not in events,
        "outcome": {"SUCCESS": "retried, succeeded", "FAILURE": "failed"}.get(status, status),
        "step_starts": len(starts),
        "seconds_after_kill": round(time.monotonic() - killed_at, 1),
        "rows_before": len(old),
        "rows_after": len(shown),
        "mismatched_rows": sum(mismatches(stack.box, partition).values()),
        "lost_rows": len(set(expected) ^ set(shown)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="3 x 60 texts, one kill (~3 min)")
    parser.add_argument(
        "--file", action="store_true", help="results in one DuckDB file, not a lake"
    )
    args = parser.parse_args()
    missing = ensure_installed()
    if missing:
        raise SystemExit(missing)
    began = time.monotonic()
    per, count = (3, 3) if args.smoke else (10, 4)
    names = [f"part{i}" for i in range(count)]
    root = Path(tempfile.mkdtemp(prefix="distributed_"))
    try:
        with Distributed(root, workers=2, redeliver_s=REDELIVER_S, lake=not args.file) as stack:
            figures = run(stack, names, per, args.smoke)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    figures["seconds"] = round(time.monotonic() - began, 1)
    print(json.dumps(figures))


def run(stack: Distributed, names: list[str], per: int, smoke: bool) -> dict:
    for i, name in enumerate(names):
        stack.box.write_dataset(name, sample_texts(i * per, per))
    registered = stack.box.register()
    if registered.returncode != 0:
        raise RuntimeError(registered.stdout + registered.stderr)
    partitions = [f"{name}|default" for name in names]
    started = time.monotonic()
    out, _ = stack.backfill(partitions).communicate(timeout=1800)
    runs = stack.wait([run.run_id for run in stack.runs()], timeout_s=1800)
    backfill_s = time.monotonic() - started
    workers = stack.worker_pids()
    print("| partition | status | steps | step processes (worker) | Celery workers |")
    print("|---|---|---|---|---|")
    step_pids: set[int] = set()
    for run in sorted(runs, key=lambda r: r.tags.get("dagster/partition", "")):
        pids = [pid for _, kind, pid in stack.steps(run.run_id) if kind == "STEP_START"]
        step_pids |= set(pids)
        named = ", ".join(
            f"{pid} ({workers.get(pid, 'not a worker')})" for pid in sorted(set(pids))
        )
        hosts = ", ".join(sorted(stack.celery_hosts(run.run_id)))
        print(f"| {run.tags.get('dagster/partition')} | {run.status.value} | {len(pids)} | "
              f"{named} | {hosts} |")  # fmt: skip
    succeeded = sum(run.status.value == "SUCCESS" for run in runs)
    if succeeded < len(partitions):
        print(out[-5000:])
    print(f"backfill of {len(partitions)} partitions x {per * 20} texts: {backfill_s:.1f} s")
    kills = [
        kill_mid_step(stack, partitions[0], sample_texts(40, 18 if not smoke else 30),
                      "embeddings", whole=False),
    ]  # fmt: skip
    if not smoke:
        kills.append(
            kill_mid_step(stack, partitions[1], sample_texts(58, 19), "embeddings", whole=True)
        )
    print("| scenario | partition | worker | mid-step | outcome | rows before | rows after | "
          "mismatched | lost | s after kill |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for k in kills:
        print(f"| {k['scenario']} | {k['partition']} | {k['worker']} | {k['mid_step']} | "
              f"{k['outcome']} ({k['step_starts']} starts of the step) | {k['rows_before']} | "
              f"{k['rows_after']} | {k['mismatched_rows']} | {k['lost_rows']} | "
              f"{k['seconds_after_kill']} |")  # fmt: skip
    return {
        "partitions": len(partitions),
        "partitions_succeeded": succeeded,
        "partitions_failed": len(runs) - succeeded,
        "workers_used": len({workers[pid] for pid in step_pids if pid in workers}),
        "step_processes": len(step_pids),
        "steps_outside_workers": len(step_pids - set(workers)),
        "backfill_s": round(backfill_s, 1),
        "kills": len(kills),
        "kills_mid_step": sum(k["mid_step"] for k in kills),
        "kill_outcomes": [k["outcome"] for k in kills],
        "mismatched_rows": sum(k["mismatched_rows"] for k in kills),
        "lost_rows": sum(k["lost_rows"] for k in kills),
        "store": "DuckLake (PostgreSQL catalog, local data folder)"
        if stack.lake
        else "one DuckDB file (single machine)",
    }


if __name__ == "__main__":
    main()
