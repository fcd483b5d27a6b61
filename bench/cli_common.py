"""What every ``edgebench`` command module shares: the consoles, ``--home``/``--store`` and the paths
they give. Its own module so the command modules (cli.py, cli_regress.py, cli_reports.py,
cli_targets.py) import it at the top without importing each other.

The CLI modules import the packages they drive (runner, store, reports, backends, models, targets)
inside the commands, not at the top: SQLAlchemy, pydantic, numpy and the registries cost about a
second, which ``edgebench --help`` and every mistyped command would otherwise pay."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.console import Console

if TYPE_CHECKING:
    from edgebench.bench.runner import Paths
    from edgebench.bench.store import Store

console = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

HomeOpt = typer.Option(None, "--home", envvar="EDGEBENCH_HOME", help="Folder for the store, the build cache and reports [default: ./edgebench-results].")
StoreOpt = typer.Option(None, "--store", envvar="EDGEBENCH_STORE", help="Store path or SQLAlchemy URL [default: HOME/edgebench.sqlite].")
TargetsFileOpt = typer.Option(None, "--targets", envvar="EDGEBENCH_TARGETS", help="YAML file of your target profiles [default: ~/.config/edgebench/targets.yaml].")


def paths(home: Optional[Path], store: Optional[str]) -> Paths:
    """The folders and store location of ``--home`` / ``--store`` (default home: ./edgebench-results)."""
    from edgebench.bench.runner import Paths

    return Paths(home=(home or Path("edgebench-results")).resolve(), store=store)


def open_store(home: Optional[Path], store: Optional[str]) -> Store:
    """The store ``--home`` / ``--store`` name."""
    from edgebench.bench.store import Store

    return Store(paths(home, store).store_location)


def echo(text: str) -> None:
    """One line of plain output (no rich markup: names may contain brackets)."""
    console.print(text, markup=False)
