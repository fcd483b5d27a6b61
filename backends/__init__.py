"""Backend adapters: one module per runtime, registered by name (see :mod:`edgebench.backends.base`)."""

from edgebench.backends.base import BACKENDS, Artifact, Availability, Backend, DeviceBuild, Session, get, names, register

__all__ = ["BACKENDS", "Artifact", "Availability", "Backend", "DeviceBuild", "Session", "get", "names", "register"]
