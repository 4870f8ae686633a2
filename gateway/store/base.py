"""The shared-state interface: what gateway nodes must agree on (registrations, calls).

It is shaped after Redis so that a Redis implementation can follow the in-process one
without changing callers: a record is a flat hash of string or integer fields under
``(namespace, key)``, optionally with a time to live.  Namespaces are cheap and
``scan`` costs in proportion to the namespace scanned, not to the whole store, so
callers group records they read together (one namespace per address-of-record).

Time is passed in (``now``, seconds) rather than read from a clock, which keeps the
callers sans-IO and the tests deterministic.  Expired records disappear from
``get``/``scan`` at once, and are handed out exactly once by ``expire_due`` so their
owners can react (log an expired registration, tear down a call).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from typing import NamedTuple

FieldValue = str | int
Value = dict[str, FieldValue]


class Record(NamedTuple):
    namespace: str
    key: str
    value: Value


def checked_value(value: Mapping[str, FieldValue]) -> Value:
    """A private copy of a record value, refusing what a Redis hash could not round-trip."""
    out: Value = {}
    for k, v in value.items():
        if not isinstance(k, str):
            raise TypeError(f"field names must be str, not {type(k).__name__}")
        if isinstance(v, bool) or not isinstance(v, str | int):
            raise TypeError(f"field {k!r} must be str or int, not {type(v).__name__}")
        out[k] = v
    return out


class Store(ABC):
    """Keyed records with a TTL, shared by every gateway node."""

    @abstractmethod
    def put(
        self,
        namespace: str,
        key: str,
        value: Mapping[str, FieldValue],
        ttl: float | None,
        now: float,
    ) -> None:
        """Create or replace a record; ``ttl`` None keeps it until deleted."""

    @abstractmethod
    def get(self, namespace: str, key: str, now: float) -> Value | None:
        """A copy of a live record, or None."""

    @abstractmethod
    def delete(self, namespace: str, key: str) -> bool:
        """Remove a record; True if there was one."""

    @abstractmethod
    def scan(self, namespace: str, now: float) -> Iterator[tuple[str, Value]]:
        """The live records of a namespace as (key, value) pairs, in no set order."""

    @abstractmethod
    def expire_due(self, now: float) -> list[Record]:
        """Remove the records whose TTL has run out and return them, oldest expiry first."""

    def count(self, namespace: str, now: float) -> int:
        """Live records in a namespace."""
        return sum(1 for _ in self.scan(namespace, now))
