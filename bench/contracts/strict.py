"""The base of every pydantic model at the config boundary (suites, recipes, target profiles).

Unknown keys are errors, so a typo in a YAML file is one line naming it rather than a silently
ignored setting. Only host-side config code imports this (the worker needs no pydantic).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """A config model that rejects unknown fields."""

    model_config = ConfigDict(extra="forbid")
