"""Load a stored run's suite and targets again, so ``edgebench run --resume RUN_ID`` finishes it as started."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgebench.bench.config import LoadedSuite, load_suite
from edgebench.bench.contracts.errors import ConfigError
from edgebench.bench.store import Store
from edgebench.targets.profiles import TargetProfile


def load_for_resume(paths: Any, run_id: str, targets_file: Path | None = None) -> LoadedSuite:
    """The run's suite (its file if unchanged, else the text stored with the run) with the run's targets.

    Target profiles are the ones stored with the run, so a resumed cell goes to the same board with
    the same settings even if the profile file changed since.
    """
    store = Store(paths.store_location)
    run = store.run(run_id)
    source = Path(run.suite_source)
    if not (source.exists() and source.read_text() == run.suite_yaml):
        copy = paths.home / "runs" / run.id / "suite.yaml"
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_text(run.suite_yaml)
        source = copy
    stored = (run.summary or {}).get("targets") or {}
    names = list(stored) or None
    for name, data in stored.items():
        try:
            TargetProfile.model_validate(data)
        except ValueError as exc:
            raise ConfigError(f"run {run.id}: the stored profile of target {name!r} no longer validates ({exc}); start a new run") from None
    return load_suite(source, targets=names, targets_file=targets_file, extra_profiles=list(stored.values()))
