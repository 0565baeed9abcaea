"""Fault scenarios against real Dagster runs and a real DuckDB file.

Every scenario changes a partition's texts (or its inputs), makes something fail (kill -9 of the
README's `dagster asset materialize` at a chosen step, a reader holding the file, a bad file or
configuration, two runs at once) and then checks what a reader sees: the partition's complete
previous result or its complete new one, nothing lost, nothing mixed; then it starts the next run
and times how long that run waited before its first step. Prints a table, then one JSON line.

From the repository root:

    python -m benchmarks.reliability [--quick | --smoke]

--quick: a few kill points only; --smoke: one kill point, two bad inputs (a file, a
configuration), a stage whose inputs were never made and three of the result tools' hostile cases
(SMOKE_CASES), in a sandbox removed afterwards (two to three minutes).
"""

import argparse
import json
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl

from clustering_dagster.core.pipeline import STAGES
from clustering_dagster_tests.support.faults import (
    PARTITION,
    Sandbox,
    mismatches,
    sample_texts,
    step_start,
)

SMOKE_CASES = [
    "not over the results database",
    "csv export neutralises formulas unless asked not to",
    "an out folder that does not exist",
]
# Every stage that writes a table, in the order a run executes them (the map writes none).
ASSETS = [asset for asset, (_, tables) in STAGES.items() if tables]


@dataclass
class Row:
    scenario: str
    outcome: str
    rows_before: int
    rows_after: int
    mismatched_rows: int
    lost_rows: int
    blocked_s: float | None


