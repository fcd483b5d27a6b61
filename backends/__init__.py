"""Backend adapters: one module per runtime, registered by name (see :mod:`edgebench.backends.base`)."""

from edgebench.backends.base import Artifact, Availability, Backend, Session, get, names, register

__all__ = ["Artifact", "Availability", "Backend", "Session", "get", "names", "register"]
