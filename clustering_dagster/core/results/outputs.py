"""Files written for people (exports, maps): never over the results or an input, always whole.

`check_output` refuses a path that holds a DuckDB file (the results or any other), the results'
write-ahead log, an input (a dataset file, a run-configuration or operations file) or anything
but a regular file; `write_atomically` writes through a temporary file and a rename, so a reader
sees the old file or the new one, and a failure (a full device, a read-only folder) leaves the
old one as it was. Failures are `InputError`s naming the path.
"""

import errno
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import polars as pl

from ..errors import InputError

DUCKDB_MAGIC = b"DUCK"  # bytes 8-11 of every DuckDB database file
# A cell starting with one of these is read as a formula by spreadsheets (OWASP, CSV injection).
FORMULA_START = r"^[=+\-@\t\r]"


def _is_duckdb_file(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(12)[8:12] == DUCKDB_MAGIC
    except OSError:
        return False


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and a.samefile(b)
    except OSError:
        return False


def check_output(path: Path, protected: dict[Path, str], protected_dirs: Iterable[Path] = ()):
    """Refuse to write `path` over one of `protected` (path -> what it is; with the `.wal` beside
    it), a file inside `protected_dirs`, a DuckDB file, or anything but a regular file; returns
    `path`."""
    path = Path(path)
    for guarded, what in protected.items():
        guarded = Path(guarded)
        for kept, name in (
            (guarded, what),
            (guarded.with_name(guarded.name + ".wal"), f"{what}'s write-ahead log"),
        ):
            if _same_file(path, kept) or path.resolve() == kept.resolve():
                raise InputError(f"refusing to write {path}: it is {name}")
    for folder in protected_dirs:
        if Path(folder).is_dir() and Path(folder).resolve() in path.resolve().parents:
            raise InputError(f"refusing to write {path}: it is inside the datasets folder {folder}")
    if path.is_dir():
        raise InputError(f"cannot write {path}: it is a folder")
    if path.exists() and not path.is_file():
        raise InputError(f"refusing to write {path}: it is not a regular file")
    if _is_duckdb_file(path):
        raise InputError(f"refusing to write {path}: it is a DuckDB database")
    return path


def _reason(err: OSError) -> str:
    if err.errno == errno.ENOSPC:
        return "no space left on the device"
    return err.strerror or str(err)


def write_atomically(path: Path, write: Callable[[Path], None] | str, create_parent=False) -> Path:
    """Write `path` through a temporary file beside it and a rename. `write` is the text, or a
    function that writes a given path. The folder must exist unless `create_parent`."""
    path = Path(path)
    if create_parent:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise InputError(f"cannot create folder {path.parent}: {_reason(err)}") from None
    elif not path.parent.is_dir():
        raise InputError(f"cannot write {path}: folder {path.parent} does not exist")
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as err:
        raise InputError(f"cannot write {path}: {_reason(err)}") from None
    try:
        if isinstance(write, str):
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                out.write(write)
        else:
            os.close(handle)
            write(Path(temporary))
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except OSError as err:
        raise InputError(f"cannot write {path}: {_reason(err)}") from None
    finally:
        Path(temporary).unlink(missing_ok=True)
    return path


def neutralise_formulas(table: pl.DataFrame) -> pl.DataFrame:
    """Text cells that a spreadsheet would run as a formula, prefixed with `'` (OWASP)."""
    risky = pl.col(pl.String).str.contains(FORMULA_START)
    return table.with_columns(
        pl.when(risky).then("'" + pl.col(pl.String)).otherwise(pl.col(pl.String)).name.keep()
    )
