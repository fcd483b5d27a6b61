"""The sample blob format (bench/contracts/samples.py): exact round trips on every edge, a compact size on
real samples, and one clear ValueError for anything that is not a blob it wrote."""

from __future__ import annotations

import sqlite3
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from edgebench.bench.contracts.samples import CODEC, decode_ns, encode_ns

REV4_STORE = Path(__file__).parent / "data" / "store-rev0004.sqlite"
I64_MIN, I64_MAX = -(2**63), 2**63 - 1
US20, S30 = 20_000, 30_000_000_000  # a 20 us and a 30 s sample, in ns


def roundtrip(values) -> np.ndarray:
    out = decode_ns(encode_ns(values))
    assert out.dtype == np.int64 and out.ndim == 1
    return out


@pytest.mark.parametrize("values", [
    [], [0], [1], [US20], [S30], [US20, S30, US20, US20 + 1, S30 - 1],
    [I64_MAX], [I64_MIN], [I64_MIN, I64_MAX, 0, -1, I64_MAX, I64_MIN],  # wrapping differences both ways
    [-5, -1, 0, 3, -(10**12)],  # negatives are supported, not refused
    [7] * 1000,  # a constant run
    list(range(300, 0, -1)),  # decreasing
], ids=lambda v: f"{len(v)}:{v[:3]}")
def test_exact_round_trip(values):
    assert roundtrip(values).tolist() == list(values)


def test_a_million_samples_round_trip_and_order_is_kept():
    rng = np.random.default_rng(19)
    values = (US20 + rng.gamma(2.0, 800.0, 1_000_000)).astype(np.int64)
    values[::50_000] = S30  # rare huge outliers widen every sample to 5 bytes: zlib takes the zero planes
    blob = encode_ns(values)
    assert np.array_equal(roundtrip(values), values)
    assert len(blob) < 2.5 * values.size  # well under the goal of 4 bytes a sample


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint32, np.uint64])
def test_numpy_integer_dtypes(dtype):
    info = np.iinfo(dtype)
    top = min(int(info.max), I64_MAX)
    values = np.array([info.min, 0, top, top // 3], dtype=dtype)
    assert roundtrip(values).tolist() == [int(v) for v in values]


def test_python_ints_beyond_int64_and_non_integers_are_refused():
    for bad, why in [([2**63], "larger than int64"), ([2**64], "outside int64"), ([I64_MIN - 1], "outside int64"),
                     ([1.5], "integer nanoseconds"), ([True, False], "integer nanoseconds"), (np.array([1.0]), "integer nanoseconds"),
                     (np.zeros((2, 2), dtype=np.int64), "one-dimensional")]:
        with pytest.raises(ValueError, match=why):
            encode_ns(bad)


def test_real_samples_take_about_two_bytes_each():
    with sqlite3.connect(REV4_STORE) as c:
        rows = c.execute("SELECT cell_id, latency_ns FROM samples ORDER BY cell_id, idx").fetchall()
    by_cell: dict[int, list[int]] = {}
    for cid, v in rows:
        by_cell.setdefault(cid, []).append(v)
    size = sum(len(encode_ns(v)) for v in by_cell.values())
    for v in by_cell.values():
        assert roundtrip(v).tolist() == v
    assert size / len(rows) < 2.5, f"{size / len(rows):.2f} bytes per sample"


def test_codec_names_format_and_version():
    assert CODEC.endswith("/1") and len(CODEC) <= 40  # cell_samples.codec is String(40)
    assert encode_ns([1, 2, 3])[:4] == b"EBS\x01"


def _header(version=1, width=1, count=3, reference=0) -> bytes:
    return struct.pack("<3sBBQq", b"EBS", version, width, count, reference)


@pytest.mark.parametrize("blob, message", [
    (b"", "shorter than its 21-byte header"),
    (b"EBS\x01", "shorter than its 21-byte header"),
    (b"PK\x03" + bytes(18), "not an edgebench sample blob"),
    (_header(version=2) + zlib.compress(b"abc"), "format version 2 is not known"),
    (_header(width=9) + zlib.compress(b"abc"), "byte width 9 is outside 1..8"),
    (_header(width=0, count=0) + b"x", "says 0 samples but carries data"),
    (_header() + b"not zlib at all", "payload is corrupt"),
    (_header() + zlib.compress(b"ab"), "truncated"),  # fewer bytes than count x width
    (_header() + zlib.compress(b"abc")[:-2], "truncated"),  # the stream cut short
    (_header() + zlib.compress(b"abcd"), "more than the header's 3 bytes"),
    (_header() + zlib.compress(b"abc") + b"tail", "more than the header's 3 bytes"),
    (_header(count=2**40) + zlib.compress(b"abc"), "truncated"),  # a huge count is not allocated up front
])
def test_malformed_blobs_are_a_clear_value_error(blob, message):
    with pytest.raises(ValueError, match=message):
        decode_ns(blob)


def test_a_memoryview_is_read_like_bytes():
    blob = encode_ns([US20, S30])
    assert decode_ns(memoryview(blob)).tolist() == [US20, S30]


def test_a_result_file_carries_the_samples_compactly_and_reads_both_forms():
    import json

    from edgebench.bench.contracts.results import CellResult
    from edgebench.bench.contracts.samples import samples_from_data, samples_to_data

    with sqlite3.connect(REV4_STORE) as c:
        values = [v for (v,) in c.execute("SELECT latency_ns FROM samples WHERE cell_id = 3 ORDER BY idx")]
    result = CellResult("ok", samples_ns=values, process_samples=[len(values)])
    text = json.dumps(result.to_dict())
    assert CellResult.from_dict(json.loads(text)) == result
    assert len(text) < len(json.dumps(values)) / 2  # the list alone is twice the whole compact document
    old = {**json.loads(text), "samples_ns": values}  # a result file written before the compact form
    assert CellResult.from_dict(old).samples_ns == values
    assert CellResult("failed", error="x").to_dict()["samples_ns"] == [] == samples_to_data([])
    assert samples_from_data(None) == []
    data = samples_to_data([US20, S30])
    for bad, message in [({**data, "codec": "zstd/9"}, "codec 'zstd/9' cannot be read"), ("AAAA", "codec 'str' cannot be read"),
                         ({**data, "base64": "@@@"}, "base64 is corrupt"), ({**data, "count": 3}, "holds 2 samples where its count says 3"),
                         ({**data, "base64": "AAAA"}, "shorter than its 21-byte header")]:
        with pytest.raises(ValueError, match=message):
            samples_from_data(bad)
