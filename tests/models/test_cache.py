"""The content-addressed build cache (models/cache.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgebench.models.cache import Cache, content_key


def test_same_payload_same_key_regardless_of_dict_order():
    a = {"model": "small_cnn", "arch": {"factory": "f", "kwargs": {"num_classes": 10, "widths": [16, 32]}}, "seed": 0}
    b = {"seed": 0, "arch": {"kwargs": {"widths": [16, 32], "num_classes": 10}, "factory": "f"}, "model": "small_cnn"}
    assert content_key(a) == content_key(b)
    assert len(content_key(a)) == 20 and int(content_key(a), 16) >= 0


@pytest.mark.parametrize("change", [
    {"seed": 1},
    {"model": "other"},
    {"arch": {"factory": "f", "kwargs": {"num_classes": 10, "widths": [16, 33]}}},
    {"arch": {"factory": "f", "kwargs": {"num_classes": 10, "widths": [32, 16]}}},  # list order matters
    {"extra": None},
])
def test_different_payload_different_key(change):
    base = {"model": "small_cnn", "arch": {"factory": "f", "kwargs": {"num_classes": 10, "widths": [16, 32]}}, "seed": 0}
    assert content_key(base) != content_key({**base, **change})


def test_get_or_build_builds_once_then_hits(tmp_path):
    cache = Cache(tmp_path / "c")
    calls = []

    def build(out: Path) -> dict:
        calls.append(out)
        (out / "weights.bin").write_bytes(b"\x00\x01")
        return {"size": 2}

    payload = {"model": "m", "seed": 0}
    first = cache.get_or_build("dense", payload, build)
    assert first.hit is False
    assert len(calls) == 1
    assert first.dir == tmp_path / "c" / "dense" / content_key(payload)
    assert (first.dir / "weights.bin").read_bytes() == b"\x00\x01"
    manifest = json.loads((first.dir / "manifest.json").read_text())
    assert manifest["payload"] == payload and manifest["facts"] == {"size": 2} and manifest["key"] == first.key

    second = cache.get_or_build("dense", {"seed": 0, "model": "m"}, build)
    assert second.hit is True
    assert len(calls) == 1
    assert second.dir == first.dir and second.manifest == first.manifest
    # a fresh Cache object on the same folder finds it too
    assert Cache(tmp_path / "c").lookup("dense", payload).hit is True
    # the same payload under another kind is another entry
    third = cache.get_or_build("pruned", payload, build)
    assert third.hit is False and len(calls) == 2


def test_failed_build_leaves_no_entry_and_no_temp_dir(tmp_path):
    cache = Cache(tmp_path / "c")

    def build(out: Path) -> dict:
        (out / "half-written.bin").write_bytes(b"x" * 100)
        raise RuntimeError("exporter exploded")

    payload = {"model": "m"}
    with pytest.raises(RuntimeError, match="exporter exploded"):
        cache.get_or_build("artifacts", payload, build)
    assert cache.lookup("artifacts", payload) is None
    kind_dir = tmp_path / "c" / "artifacts"
    assert list(kind_dir.iterdir()) == []  # no entry, no .KEY-* temp dir

    # the next attempt builds from scratch
    entry = cache.get_or_build("artifacts", payload, lambda out: {"ok": True})
    assert entry.hit is False and entry.manifest["facts"] == {"ok": True}
    assert [p.name for p in kind_dir.iterdir()] == [entry.key]


def test_interrupted_build_leaves_nothing(tmp_path):
    cache = Cache(tmp_path / "c")

    def build(out: Path) -> dict:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache.get_or_build("dense", {"a": 1}, build)
    assert list((tmp_path / "c" / "dense").iterdir()) == []
