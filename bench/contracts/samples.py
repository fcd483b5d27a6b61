"""Latency samples as one compact blob: exact integer nanoseconds, about 2 bytes a sample.

The store keeps each cell's samples as one blob (``cell_samples.data``) beside :data:`CODEC`; this module
is the format. It runs on boards too (the contracts do), so it needs only numpy and the standard library.

Format ``ebs-for-shuf-zlib/1`` (all integers little-endian)::

    b"EBS" | version (1 byte, = 1) | width (1 byte, 0..8) | count (8 bytes, unsigned) | reference (8 bytes, signed)
    | zlib level 9 of: width planes of count bytes each

Each sample becomes its distance from the smallest one (the reference: "frame of reference"), an unsigned
integer cut to ``width`` bytes (the fewest that hold the largest distance) and byte-shuffled: every
sample's lowest byte, then every sample's next byte, ... A 20 us sample with a 30 s outlier in the same
cell needs 5 bytes, but the high planes are long runs of zeros zlib squeezes to almost nothing, and the
low, noisy planes stay byte-aligned. The arithmetic is modulo 2**64, so every int64 (negatives and the
extremes included) round-trips exactly; order is kept.

Why this one, measured on the 16,531 real samples of tests/bench/data/store-rev0004.sqlite (bytes per
sample; encode time per sample on the 2-core development machine):

    value - min, shuffled, zlib 9        1.91   0.11 us   <- chosen
    value - min, shuffled, lzma 9        1.78  20.5 us
    zigzag deltas, shuffled, zlib 9      1.98   0.14 us
    zigzag deltas, shuffled, lzma 9      1.86  20.6 us
    zigzag deltas, int64, zlib 9         2.53   4.75 us
    raw int64, zlib 9 / lzma 9           2.44 / 1.98

Deltas of consecutive samples would suit a drifting series, but latency samples are mostly independent
noise around a level, and the difference of two such samples is wider than either (about half a bit
more per sample): the reference is smaller here. lzma saves another 7% at 150x the time (a 20k-sample
cell would take 0.4 s to write and much longer to read back for a year's history): not worth it.
"""

from __future__ import annotations

import base64
import struct
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

