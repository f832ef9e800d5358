"""A least-recently-used cache bounded in megabytes, for decoded training images."""

from __future__ import annotations

from collections import OrderedDict

import torch

__all__ = ["LRUCache"]


def _nbytes(value) -> int:
    if torch.is_tensor(value):
        return value.numel() * value.element_size()
    if isinstance(value, (tuple, list)):
        return sum(_nbytes(v) for v in value)
    return 0


class LRUCache:
    """Keeps the most recently used entries whose tensors fit in ``max_mb`` megabytes (0: keeps nothing).

    Each DataLoader worker holds its own copy, so a loader's memory is at most
    ``(num_workers or 1) * max_mb`` whatever the dataset's size.
    """

    def __init__(self, max_mb: float):
        if max_mb < 0:
            raise ValueError(f"cache size must be >= 0 MB, got {max_mb}")
        self.max_bytes = int(max_mb * 2**20)
        self.bytes = 0
        self._items: OrderedDict = OrderedDict()

    def __contains__(self, key) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, key):
        self._items.move_to_end(key)
        return self._items[key]

    def __setitem__(self, key, value) -> None:
        size = _nbytes(value)
        if key in self._items:
            self.bytes -= _nbytes(self._items.pop(key))
        if size > self.max_bytes:  # larger than the whole cache: not kept
            return
        while self.bytes + size > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self.bytes -= _nbytes(old)
        self._items[key] = value
        self.bytes += size
