"""edgebench harness: suite configs, the cell matrix, the worker, statistics, the store and the CLI."""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("edgebench")
except _metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
