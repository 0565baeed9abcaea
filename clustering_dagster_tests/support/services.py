"""Throwaway Redis and PostgreSQL servers for tests and benchmarks, on free loopback ports, each in a
temporary folder of its own that is deleted when it stops.

Both come from Debian's packages (`redis-server`, `postgresql`); `ensure_installed()` installs them
with apt-get when they are missing and we are root (as on CI). PostgreSQL refuses to run as root,
so under root the server runs as the `postgres` user the package creates, its folder owned by that
user. Both are tuned for throwaway use (no fsync, no persistence): they test behaviour, not
durability.
"""

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

APT_PACKAGES = ("redis-server", "postgresql")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def redis_binary() -> str | None:
    return shutil.which("redis-server")


def postgres_bin_dir() -> Path | None:
    """Debian keeps initdb and postgres in /usr/lib/postgresql/<major>/bin (newest first)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def installed() -> bool:
    return redis_binary() is not None and postgres_bin_dir() is not None


def ensure_installed() -> str | None:
    """Install the Debian packages if a server is missing; None when both are there, else why
    not (not root, no apt-get, or apt-get failed)."""
    if installed():
        return None
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return f"redis-server and postgresql are not installed (apt-get install {' '.join(APT_PACKAGES)})"
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    command = ["apt-get", "install", "-y", "--no-install-recommends", *APT_PACKAGES]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:  # an old or missing package list: update once and try again
        subprocess.run(["apt-get", "update"], env=env, capture_output=True)
        done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0 or not installed():
        return f"apt-get install {' '.join(APT_PACKAGES)} failed: {done.stderr[-500:]}"
    return None


def _wait(check, process: subprocess.Popen, what: str, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited ({process.returncode}):\n{_tail(log)}")
        if check():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not answer in {timeout_s:.0f} s:\n{_tail(log)}")


def _tail(log: Path, chars: int = 3000) -> str:
    try:
        return log.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class RedisServer:
    """`with RedisServer() as redis:` a Redis on 127.0.0.1; `redis.url(db)` names a database."""

    def __init__(self):
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="redis-"))
        self.log = self.folder / "redis.log"
        self.process: subprocess.Popen | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def __enter__(self) -> "RedisServer":
        binary = redis_binary()
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        command = [
            binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
            "--save", "", "--appendonly", "no", "--daemonize", "no", "--protected-mode", "no",
            "--logfile", str(self.log),
        ]  # fmt: skip
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        try:
            _wait(lambda: _answers(self.port), self.process, "redis-server", self.log, 30)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_exc) -> None:
        _stop(self.process, timeout_s=10)
        shutil.rmtree(self.folder, ignore_errors=True)


class PostgresServer:
    """`with PostgresServer() as pg:` a fresh PostgreSQL cluster on 127.0.0.1 (trust
    authentication, user `postgres`); `pg.url(db)` is a SQLAlchemy URL with the psycopg2 driver (SQLAlchemy 2.1 takes psycopg 3 for a bare `postgresql://`),
    `pg.create_database(name)` adds a database."""

    def __init__(self):
        self.port = free_port()
        # under /tmp directly: the server's user must be able to reach its folder
        self.folder = Path(tempfile.mkdtemp(prefix="postgres-"))
        self.data = self.folder / "data"
        self.log = self.folder / "postgres.log"
        self.process: subprocess.Popen | None = None
        self.user = "postgres" if os.geteuid() == 0 else None

    def url(self, db: str = "postgres") -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{db}"

    def dsn(self, db: str = "postgres") -> str:
        """The same database as a libpq keyword string (DuckDB's postgres extension, DuckLake)."""
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={db}"

    def _run(self, command: list[str], **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(command, user=self.user, capture_output=True, text=True, **kwargs)

    def __enter__(self) -> "PostgresServer":
        bin_dir = postgres_bin_dir()
        if bin_dir is None:
            raise RuntimeError("postgresql is not installed")
        self.bin_dir = bin_dir
        if self.user is not None:
            shutil.chown(self.folder, self.user, self.user)
        done = self._run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],  # fmt: skip
            cwd=self.folder,
        )
        if done.returncode != 0:
            shutil.rmtree(self.folder, ignore_errors=True)
            raise RuntimeError(f"initdb failed: {done.stdout}{done.stderr}")
        command = [
            str(bin_dir / "postgres"), "-D", str(self.data), "-p", str(self.port),
            "-h", "127.0.0.1", "-k", str(self.folder), "-c", "fsync=off",
            "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
            "-c", "max_connections=200", "-c", "shared_buffers=64MB",
        ]  # fmt: skip
        log = self.log.open("w")
        if self.user is not None:
            shutil.chown(self.log, self.user, self.user)
        self.process = subprocess.Popen(
            command, user=self.user, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, cwd=self.folder,
        )  # fmt: skip
        log.close()
        try:
            _wait(self._ready, self.process, "postgres", self.log, 60)
        except BaseException:
            self.__exit__()
            raise
        return self

    def _ready(self) -> bool:
        done = self._run(
            [str(self.bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)]
        )
        return done.returncode == 0

    def sql(self, statement: str, db: str = "postgres") -> str:
        done = self._run(
            [str(self.bin_dir / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U",
             "postgres", "-d", db, "-v", "ON_ERROR_STOP=1", "-At", "-c", statement],
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"psql {statement!r}: {done.stderr}")
        return done.stdout

    def create_database(self, name: str) -> str:
        self.sql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def __exit__(self, *_exc) -> None:
        # SIGINT: a "fast" shutdown (SIGTERM's "smart" one waits for every client to leave)
        _stop(self.process, timeout_s=20, sig=signal.SIGINT)
        shutil.rmtree(self.folder, ignore_errors=True)


def _session(sid: int) -> list[int]:
    """The pids of the processes in session `sid` (from /proc: field 6 of each stat file)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[3] == str(sid):
            pids.append(int(stat.parent.name))
    return pids


def _stop(process: subprocess.Popen | None, timeout_s: float, sig=signal.SIGTERM) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class CeleryWorker:
    """`with CeleryWorker(name, env, log) as worker:` one `dagster-celery worker start` (Celery's
    prefork pool of `concurrency` processes, here 1) reading its broker and backend from
    deploy/celery/worker.yaml, i.e. from CLUSTERING_CELERY_BROKER and CLUSTERING_CELERY_BACKEND in
    `env` (which also needs DAGSTER_HOME and the CLUSTERING_* paths of the runs). It runs in a
    session of its own, so stopping it ends its pool too."""

    def __init__(self, name: str, env: dict, log: Path, worker_yaml: Path, concurrency: int = 1):
        self.name = name
        self.log = log
        bin_dir = Path(sys.executable).parent
        self.env = env | {"PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"}
        self.command = [
            str(bin_dir / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app",
            "-y", str(worker_yaml), "-n", name, "--",
            "--concurrency", str(concurrency), "--without-gossip", "--without-mingle",
        ]  # fmt: skip
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "CeleryWorker":
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        try:
            _wait(lambda: " ready." in _tail(self.log, 100_000), self.process,
                  f"celery worker {self.name}", self.log, 120)  # fmt: skip
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_exc) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)  # a warm shutdown of the worker and pool
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        except ProcessLookupError:
            pass


class Distributed:
    """The distributed stack on one machine, around a `faults.Sandbox` (datasets, run
    configurations, the DuckDB file, DAGSTER_HOME): Redis as the Celery broker and result backend,
    PostgreSQL holding the Dagster instance (deploy/postgres/dagster.yaml's storage), and
    `workers` Celery workers started as deploy/celery/worker.yaml says, with the broker's
    visibility timeout cut to `redeliver_s`; with `lake`, the results in a DuckLake whose catalog
    is in the same PostgreSQL and whose data is a folder under `root`. Runs use
    CLUSTERING_EXECUTOR=celery; they are launched
    by the command that submits them (the default run coordinator: no daemon here)."""

    def __init__(self, root: Path, workers: int = 2, redeliver_s: int = 60, lake: bool = False):
        from .faults import Sandbox

        self.lake = lake  # results in a DuckLake (catalog in this PostgreSQL), not one DuckDB file

        self.root = root
        self.box = Sandbox(root)
        self.n_workers = workers
        self.redeliver_s = redeliver_s
        self.redis = RedisServer()
        self.postgres = PostgresServer()
        self.workers: list[CeleryWorker] = []
        self._instance = None

    def __enter__(self) -> "Distributed":
        import yaml

        from .paths import REPO

        try:
            self.redis.__enter__()
            self.postgres.__enter__()
            instance = yaml.safe_load((REPO / "deploy/postgres/dagster.yaml").read_text())
            instance["run_coordinator"] = {
                "module": "dagster.core.run_coordinator",
                "class": "DefaultRunCoordinator",
            }
            (self.box.home / "dagster.yaml").write_text(yaml.safe_dump(instance))
            worker = yaml.safe_load((REPO / "deploy/celery/worker.yaml").read_text())
            options = worker["execution"]["config"]["config_source"]["broker_transport_options"]
            options["visibility_timeout"] = self.redeliver_s
            self.worker_yaml = self.root / "worker.yaml"
            self.worker_yaml.write_text(yaml.safe_dump(worker))
            self.box.env |= {
                "DAGSTER_POSTGRES_URL": self.postgres.create_database("dagster"),
                "CLUSTERING_EXECUTOR": "celery",
                "CLUSTERING_CELERY_BROKER": self.redis.url(0),
                "CLUSTERING_CELERY_BACKEND": self.redis.url(1),
            }
            if self.lake:
                self.postgres.create_database("lake")
                self.box.env |= {
                    "CLUSTERING_DUCKLAKE": "postgres:" + self.postgres.dsn("lake"),
                    "CLUSTERING_DUCKLAKE_DATA": str(self.root / "lake_data"),
                }
            for i in range(self.n_workers):
                self.start_worker(f"w{i}")
        except BaseException:
            self.__exit__()
            raise
        return self

    def start_worker(self, name: str) -> CeleryWorker:
        worker = CeleryWorker(name, self.box.env, self.root / f"{name}.log", self.worker_yaml)
        self.workers.append(worker.__enter__())
        return worker

    @contextmanager
    def daemon(self) -> Iterator[subprocess.Popen]:
        """deploy/postgres/dagster.yaml as shipped (runs queued, at most
        CLUSTERING_MAX_CONCURRENT_RUNS at once) and `dagster-daemon run` dequeuing them; the
        nightly schedule and the dataset sensor switched off. The default coordinator is back
        afterwards."""
        from .paths import REPO

        home = self.box.home / "dagster.yaml"
        kept = home.read_text()
        shutil.copy(REPO / "deploy/postgres/dagster.yaml", home)
        operations = self.root / "operations.yaml"
        operations.write_text("nightly: {enabled: false}\ndataset_sensor: {enabled: false}\n")
        env = self.box.env | {
            "CLUSTERING_MAX_CONCURRENT_RUNS": "2",
            "CLUSTERING_OPERATIONS": str(operations),
        }
        saved = self.box.env
        self.box.env = env
        bin_dir = Path(sys.executable).parent
        with (self.root / "daemon.log").open("w") as log:
            process = subprocess.Popen(
                [str(bin_dir / "dagster-daemon"), "run", "-m", "clustering_dagster.definitions"],
                env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        try:
            yield process
        finally:
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            except ProcessLookupError:
                pass
            home.write_text(kept)
            self.box.env = saved

    def instance(self):
        """The shared Dagster instance, as every process here opens it."""
        from dagster import DagsterInstance

        if self._instance is None:
            os.environ["DAGSTER_POSTGRES_URL"] = self.box.env["DAGSTER_POSTGRES_URL"]
            self._instance = DagsterInstance.from_config(str(self.box.home))
        return self._instance

    def backfill(self, partitions: list[str]) -> subprocess.Popen:
        """`dagster job backfill` of cluster_texts: it launches one run per partition and returns
        once they have ended (run it in the background to watch them)."""
        from .paths import REPO

        command = [
            sys.executable, "-m", "dagster", "job", "backfill", "-m",
            "clustering_dagster.definitions", "-j", "cluster_texts", "--partitions",
            ",".join(partitions), "--noprompt",
        ]  # fmt: skip
        return subprocess.Popen(
            command, env=self.box.env, cwd=REPO, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )  # fmt: skip

    def runs(self, exclude: set[str] = frozenset()) -> list:
        return [r for r in self.instance().get_runs() if r.run_id not in exclude]

    def wait(self, run_ids: list[str], timeout_s: float = 900) -> list:
        deadline = time.monotonic() + timeout_s
        while True:
            runs = [self.instance().get_run_by_id(run_id) for run_id in run_ids]
            if all(run.is_finished for run in runs) or time.monotonic() > deadline:
                return runs
            time.sleep(0.5)

    def steps(self, run_id: str) -> list[tuple[str, str, int | None]]:
        """(step key, event type, pid) of the run's step events, in order."""
        return [
            (e.step_key, e.dagster_event.event_type_value, e.dagster_event.pid)
            for e in self.instance().all_logs(run_id)
            if e.dagster_event is not None and e.step_key
        ]

    def celery_hosts(self, run_id: str) -> set[str]:
        """The Celery worker names that took the run's steps."""
        names = set()
        for e in self.instance().all_logs(run_id):
            data = e.dagster_event.event_specific_data if e.dagster_event else None
            metadata = getattr(data, "metadata", None) or {}
            if "Celery worker" in metadata:
                names.add(str(metadata["Celery worker"].value))
        return names

    def worker_pids(self) -> dict[int, str]:
        """Every live process of every worker (main and pool), by pid: its worker's name."""
        found = {}
        for worker in self.workers:
            if worker.process is None or worker.process.poll() is not None:
                continue
            found |= {pid: worker.name for pid in _session(worker.process.pid)}
        return found

    def worker_of(self, pid: int) -> "CeleryWorker | None":
        name = self.worker_pids().get(pid)
        return next((w for w in self.workers if w.name == name), None)

    def __exit__(self, *_exc) -> None:
        for worker in self.workers:
            worker.__exit__()
        if self._instance is not None:
            self._instance.dispose()
        self.postgres.__exit__()
        self.redis.__exit__()
