"""Mapping positions: bit i of a Lightly bitmask is the i-th sample of `GET .../mappings` (idx order).

Winnow's idx values are dense (0..N-1, samples are never deleted), so a position is an idx and the
masks are Winnow's own. Should a dataset ever have gaps, positions are translated through the
sorted idx list, so the client's bitmasks and mapping lists stay consistent either way.
"""

from __future__ import annotations

import numpy as np

from curation import bitmask
from curation.models import Dataset, Sample


class Positions:
    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        self.size = Sample.objects.filter(dataset=dataset).count()
        self.dense = self.size == dataset.next_idx
        self._idx = None

    @property
    def idx(self) -> np.ndarray:
        """The dataset's idx values ascending: position -> idx."""
        if self._idx is None:
            if self.dense:
                self._idx = np.arange(self.size, dtype=np.int64)
            else:
                values = Sample.objects.filter(dataset=self.dataset).order_by("idx").values_list("idx", flat=True)
                self._idx = np.fromiter(values.iterator(chunk_size=20_000), dtype=np.int64)
        return self._idx

    def to_hex(self, mask: bytes) -> str:
        """Winnow's idx mask as Lightly's `bitMaskData` over positions."""
        if not self.dense:
            bits = bitmask.to_bool(mask, int(self.idx[-1]) + 1 if self.size else 0)[self.idx]
            mask = np.packbits(bits, bitorder="little").tobytes()
        return bitmask.to_hex(mask)

    def from_hex(self, text: str) -> bytes:
        """Lightly's `bitMaskData` as Winnow's idx mask; ValueError for bits past the last sample."""
        mask = bitmask.from_hex(text)
        positions = bitmask.to_indices(mask)
        if positions.size and positions[-1] >= self.size:
            raise ValueError(
                f"sets bit {int(positions[-1])}, but the dataset has {self.size} samples (bits 0 to {self.size - 1})"
            )
        return mask if self.dense else bitmask.from_indices(self.idx[positions])

    def page_filter(self, offset: int, size: int | None) -> dict:
        """Queryset filter kwargs for the samples at positions offset..offset+size (idx order)."""
        if self.dense:
            bounds = {"idx__gte": offset}
            if size is not None:
                bounds["idx__lt"] = offset + size
            return bounds
        chosen = self.idx[offset:] if size is None else self.idx[offset : offset + size]
        if not chosen.size:
            return {"idx__in": []}
        return {"idx__gte": int(chosen[0]), "idx__lte": int(chosen[-1])}
