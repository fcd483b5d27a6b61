"""edgebench harness: suite configs, the cell matrix, the prepare pipeline, the worker, the store and the CLI."""

from edgebench.bench.contracts.version import __version__

__all__ = ["__version__"]
