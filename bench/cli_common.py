"""What every ``edgebench`` command module shares: the consoles, ``--home``/``--store`` and the paths
they give. Its own module so the command modules (cli.py, cli_regress.py, cli_reports.py,
cli_targets.py) import it at the top without importing each other.

The CLI modules import the packages they drive (runner, store, reports, backends, models, targets)
inside the commands, not at the top: SQLAlchemy, pydantic, numpy and the registries cost about a
second, which ``edgebench --help`` and every mistyped command would otherwise pay."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.console import Console

from edgebench.bench.contracts.errors import EdgebenchError

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
    """The existing store ``--home`` / ``--store`` name, for commands that read it (a mistyped ``--home``
    is an error, not a new empty store); ``edgebench run`` creates one."""
    from edgebench.bench.store import Store

    location = paths(home, store).store_location
    require_store(location)
    return Store(location)


def require_store(location: str) -> None:
    """Raise a one-line error when ``location`` names a SQLite file that does not exist (a server URL is
    the server's business)."""
    path = location[len("sqlite:///"):] if location.startswith("sqlite:///") else None if "://" in location else location
    if path and path != ":memory:" and not Path(path).is_file():
        raise EdgebenchError(f"no edgebench store at {path}; run `edgebench run` first or pass --home")


def global_options(
    ctx: typer.Context,
    home: Optional[Path] = typer.Option(None, "--home", help="Folder for the store, the build cache and reports, for every command (also after the command)."),
    store: Optional[str] = typer.Option(None, "--store", help="Store path or SQLAlchemy URL, for every command (also after the command)."),
) -> None:
    """``edgebench --home D COMMAND``: the same as ``edgebench COMMAND --home D``.

    The app's callback runs before click parses the subcommand, and every subcommand's ``--home`` /
    ``--store`` falls back on EDGEBENCH_HOME / EDGEBENCH_STORE, so setting those here reaches every
    command (the worker children inherit the same value); an option after the command still wins.
    The previous values come back when the command ends, so a program (or a test) that calls the CLI
    in its own process is not left pointing at that home."""
    for name, value in (("EDGEBENCH_HOME", None if home is None else str(home)), ("EDGEBENCH_STORE", store)):
        if value is not None:
            ctx.call_on_close(functools.partial(_restore_env, name, os.environ.get(name)))
            os.environ[name] = value


def _restore_env(name: str, old: str | None) -> None:
    if old is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = old


def echo(text: str) -> None:
    """One line of plain output (no rich markup: names may contain brackets)."""
    console.print(text, markup=False)
