"""This edgebench's version (the installed distribution's, or ``0+unknown`` in a bare source tree)."""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("edgebench")
except _metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
