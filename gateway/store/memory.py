"""In-process store: the embedded default for a single gateway node, and for tests."""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from gateway.store.base import FieldValue, Record, Store, Value, checked_value


@dataclass
class _Entry:
    value: Value
    expires_at: float | None
    seq: int


class MemoryStore(Store):
    """Dict-of-dicts with a lazily cleaned expiry heap.

    A refresh pushes a new heap entry and leaves the old one to be skipped when it
    surfaces; the heap is rebuilt when such dead entries outnumber the live records,
    so frequent refreshes of the same records do not grow memory.
    """

    def __init__(self) -> None:
        self._data: dict[str, dict[str, _Entry]] = {}
        self._heap: list[tuple[float, int, str, str]] = []
        self._seq = 0
        self._size = 0

    def put(
        self,
        namespace: str,
        key: str,
        value: Mapping[str, FieldValue],
        ttl: float | None,
        now: float,
    ) -> None:
        if ttl is not None and ttl <= 0:
            raise ValueError("ttl must be positive (delete the record instead)")
        stored = checked_value(value)
        self._seq += 1
        expires_at = None if ttl is None else now + ttl
        records = self._data.setdefault(namespace, {})
        if key not in records:
            self._size += 1
        records[key] = _Entry(stored, expires_at, self._seq)
        if expires_at is not None:
            heapq.heappush(self._heap, (expires_at, self._seq, namespace, key))
            if len(self._heap) > 2 * self._size + 1024:
                self._compact()

    def _compact(self) -> None:
        self._heap = [
            (e.expires_at, e.seq, ns, k)
            for ns, records in self._data.items()
            for k, e in records.items()
            if e.expires_at is not None
        ]
        heapq.heapify(self._heap)

    def _live(self, entry: _Entry | None, now: float) -> bool:
        return entry is not None and (entry.expires_at is None or entry.expires_at > now)

    def get(self, namespace: str, key: str, now: float) -> Value | None:
        records = self._data.get(namespace)
        entry = records.get(key) if records is not None else None
        if entry is None or not self._live(entry, now):
            return None
        return dict(entry.value)

    def delete(self, namespace: str, key: str) -> bool:
        records = self._data.get(namespace)
        if records is None or key not in records:
            return False
        del records[key]
        self._size -= 1
        if not records:
            del self._data[namespace]
        return True

    def scan(self, namespace: str, now: float) -> Iterator[tuple[str, Value]]:
        records = self._data.get(namespace)
        if not records:
            return iter(())
        return iter(
            [(k, dict(e.value)) for k, e in records.items() if self._live(e, now)]
        )

    def count(self, namespace: str, now: float) -> int:
        records = self._data.get(namespace)
        if not records:
            return 0
        return sum(1 for e in records.values() if self._live(e, now))

    def expire_due(self, now: float) -> list[Record]:
        out: list[Record] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, seq, namespace, key = heapq.heappop(heap)
            records = self._data.get(namespace)
            entry = records.get(key) if records is not None else None
            if entry is None or entry.seq != seq:
                continue  # replaced or deleted since this entry was pushed
            self.delete(namespace, key)
            out.append(Record(namespace, key, entry.value))
        return out

    def __len__(self) -> int:
        """Records held, including expired ones not yet handed out by expire_due."""
        return self._size