CODEC = "ebs-for-shuf-zlib/1"  # stored beside each blob; a reader refuses a codec it does not know
_MAGIC = b"EBS"
_VERSION = 1
_HEADER = struct.Struct("<3sBBQq")  # magic, version, width, count, reference (the smallest sample)
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def encode_ns(values: Sequence[int] | np.ndarray) -> bytes:
    """Samples (integer nanoseconds, in measurement order) as one blob; :func:`decode_ns` gives them back exactly.

    Any int64 is accepted, negatives too; floats, booleans and integers outside int64 raise ValueError.
    """
    arr = _as_int64(values)
    if arr.size == 0:
        return _HEADER.pack(_MAGIC, _VERSION, 0, 0, 0)
    reference = arr.min()
    offsets = arr.view(np.uint64) - reference.view(np.uint64)  # modulo 2**64: exact for any int64 pair
    width = max(1, (int(offsets.max()).bit_length() + 7) // 8)
    planes = offsets.astype("<u8", copy=False).view(np.uint8).reshape(-1, 8)[:, :width].T  # shape (width, count)
    return _HEADER.pack(_MAGIC, _VERSION, width, arr.size, int(reference)) + zlib.compress(np.ascontiguousarray(planes).tobytes(), 9)


def decode_ns(blob: bytes) -> np.ndarray:
    """The int64 samples :func:`encode_ns` wrote; a blob that is not one raises ValueError saying what is wrong."""
    blob = bytes(blob)  # memoryview from some drivers (psycopg gives bytes, sqlite3 bytes; be sure)
    if len(blob) < _HEADER.size:
        raise ValueError(f"sample blob of {len(blob)} bytes is shorter than its {_HEADER.size}-byte header")
    magic, version, width, count, reference = _HEADER.unpack_from(blob)
    if magic != _MAGIC:
        raise ValueError(f"sample blob starts with {magic!r}, not {_MAGIC!r}: not an edgebench sample blob")
    if version != _VERSION:
        raise ValueError(f"sample blob format version {version} is not known to this edgebench (it reads {_VERSION}); upgrade edgebench")
    if count == 0:
        if width != 0 or reference != 0 or len(blob) != _HEADER.size:
            raise ValueError("sample blob says 0 samples but carries data")
        return np.zeros(0, dtype=np.int64)
    if not 1 <= width <= 8:
        raise ValueError(f"sample blob byte width {width} is outside 1..8")
    payload = _inflate(blob[_HEADER.size:], width * count)
    planes = np.frombuffer(payload, dtype=np.uint8).reshape(width, count)
    full = np.zeros((count, 8), dtype=np.uint8)
    full[:, :width] = planes.T
    offsets = full.view("<u8").reshape(count).astype(np.uint64, copy=False)  # no copy on little-endian hosts
    return (offsets + np.int64(reference).view(np.uint64)).view(np.int64)  # wraps back like the encoder


def samples_to_data(values: Sequence[int] | np.ndarray) -> dict[str, Any] | list[int]:
    """Samples for a JSON document (the worker's result file): ``{"codec", "count", "base64"}`` of the blob,
    about a third of the text a list of numbers takes; an empty list stays ``[]``."""
    if len(values) == 0:
        return []
    return {"codec": CODEC, "count": len(values), "base64": base64.b64encode(encode_ns(values)).decode("ascii")}


def samples_from_data(data: Any) -> list[int]:
    """:func:`samples_to_data` undone; a plain list of integers (results written before it) is read as it is."""
    if data is None:
        return []
    if isinstance(data, list):
        return [int(v) for v in data]
    if not isinstance(data, dict) or data.get("codec") != CODEC or not isinstance(data.get("base64"), str):
        codec = data.get("codec") if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"samples_ns in codec {codec!r} cannot be read by this edgebench (it reads {CODEC!r} and lists); upgrade edgebench")
    try:
        blob = base64.b64decode(data["base64"], validate=True)
    except ValueError as exc:
        raise ValueError(f"samples_ns base64 is corrupt ({exc})") from None
    values = decode_ns(blob)
    if values.size != data.get("count"):
        raise ValueError(f"samples_ns holds {values.size} samples where its count says {data.get('count')}")
    return values.tolist()


def _inflate(data: bytes, expected: int) -> bytes:
    """zlib-decompress exactly ``expected`` bytes, refusing truncated, oversized or trailing data."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, expected)  # never more than the header promises (no zip bomb)
    except zlib.error as exc:
        raise ValueError(f"sample blob payload is corrupt ({exc})") from None
    if len(out) < expected or not inflater.eof and not inflater.unconsumed_tail:
        raise ValueError(f"sample blob payload is truncated: its zlib stream stops after {len(out)} of the header's {expected} bytes, unfinished")
    if not inflater.eof or inflater.unconsumed_tail or inflater.unused_data:
        raise ValueError(f"sample blob payload carries more than the header's {expected} bytes")
    return out


def _as_int64(values: Sequence[int] | np.ndarray) -> np.ndarray:
    """``values`` as a 1-D int64 array; ValueError for anything that is not integers within int64."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"samples must be one-dimensional, got shape {arr.shape}")
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype.kind == "i":
        return arr.astype(np.int64, copy=False)
    if arr.dtype.kind == "u":
        if int(arr.max()) > _INT64_MAX:
            raise ValueError(f"sample {int(arr.max())} is larger than int64 allows")
        return arr.astype(np.int64)
    if arr.dtype.kind == "O" and all(isinstance(v, int) and not isinstance(v, bool) for v in arr.tolist()):
        out_of_range = [v for v in arr.tolist() if not _INT64_MIN <= v <= _INT64_MAX]
        if out_of_range:
            raise ValueError(f"sample {out_of_range[0]} is outside int64")
        return arr.astype(np.int64)
    raise ValueError(f"samples must be integer nanoseconds, got {arr.dtype} values")
