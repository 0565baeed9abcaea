"""DuckLake: the results store several machines write at once (docs/distributed.md).

With CLUSTERING_DUCKLAKE set, every connection of the project (`store.connect`, the read-only
readers, the explorer's) is a cursor of one in-memory DuckDB per process that has loaded the
`ducklake` and `postgres_scanner` extensions from their PyPI packages (the `lake` extra), attached
the lake as catalog `clustering_lake` and `USE`s it: every query of the project (`clustering.x`,
`clustering_store.x`) runs unchanged. The catalog (PostgreSQL) holds the tables, their snapshots
and the lake's transactions; the rows are Parquet files under the data path (a folder, or object
storage). Without the setting nothing here runs and the results are the single DuckDB file.

What differs from the file, and where it is handled:
- no PRIMARY KEY (store.ensure_schema drops it; every insert that must not duplicate is an
  anti-join, and readers of the shared caches tolerate a concurrent duplicate);
- no fixed-size ARRAY type: the vector store keeps FLOAT[] rows in `clustering_store` and
  `clustering.embedding_store_<d>` is a view casting them to FLOAT[d], so readers are unchanged;
- optimistic concurrency: two writers whose transactions touch the same table conflict at COMMIT
  (`duckdb.TransactionException`); `store.in_transaction` retries the whole transaction;
- readers never wait for writers: each query reads one committed snapshot.
"""

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb

from ..config import settings

# The catalog name the lake is attached as (never `clustering` or `clustering_store`, which would
# make `clustering.table` ambiguous).
NAME = "clustering_lake"

# Attempts at attaching a lake whose catalog another process is creating at the same moment.
ATTACH_TRIES = 5

# URL schemes of object storage: the data path needs DuckDB's httpfs extension.
REMOTE = ("s3://", "s3a://", "gs://", "gcs://", "r2://", "http://", "https://")


@dataclass(frozen=True)
class Lake:
    """DuckLake's catalog (`postgres:<libpq keywords>`, or `sqlite:<file>` / `duckdb:<file>` for
    one machine) and its data path (a folder, or `s3://bucket/prefix/`)."""

    catalog: str
    data_path: str

    @classmethod
    def configured(cls, environ=None) -> "Lake | None":
        """The lake of CLUSTERING_DUCKLAKE / CLUSTERING_DUCKLAKE_DATA in `environ` (default: this
        process's environment), or None: the single DuckDB file."""
        found = settings.ducklake(environ)
        return None if found is None else cls(*found)

    @property
    def remote(self) -> bool:
        return self.data_path.startswith(REMOTE)

    def connect(self) -> duckdb.DuckDBPyConnection:
        """A new connection (cursor) to the lake, its catalog in use; close it when done."""
        key = (self, os.getpid())  # a forked child opens its own
        with _LOCK:
            root = _ROOTS.get(key)
            if root is None:
                root = _ROOTS[key] = self._attach()
            cursor = root.cursor()
        cursor.execute(f"USE {NAME}")
        return cursor

    def _attach(self) -> duckdb.DuckDBPyConnection:
        conn = duckdb.connect(config={"autoinstall_known_extensions": False})
        if self.catalog.startswith("postgres:"):
            load_extension(conn, "postgres_scanner")
        if self.remote:
            load_extension(conn, "httpfs")
            _s3_secret(conn)
        else:
            Path(self.data_path).mkdir(parents=True, exist_ok=True)
        load_extension(conn, "ducklake")
        data = self.data_path if self.remote else str(Path(self.data_path).resolve()) + os.sep
        attach = (
            f"ATTACH {_literal('ducklake:' + self.catalog)} AS {NAME} (DATA_PATH {_literal(data)})"
        )
        for attempt in range(ATTACH_TRIES):
            try:
                conn.execute(attach)
                return conn
            except duckdb.Error as err:
                # two processes creating a new lake's catalog tables at once: one fails, and
                # finds them made when it tries again
                if "Failed to initialize DuckLake" not in str(err) or attempt + 1 == ATTACH_TRIES:
                    raise
                time.sleep(0.2 * (attempt + 1))
        raise AssertionError("unreachable")


_ROOTS: dict[tuple[Lake, int], duckdb.DuckDBPyConnection] = {}
_LOCK = threading.Lock()


def load_extension(conn: duckdb.DuckDBPyConnection, name: str) -> None:
    """LOAD a DuckDB extension from its PyPI package (`duckdb-extension-<name>`, built for this
    duckdb): DuckDB's extension server is not needed."""
    package = f"duckdb_extension_{name}"
    try:
        module = __import__(package)
    except ImportError:
        raise RuntimeError(
            f"CLUSTERING_DUCKLAKE needs the {name} extension: pip install -e '.[lake]' "
            f"(duckdb-extension-{name.replace('_', '-')}=={duckdb.__version__})"
        ) from None
    folder = Path(module.__file__).parent / "extensions"
    path = folder / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"
    if not path.is_file():
        built = sorted(p.name for p in folder.glob("v*")) or ["none"]
        raise RuntimeError(
            f"{package} has no build for duckdb {duckdb.__version__} (it has {', '.join(built)}): "
            "install the same version of duckdb and of the extension packages"
        )
    conn.execute(f"LOAD {_literal(str(path))}")


def _s3_secret(conn: duckdb.DuckDBPyConnection) -> None:
    """Object storage credentials from the usual AWS variables, when given (otherwise DuckDB's
    own defaults apply)."""
    env = os.environ
    fields = {
        "KEY_ID": env.get("AWS_ACCESS_KEY_ID"),
        "SECRET": env.get("AWS_SECRET_ACCESS_KEY"),
        "SESSION_TOKEN": env.get("AWS_SESSION_TOKEN"),
        "REGION": env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION"),
        "ENDPOINT": env.get("AWS_ENDPOINT_URL", "").split("://")[-1] or None,
    }
    given = {k: v for k, v in fields.items() if v}
    if not given.get("KEY_ID"):
        return
    if env.get("AWS_ENDPOINT_URL", "").startswith("http://"):
        given["USE_SSL"] = "false"
    options = ", ".join(
        f"{k} {v}" if k == "USE_SSL" else f"{k} {_literal(v)}" for k, v in given.items()
    )
    conn.execute(f"CREATE OR REPLACE SECRET clustering_lake_s3 (TYPE s3, {options})")


def is_lake(conn) -> bool:
    """Whether `conn` reads and writes the lake (else a DuckDB file)."""
    return conn.execute("SELECT current_database()").fetchone()[0] == NAME


def claim(conn) -> None:
    """In the lake, make the current transaction conflict with every other that claims.

    DuckLake lets two transactions that only insert into one table both commit; a writer whose
    inserts depend on what it read (the vector store's anti-join, the next edit id) claims the
    layout row, so of two such writers at once the later COMMIT fails and `in_transaction` runs it
    again, now seeing the other's rows. A no-op on a DuckDB file (one writer at a time)."""
    if is_lake(conn):
        conn.execute("UPDATE clustering.layout SET version = version")


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
