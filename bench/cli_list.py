"""``edgebench list ...``: every plugin family, read from its registry, plus the built-in suites and the
known targets. A plugin added to a family shows up here without this module changing."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Optional

import typer

from edgebench.bench.cli_common import TargetsFileOpt, echo
from edgebench.bench.cli_targets import print_targets

list_app = typer.Typer(no_args_is_help=True, help="List backends, models, recipes, methods, datasets, samplers, transports, suites or targets.")


def describe(obj: Any) -> str:
    """One line about a plugin: its ``description`` attribute, else its docstring's first paragraph
    (a first sentence often wraps onto a second line)."""
    text = getattr(obj, "description", None)
    if not isinstance(text, str) or not text.strip():
        text = inspect.getdoc(obj) or ""
    return " ".join(text.strip().split("\n\n")[0].split())


def _print_registry(registry: Any) -> None:
    for name, obj in registry.items():
        echo(f"{name}: {describe(obj)}")


@list_app.command("backends")
def list_backends() -> None:
    """Each backend: available here or not, and why."""
    from edgebench.backends import base

    for name in base.names():
        b = base.get(name)
        a = b.availability()
        state = f"available ({a.version})" if a.available else f"not available: {a.reason}"
        echo(f"{name}: {state}; precisions: {', '.join(b.precisions)}")
        for option, text in b.options.items():
            echo(f"    option {option}: {text}")


@list_app.command("models")
def list_models() -> None:
    """Built-in models."""
    from edgebench.models import zoo

    for name, e in zoo.MODELS.items():
        echo(f"{name}: {e.factory} on {e.dataset} @{e.input_size}x{e.input_size}")


@list_app.command("recipes")
def list_recipes() -> None:
    """Built-in recipes."""
    from edgebench.models import recipes

    for name in recipes.builtin_names():
        echo(f"{name}: {recipes.load(name).description}")


@list_app.command("methods")
def list_methods() -> None:
    """Pruning methods a recipe's ``method:`` names."""
    from edgebench.models import recipes

    _print_registry(recipes.METHODS)


@list_app.command("datasets")
def list_datasets() -> None:
    """Built-in datasets a model's ``dataset:`` names (or give a path to an .npz or an image folder)."""
    from edgebench.models import data

    _print_registry(data.DATASETS)


@list_app.command("samplers")
def list_samplers() -> None:
    """Device samplers a target profile's ``samplers:`` names (``auto``: whatever the device has)."""
    from edgebench.targets import samplers

    _print_registry(samplers.SAMPLERS)


@list_app.command("transports")
def list_transports() -> None:
    """How the host reaches a target (a profile's ``transport:``)."""
    from edgebench.targets import transport

    _print_registry(transport.TRANSPORTS)


@list_app.command("suites")
def list_suites() -> None:
    """Built-in suites (``edgebench run NAME``)."""
    from edgebench.bench import config

    for name, description in config.builtin_suites().items():
        echo(f"{name}: {description}")


@list_app.command("targets")
def list_targets(targets_file: Optional[Path] = TargetsFileOpt) -> None:
    """Every known target profile: built-in and yours (same as ``edgebench target list``)."""
    print_targets(targets_file)


def register(app: typer.Typer) -> None:
    app.add_typer(list_app, name="list")
