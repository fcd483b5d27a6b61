"""User-facing errors: one line that names the file, the key and the fix."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any


class EdgebenchError(Exception):
    """An error whose message is meant for the user as it is (no traceback)."""


class ConfigError(EdgebenchError):
    pass


def _key_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def from_validation_error(source: str | Path, exc: Any, known_keys: dict[str, list[str]] | None = None) -> ConfigError:
    """Turn a pydantic ValidationError into one ConfigError line per problem (first ones shown)."""
    lines = []
    # An unknown key usually explains a "missing" one (a typo), so it is said first.
    errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
    for err in errors[:5]:
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        key = _key_path(loc)
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            parent = _key_path(tuple(p for p in loc[:-1] if not isinstance(p, int))) if len(loc) > 1 else ""
            options = (known_keys or {}).get(parent, [])
            close = difflib.get_close_matches(str(loc[-1]), options, n=1)
            fix = f"did you mean '{close[0]}'?" if close else (f"allowed keys: {', '.join(options)}" if options else "remove it")
            msg = f"unknown key; {fix}"
        elif err["type"] == "missing":
            msg = "required key is missing; add it"
        lines.append(f"{source}: {key}: {msg}")
    return ConfigError("\n".join(lines))


def load_yaml(path: Path) -> Any:
    """Parse a YAML file; syntax errors become a ConfigError with the line and column."""
    import yaml

    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found; check the path") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}{where}: invalid YAML ({problem}); fix the syntax at that position") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level, got {type(data).__name__}; see the built-in examples")
    return data
