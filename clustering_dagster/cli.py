"""`clustering-dagster`: register the datasets found on disk as Dagster partitions."""

import argparse
import sys

from dagster import DagsterInstance

from .core import settings
from .core.datasets import scan_datasets
from .core.errors import InputError
from .core.run_config import load_run_configs
from .partitions import DATASET_DIMENSION


def register(instance: DagsterInstance, datasets_dir) -> tuple[list[str], list[str], list[str]]:
    """Add a `dataset` partition for every valid dataset under `datasets_dir`; returns (added,
    known, problems): a bad entry is reported and never stops the others."""
    found, problems = scan_datasets(datasets_dir)
    keys = sorted(found)
    known = set(instance.get_dynamic_partitions(DATASET_DIMENSION))
    added = [key for key in keys if key not in known]
    if added:
        instance.add_dynamic_partitions(DATASET_DIMENSION, added)
    return added, keys, list(problems.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="clustering-dagster", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("register", help="add a partition for every dataset in the datasets folder")
    commands.add_parser("list", help="show datasets on disk and run configurations")
    args = parser.parse_args(argv)
    try:
        if args.command == "register":
            with DagsterInstance.get() as instance:
                added, keys, problems = register(instance, settings.datasets_dir())
            for problem in problems:
                print(f"skipped: {problem}", file=sys.stderr)
            print(
                f"datasets: {', '.join(keys) or 'none'}; newly registered: {', '.join(added) or 'none'}"
            )
        else:
            for key, spec in scan_datasets(settings.datasets_dir())[0].items():
                print(f"dataset     {key:30s} {spec.path}")
            for name in load_run_configs(settings.run_configs_path()):
                print(f"run_config  {name}")
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
