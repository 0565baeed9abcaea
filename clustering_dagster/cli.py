"""`clustering-dagster`: register datasets as Dagster partitions, cluster one (`run`), and read the
results (datasets, runs, tree, show, texts, search, export, map, changes), correct them
(curate) and browse them (explore). `clustering-dagster
COMMAND --help` for each."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click
import duckdb

from .commands.changes import changes_command
from .commands.curate import curate
from .commands.explore import COMMANDS
from .commands.explorer import explore
from .commands.output import visible
from .core.config import settings
from .core.config.run_config import load_run_configs
from .core.data_in.datasets import scan_datasets
from .core.errors import InputError
from .core.storage.store import DatabaseBusy, MissingResult

if TYPE_CHECKING:
    from dagster import DagsterInstance


def register(instance: DagsterInstance, datasets_dir) -> tuple[list[str], list[str], list[str]]:
    """Add a `dataset` partition for every valid dataset under `datasets_dir`; returns (added,
    known, problems): a bad entry is reported and never stops the others."""
    from .partitions import DATASET_DIMENSION

    found, problems = scan_datasets(datasets_dir)
    keys = sorted(found)
    known = set(instance.get_dynamic_partitions(DATASET_DIMENSION))
    added = [key for key in keys if key not in known]
    if added:
        instance.add_dynamic_partitions(DATASET_DIMENSION, added)
    return added, keys, list(problems.values())


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--db",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help=(
        "The results DuckDB file (default: CLUSTERING_DUCKDB_PATH or data/clustering_dagster.duckdb); "
        "unused when CLUSTERING_DUCKLAKE names a lake."
    ),
)
@click.pass_context
def cli(ctx: click.Context, db: Path | None) -> None:
    """Cluster short texts with Dagster; read the results from the terminal."""
    ctx.obj = db or settings.duckdb_path()


@cli.command(name="register")
def register_command() -> None:
    """Add a partition for every dataset in the datasets folder."""
    from dagster import DagsterInstance

    with DagsterInstance.get() as instance:
        added, keys, problems = register(instance, settings.datasets_dir())
    for problem in problems:
        click.echo(f"skipped: {problem}", err=True)
    click.echo(
        f"datasets: {', '.join(keys) or 'none'}; newly registered: {', '.join(added) or 'none'}"
    )


@cli.command(name="run")
@click.argument("dataset")
@click.option(
    "--run-config", "-r", default="default", show_default=True, help="The run configuration."
)
def run_command(dataset: str, run_config: str) -> int:
    """Cluster DATASET: register the datasets, then run the `cluster_texts` job for the partition
    DATASET|RUN_CONFIG, as `dagster job execute` does (in this process's child, recorded in
    DAGSTER_HOME, default ./dagster_home, so the UI lists it); exits with the run's status."""
    found, problems = scan_datasets(settings.datasets_dir())
    if dataset not in found:
        problem = problems.get(dataset)
        raise InputError(
            problem
            or f"no dataset {dataset!r} in {settings.datasets_dir()} "
            f"(datasets: {', '.join(sorted(found)) or 'none'})"
        )
    configs = load_run_configs(settings.run_configs_path())
    if run_config not in configs.partition_names():
        raise InputError(
            f"no run configuration {run_config!r} in {settings.run_configs_path()} "
            f"(run configurations: {', '.join(configs.partition_names())})"
        )
    configs[run_config]  # an invalid entry ends here, in its one line
    os.environ.setdefault("DAGSTER_HOME", str(settings.dagster_home()))
    register_command.callback()
    key = f"{dataset}|{run_config}"
    tags = {
        "dagster/partition": key,
        "dagster/partition/dataset": dataset,
        "dagster/partition/run_config": run_config,
    }
    command = [
        sys.executable, "-m", "dagster", "job", "execute", "-m", "clustering_dagster.definitions",
        "-j", "cluster_texts", "--tags", json.dumps(tags),
    ]  # fmt: skip
    click.echo(f"running cluster_texts for {key} (DAGSTER_HOME={os.environ['DAGSTER_HOME']})")
    return subprocess.run(command).returncode


@cli.command(name="list")
def list_command() -> None:
    """Show the datasets on disk and the run configurations."""
    for key, spec in scan_datasets(settings.datasets_dir())[0].items():
        click.echo(f"dataset     {key:30s} {spec.path}")
    for name in load_run_configs(settings.run_configs_path()):
        click.echo(f"run_config  {name}")


for command in [*COMMANDS, changes_command, curate, explore]:
    cli.add_command(command)


def _one_line(message: str) -> str:
    return visible(" ".join(message.split()))


def _failure(err: BaseException) -> str:
    """One line for an error from the environment (a file, a device, the database, a socket)."""
    if isinstance(err, OSError) and err.strerror:
        where = f": {err.filename}" if err.filename else ""
        return f"{err.strerror}{where}"
    return f"{type(err).__name__}: {err}"


def main(argv: list[str] | None = None) -> int:
    """Run a command; a user mistake ends in one line on stderr and a non-zero exit code."""
    try:
        result = cli.main(argv, prog_name="clustering-dagster", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as err:
        click.echo(err.ctx.get_help())
        return 0
    except click.UsageError as err:
        where = err.ctx.command_path if err.ctx else "clustering-dagster"
        click.echo(f"error: {_one_line(err.format_message())} (see {where} --help)", err=True)
        return 2
    except (InputError, MissingResult, DatabaseBusy) as err:
        click.echo(f"error: {_one_line(str(err))}", err=True)
        return 1
    except click.Abort:
        return 130
    except BrokenPipeError:
        sys.stderr.close()
        return 0
    except (OSError, duckdb.Error, UnicodeError) as err:
        click.echo(f"error: {_one_line(_failure(err))}", err=True)
        return 1
    except Exception as err:
        if os.environ.get("CLUSTERING_DEBUG"):
            raise
        click.echo(
            f"error: unexpected {_one_line(_failure(err))} (CLUSTERING_DEBUG=1 shows where)",
            err=True,
        )
        return 1
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
