"""What the host sends the worker for one cell: the cell spec (JSON), read on the target.

Every path in a spec is local to the machine the worker runs on (the board's transport rewrites
the host's paths). The worker needs nothing but this, numpy, psutil and the cell's runtime.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from edgebench.bench.contracts.results import MeasureSettings


@dataclass
class CellSpec:
    """One cell to measure: the artifact, its backend and precision, the evaluation data, settings.

    ``build_cache`` is the target's folder for device-built artifacts (``Backend.device_build``);
    ``input_shape`` the per-item shape timed (C, H, W) when the artifact's own is dynamic.
    """

    cell_key: str
    backend: str
    precision: str
    artifact: str
    batch: int
    eval_data: str
    options: dict[str, Any] = field(default_factory=dict)
    measure: MeasureSettings = field(default_factory=MeasureSettings)
    monitor: dict[str, Any] | None = None  # targets.monitor.MonitorSettings as data; None: no device monitor
    build_cache: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> CellSpec:
        data = json.loads(text)
        data["measure"] = MeasureSettings(**data.get("measure", {}))
        return cls(**data)
