"""User-facing errors: one line that names the file, the key and the fix."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any


def one_line(text: object, limit: int = 500) -> str:
    """``text`` with all whitespace runs (newlines too) collapsed, cut to ``limit`` characters."""
    return " ".join(str(text).split())[:limit]


def tail_text(text: str, lines: int = 3) -> str:
    """The last non-empty lines of a process's stderr, joined on one line."""
    kept = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " | ".join(kept[-lines:])[:400]


class EdgebenchError(Exception):
    """An error whose message is meant for the user as it is (no traceback)."""


class ConfigError(EdgebenchError):
    pass


def _key_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


_SCALARS = {"str", "int", "float", "bool"}


def _is_union_tag(loc: tuple[Any, ...], i: int) -> bool:
    # pydantic names the union branch after a list index: ("models", 0, "UserModel", "weights").
    part = loc[i]
    return isinstance(part, str) and i > 0 and isinstance(loc[i - 1], int) and (part in _SCALARS or part[:1].isupper())


def _without_union_noise(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Plain locations, and no "should be a valid string" where the user wrote a mapping on purpose."""
    cleaned = []
    for e in errors:
        loc = tuple(e["loc"])
        tags = [loc[i] for i in range(len(loc)) if _is_union_tag(loc, i)]
        plain = tuple(p for i, p in enumerate(loc) if not _is_union_tag(loc, i) and not (isinstance(p, str) and p.startswith("function-")))
        cleaned.append(({**e, "loc": plain}, tags[-1] if tags else None))
    mapped = {e["loc"] for e, tag in cleaned if tag and tag not in _SCALARS}
    out = []
    for e, tag in cleaned:
        item = e["loc"]
        if tag in _SCALARS and any(m[: len(item)] == item for m in mapped):
            continue
        out.append(e)
    return out


def from_validation_error(source: str | Path, exc: Any, known_keys: dict[str, list[str]] | None = None) -> ConfigError:
    """Turn a pydantic ValidationError into one ConfigError line per problem (first ones shown)."""
    lines = []
    # An unknown key usually explains a "missing" one (a typo), so it is said first.
    errors = sorted(_without_union_noise(exc.errors()), key=lambda e: e["type"] != "extra_forbidden")
    for err in errors[:5]:
        loc = err["loc"]
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
