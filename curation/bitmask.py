"""Tags as bitmasks over sample idx: bit i (least significant first) is the sample with idx i.

The same order as Lightly's hex bitmasks, so `int.from_bytes(mask, "little")` is Lightly's integer.
"""

from __future__ import annotations

import numpy as np


def from_indices(indices, size: int | None = None) -> bytes:
    idx = np.asarray(indices, dtype=np.int64)
    n = int(idx.max()) + 1 if idx.size else 0
    if size is not None:
        n = max(n, size)
    bits = np.zeros(n, dtype=bool)
    bits[idx] = True
    return np.packbits(bits, bitorder="little").tobytes()


def ones(n: int) -> bytes:
    """The mask of idx 0..n-1 (every sample of a dataset whose next_idx is n), without touching n bits one by one."""
    full, rest = divmod(int(n), 8)
    return b"\xff" * full + (bytes([(1 << rest) - 1]) if rest else b"")


def to_bool(mask: bytes, size: int | None = None) -> np.ndarray:
    bits = np.unpackbits(np.frombuffer(mask, dtype=np.uint8), bitorder="little").astype(bool)
    if size is not None:
        if size > bits.size:
            bits = np.concatenate([bits, np.zeros(size - bits.size, dtype=bool)])
        else:
            bits = bits[:size]
    return bits


def to_indices(mask: bytes) -> np.ndarray:
    return np.flatnonzero(to_bool(mask)).astype(np.int64)


def count(mask: bytes) -> int:
    return int(np.unpackbits(np.frombuffer(mask, dtype=np.uint8)).sum())


def _pad(a: bytes, b: bytes) -> tuple[np.ndarray, np.ndarray]:
    n = max(len(a), len(b))
    x = np.zeros(n, dtype=np.uint8)
    y = np.zeros(n, dtype=np.uint8)
    x[: len(a)] = np.frombuffer(a, dtype=np.uint8)
    y[: len(b)] = np.frombuffer(b, dtype=np.uint8)
    return x, y


def union(a: bytes, b: bytes) -> bytes:
    x, y = _pad(a, b)
    return (x | y).tobytes()


def intersection(a: bytes, b: bytes) -> bytes:
    x, y = _pad(a, b)
    return (x & y).tobytes()


def difference(a: bytes, b: bytes) -> bytes:
    x, y = _pad(a, b)
    return (x & ~y).tobytes()


def to_hex(mask: bytes) -> str:
    """Lightly's form: the integer whose bit i is idx i, as 0x-prefixed hex."""
    return hex(int.from_bytes(mask, "little"))


def from_hex(text: str) -> bytes:
    value = int(text, 16)
    if value < 0:
        raise ValueError("a bitmask is not negative")
    return value.to_bytes((value.bit_length() + 7) // 8, "little")
