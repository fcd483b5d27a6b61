"""A content-addressed cache: same inputs, same key, built once.

An entry is a directory ``ROOT/KIND/KEY/`` holding the built files and ``manifest.json`` (the key's
payload and what the build reported). Builds happen in a temporary directory that is renamed into
place, so an interrupted build never leaves an entry that looks finished.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def content_key(payload: dict[str, Any]) -> str:
    """sha256 of the payload's canonical JSON, shortened to 20 hex digits."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


@dataclass
class Entry:
    kind: str
    key: str
    dir: Path
    manifest: dict[str, Any]
    hit: bool


class Cache:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def lookup(self, kind: str, payload: dict[str, Any]) -> Entry | None:
        key = content_key(payload)
        path = self.root / kind / key
        manifest = path / "manifest.json"
        if manifest.exists():
            return Entry(kind, key, path, json.loads(manifest.read_text()), hit=True)
        return None

    def get_or_build(self, kind: str, payload: dict[str, Any], build: Callable[[Path], dict[str, Any]]) -> Entry:
        """The cached entry for ``payload``, or a new one made by ``build(directory) -> facts``."""
        found = self.lookup(kind, payload)
        if found is not None:
            return found
        key = content_key(payload)
        final = self.root / kind / key
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=final.parent))
        try:
            facts = build(tmp)
            manifest = {"kind": kind, "key": key, "payload": payload, "facts": facts}
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
            try:
                os.replace(tmp, final)
            except OSError:  # another process finished the same entry first; theirs is as good
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return Entry(kind, key, final, json.loads((final / "manifest.json").read_text()), hit=False)