class Bench:
    """One sandbox whose `bank|default` partition moves between text sets scenario by scenario."""

    def __init__(self, root: Path):
        self.box = Sandbox(root, lock_timeout_s=20)
        self.sets = [sample_texts(i, 10) for i in range(0, 70, 10)]  # 7 sets of 200 queries
        self.turn = 0
        self.rows: list[Row] = []
        self.check_others = True  # after each bad input, does another partition still run?

    def next_texts(self) -> pl.DataFrame:
        self.turn += 1
        return self.sets[self.turn % len(self.sets)]

    def visible(self, partition: str = PARTITION) -> list[str]:
        try:
            return sorted(self.box.published_texts(partition)["text"])
        except duckdb.CatalogException:
            return []

    def recover(
        self, expected: pl.DataFrame, partition: str = PARTITION
    ) -> tuple[bool, float | None, int]:
        """The next run: does it finish, how long did it wait for its first step, and how many
        expected texts does a reader miss afterwards."""
        run = self.box.start(partition)
        blocked = run.wait_for("STEP_START")  # seconds from launch to its first step
        ok = run.finish()
        missing = len(set(expected["text"]) ^ set(self.visible(partition)))
        return ok, blocked, missing

    def record(self, name: str, before: list[str], after: list[str], expected_after: list[str],
               partition: str = PARTITION, recover_with: pl.DataFrame | None = None,
               note: str = "") -> None:  # fmt: skip
        """Check a fault's aftermath, run the next run if asked, and keep the row."""
        mixed = sum(mismatches(self.box, partition).values())
        lost = len(set(expected_after) ^ set(after))
        outcome, blocked = "ok", None
        if recover_with is not None:
            ok, blocked, missing = self.recover(recover_with, partition)
            mixed += sum(mismatches(self.box, partition).values())
            lost += missing
            outcome = "ok" if ok else "next run failed"
        if mixed or lost:
            outcome = "FAILED"
        outcome = f"{outcome} {note}".strip()
        self.rows.append(Row(name, outcome, len(before), len(after), mixed, lost, blocked))
        print(self.rows[-1], flush=True)

    # --- the scenarios ---------------------------------------------------------------------

    def kill(self, name: str, marker: str, delay: float = 0.0) -> None:
        before = self.visible()
        texts = self.next_texts()
        self.box.write_dataset("bank", texts)
        run = self.box.start()
        reached = run.wait_for(marker)
        if reached is not None:
            time.sleep(delay)
            run.kill()
        else:
            run.finish()
        after = self.visible()
        # killed before publishing: the old snapshot; after it: the new one
        published = "published bank|default" in run.output
        expected = sorted(texts["text"]) if published or reached is None else before
        self.record(name, before, after, expected, recover_with=texts,
                    note="(published before the kill)" if published else "")  # fmt: skip

    def resume(self) -> None:
        """Killed mid-embedding: committed vectors survive and are not embedded again."""
        fresh = sample_texts(70, 7)  # texts no earlier scenario embedded
        before, stored = self.visible(), self.box.stored_vectors()
        self.box.write_dataset("bank", fresh)
        run = self.box.start()
        run.wait_for("embedded ")
        run.kill()
        kept = self.box.stored_vectors() - stored
        after = self.visible()
        ok, blocked, missing = self.recover(fresh)
        new = self.box.embedded_by_last_run()
        lost = len(set(before) ^ set(after)) + missing + (kept <= 0)
        mixed = sum(mismatches(self.box).values())
        twice = new - (fresh["text"].n_unique() - kept)
        outcome = "ok" if ok and not (lost or mixed or twice) else "FAILED"
        self.rows.append(Row(f"kill -9 mid-embedding, resume ({kept} vectors kept, "
                             f"{new} embedded after)", outcome, len(before), len(after),
                             mixed + abs(twice), lost, blocked))  # fmt: skip
        print(self.rows[-1], flush=True)

    def reader(self, hold_s: float | None, name: str) -> None:
        """A notebook holds a read-only connection: for `hold_s` seconds, or (None) until the
        run gives up waiting for the file."""
        before = self.visible()
        texts = self.next_texts()
        self.box.write_dataset("bank", texts)
        with duckdb.connect(str(self.box.database), read_only=True):
            run = self.box.start()
            if hold_s is None:
                ok = run.finish()
            else:  # hold on for a while after the run met the lock
                run.wait_for("is locked by")
                time.sleep(hold_s)
        if hold_s is not None:
            ok = run.finish()
        after = self.visible()
        expected = sorted(texts["text"]) if ok else before
        self.record(name, before, after, expected, recover_with=None if ok else texts)
        if "is locked by" not in run.output or not (ok or "stayed locked by" in run.output):
            self.rows[-1].outcome = "FAILED (the wait was not logged)"

    def together(self, partitions: list[str], name: str) -> None:
        texts = self.next_texts()
        self.box.write_dataset("bank", texts)
        before = self.visible()
        runs = [self.box.start(p) for p in partitions]
        oks = [run.finish() for run in runs]
        after = self.visible()
        self.record(name, before, after, sorted(texts["text"]))
        if not all(oks):
            self.rows[-1].outcome = "FAILED (a run failed)"

    def bad_input(self, name: str, damage: Callable[[], None], repair: Callable[[], None],
                  says: str, partition: str = PARTITION, fails: bool = True) -> None:  # fmt: skip
        """A bad file or configuration: its run fails (if `fails`) with a message that `says`
        what is wrong, a reader keeps the previous result, other partitions still run."""
        before = self.visible(partition)
        damage()
        run = self.box.start(partition)
        clear = run.finish() != fails and says in run.output
        after = self.visible(partition)
        repair()
        other_ok = self.box.start("other|default").finish() if self.check_others else True
        self.record(name, before, after, before, partition)
        if not (clear and other_ok):
            self.rows[-1].outcome = f"FAILED (said it: {clear}, others ran: {other_ok})"

    def never_clustered(self) -> None:
        """`--select cluster_hierarchy` on a partition never clustered: one clear line."""
        (self.box.datasets / "fresh.csv").write_text("text\nhello\nworld\n")
        self.box.register()
        run = self.box.start("fresh|default", select="cluster_hierarchy")
        clear = not run.finish() and "has no assignments yet: materialise cluster_levels" in (
            run.output
        )
        self.rows.append(Row("a stage whose inputs were never made", "ok" if clear else "FAILED",
                             0, len(self.visible("fresh|default")), 0, 0, None))  # fmt: skip
        print(self.rows[-1], flush=True)

    def result_tools(self, names: list[str] | None = None) -> None:
        """The result CLI under hostile input (issue 21's cases, shared with the tests; `names`,
        or all of them) on the sandbox's file, one scenario each: it must pass, and every
        partition read as before."""
        from clustering_dagster_tests.support.hostile import CASES, DATASET, write_dataset

        write_dataset(self.box.datasets)
        self.box.register()
        hostile = f"{DATASET}|default"
        assert self.box.start(hostile).finish(), "the hostile partition's run failed"
        scratch = Path(tempfile.mkdtemp(prefix="result_tools_", dir=self.box.root))
        cases = {name: CASES[name] for name in names} if names is not None else CASES
        for number, (name, case) in enumerate(cases.items()):
            before = {p: self.visible(p) for p in (PARTITION, hostile)}
            try:
                (scratch / str(number)).mkdir()
                case(self.box, scratch / str(number))
                outcome = "ok"
            except AssertionError as err:
                outcome = f"FAILED ({str(err)[:200]})"
            after = {p: self.visible(p) for p in before}
            lost = sum(len(set(before[p]) ^ set(after[p])) for p in before)
            mixed = sum(sum(mismatches(self.box, p).values()) for p in before)
            if lost or mixed:
                outcome = "FAILED"
            self.rows.append(Row(f"result tools: {name}", outcome, len(before[hostile]),
                                 len(after[hostile]), mixed, lost, None))  # fmt: skip
            print(self.rows[-1], flush=True)

    def dead_run(self) -> None:
        """A killed run is marked failed by the next run's first step once it has been silent
        for the grace period."""
        from dagster import DagsterInstance, DagsterRunStatus

        from clustering_dagster.run_health import GRACE_S

        texts = self.next_texts()
        self.box.write_dataset("bank", texts)
        before = self.visible()
        run = self.box.start()
        run.wait_for(step_start("projections"))
        run.kill()
        killed_at = time.monotonic()
        time.sleep(GRACE_S)
        ok, blocked, missing = self.recover(texts)
        instance = DagsterInstance.from_config(str(self.box.home))
        status = instance.get_run_by_id(run.run_id).status
        failed = status == DagsterRunStatus.FAILURE
        self.rows.append(Row(
            f"dead run marked failed ({time.monotonic() - killed_at:.0f} s after kill -9)",
            "ok" if ok and failed and not missing else f"FAILED ({status})", len(before),
            len(self.visible()), sum(mismatches(self.box).values()), missing, blocked))  # fmt: skip
        print(self.rows[-1], flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a few kill points only")
    parser.add_argument("--smoke", action="store_true", help="one kill point, for the tests")
    args = parser.parse_args()
    bench = Bench(Path(tempfile.mkdtemp(prefix="reliability_")))
    try:
        scenarios(bench, args.quick, args.smoke)
    finally:
        if args.smoke:
            shutil.rmtree(bench.box.root, ignore_errors=True)
    report(bench)


def scenarios(bench: Bench, quick: bool, smoke: bool) -> None:
    box = bench.box
    box.write_dataset("bank", bench.sets[0])
    box.write_dataset("other", sample_texts(0, 5))
    box.register()
    assert box.start().finish() and box.start("other|default").finish(), "baseline runs failed"

    assets = ["embeddings", "cluster_levels"] if quick else ASSETS
    for asset in ["projections"] if smoke else assets:
        bench.kill(f"kill -9 at the start of {asset}", step_start(asset))
    if not (quick or smoke):
        bench.kill("kill -9 2 s into projections", step_start("projections"), 2.0)
        bench.kill("kill -9 right after publishing", "published bank|default")
        rng = random.Random(7)
        for _ in range(2):
            delay = round(rng.uniform(0, 25), 1)
            bench.kill(f"kill -9 {delay} s after the run starts", "RUN_START", delay)
    if not smoke:
        bench.resume()
        bench.reader(None, "reader holds the file past the lock timeout (20 s)")
        bench.reader(5, "reader holds the file for 5 s")
        bench.together([PARTITION, "other|default"], "two partitions' runs at once")
        bench.together([PARTITION, PARTITION], "two runs of one partition at once")

    datasets, configs = box.datasets, box.configs
    original = configs.read_text()

    def replace_bank(name: str, write: Callable[[Path], None]) -> tuple[Callable, Callable]:
        def damage():
            (datasets / "bank.csv").rename(datasets / "bank.keep")
            write(datasets / name)

        def repair():
            (datasets / name).unlink()
            (datasets / "bank.keep").rename(datasets / "bank.csv")

        return damage, repair

    bad = [
        dict(name="texts that are JSON numbers",
             fix=replace_bank("bank.jsonl", lambda p: p.write_text('{"text": "hi"}\n{"text": 12345}\n')),
             says="line 2: column 'text' holds int"),
        dict(name="a truncated Parquet file",
             fix=replace_bank("bank.parquet", lambda p: p.write_bytes(b"PAR1" + b"\0" * 64)),
             says="cannot be read as parquet"),
        dict(name="a misspelt key in the dataset's YAML",
             fix=(lambda: (datasets / "bank.yaml").write_text("text_colum: text\n"),
                  lambda: (datasets / "bank.yaml").unlink()),
             says="unknown setting 'text_colum'"),
        dict(name="metadata_columns given as a string",
             fix=(lambda: (datasets / "bank.yaml").write_text("metadata_columns: category\n"),
                  lambda: (datasets / "bank.yaml").unlink()),
             says="metadata_columns must be a list"),
        dict(name="an unusable file name beside the datasets",
             fix=(lambda: (datasets / "数据.csv").write_text("text\nx\n"),
                  lambda: (datasets / "数据.csv").unlink()),
             says="RUN_SUCCESS", fails=False),
        dict(name="an invalid run configuration entry",
             fix=(lambda: configs.write_text(original + "\nbroken: {levels: [], typo: 1}\n"),
                  lambda: configs.write_text(original)),
             says="run configuration 'broken' is invalid", partition="bank|broken"),
        dict(name="a run configuration name given twice",
             fix=(lambda: configs.write_text(original + "\ndefault: {levels: [{name: fine}]}\n"),
                  lambda: configs.write_text(original)),
             says="run configuration 'default' is defined twice"),
    ]  # fmt: skip
    # --smoke: a bad file and a bad configuration (test_crash_safety.py runs the others' kinds)
    for case in [bad[0], bad[-1]] if smoke else bad:
        bench.check_others = not smoke or case is bad[-1]  # --smoke checks the others once
        bench.bad_input(case["name"], *case["fix"], says=case["says"],
                        partition=case.get("partition", PARTITION),
                        fails=case.get("fails", True))  # fmt: skip
    bench.check_others = True
    bench.never_clustered()
    if not smoke:
        bench.dead_run()
    bench.result_tools(SMOKE_CASES if smoke else None)


def report(bench: Bench) -> None:
    rows = pl.DataFrame([vars(row) for row in bench.rows])
    with pl.Config(tbl_rows=100, fmt_str_lengths=90, tbl_width_chars=200):
        print(rows)
    print(
        "| scenario | outcome | rows before | rows after | mismatched | lost | next run waited (s) |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in bench.rows:
        blocked = "" if row.blocked_s is None else f"{row.blocked_s:.1f}"
        print(f"| {row.scenario} | {row.outcome} | {row.rows_before} | {row.rows_after} | "
              f"{row.mismatched_rows} | {row.lost_rows} | {blocked} |")  # fmt: skip
    waits = [row.blocked_s for row in bench.rows if row.blocked_s is not None]
    print(json.dumps({
        "scenarios": len(bench.rows),
        "failed": sum(not row.outcome.startswith("ok") for row in bench.rows),
        "mismatched_rows": int(rows["mismatched_rows"].sum()),
        "lost_rows": int(rows["lost_rows"].sum()),
        "max_blocked_s": round(max(waits), 1) if waits else None,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
