"""Which edgebench a machine runs: the version and a digest of the package's source.

Host and device compare both before a remote run: the same version number built from different
source (a developer's checkout) would otherwise measure different code without saying so.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgebench.bench.contracts.version import __version__

if TYPE_CHECKING:  # the worker imports this module on the device, where there is no pydantic
    from edgebench.targets.profiles import TargetProfile

SUBPACKAGES = ("bench", "backends", "models", "targets", "reports")


@functools.lru_cache(maxsize=1)
def source_digest() -> str:
    """sha256 (first 12 hex digits) over every .py file of edgebench's subpackages, by relative path."""
    h = hashlib.sha256()
    for sub in SUBPACKAGES:
        # find_spec locates the folder without importing it (edgebench.models would want torch)
        spec = importlib.util.find_spec(f"edgebench.{sub}")
        if spec is None or not spec.submodule_search_locations:
            continue
        root = Path(next(iter(spec.submodule_search_locations)))
        for path in sorted(root.rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            h.update(f"{sub}/{path.relative_to(root).as_posix()}".encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def version_mismatch(profile: TargetProfile, device_fp: dict[str, Any]) -> str | None:
    """A one-line error when the device's edgebench (version and source digest in its fingerprint)
    differs from the host's, else None."""
    host = (__version__, source_digest())
    device = (device_fp.get("edgebench_version"), device_fp.get("edgebench_source"))
    if host == device:
        return None
    return (f"edgebench on target {profile.name} is {device[0]} (source {device[1]}), the host's is {host[0]} (source {host[1]}); "
            f"run `edgebench target setup {profile.name}` to install the host's version there")
