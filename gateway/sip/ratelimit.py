"""Per-source blocking after repeated authentication failures.

Memory is bounded whatever the traffic: sources that are merely counting failures
live in an LRU table of at most ``max_sources`` entries, and blocked sources in a
second table of the same bound.  A spray of single failures from many addresses only
churns the first table, so it cannot flush out a source that is already blocked.
IPv6 sources are counted per /64 (configurable), since one host usually holds a
whole prefix.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict, deque
from collections.abc import Iterable


class AuthFailureLimiter:
    """Blocks a source for ``block`` seconds after ``limit`` failures within ``window``."""

    def __init__(
        self,
        limit: int,
        window: float,
        block: float,
        *,
        max_sources: int = 100_000,
        exempt: Iterable[str] = (),
        ipv6_prefix: int = 64,
    ) -> None:
        if limit < 1 or window <= 0 or block <= 0 or max_sources < 1:
            raise ValueError("limit, window, block and max_sources must be positive")
        if not 0 < ipv6_prefix <= 128:
            raise ValueError("ipv6_prefix must be within 1..128")
        self.limit = limit
        self.window = window
        self.block = block
        self.max_sources = max_sources
        self.ipv6_prefix = ipv6_prefix
        # Trusted networks (a kiosk LAN behind one NAT address) are never blocked, so
        # that one misconfigured kiosk cannot lock out all the others.
        self._exempt = [ipaddress.ip_network(n, strict=False) for n in exempt]
        # key -> failure times within the window; LRU order == order of last failure
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        # key -> [blocked until, requests rejected since]; insertion order == expiry order
        self._blocked: OrderedDict[str, list[float]] = OrderedDict()

    def _key(self, ip: str) -> str | None:
        """The table key of a source, or None when it is exempt."""
        if ":" not in ip and not self._exempt:
            return ip  # fast path for IPv4
        try:
            addr = ipaddress.ip_address(ip.strip("[]"))
        except ValueError:
            return ip
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        if any(addr in net for net in self._exempt):
            return None
        if isinstance(addr, ipaddress.IPv6Address):
            net = ipaddress.IPv6Network((addr, self.ipv6_prefix), strict=False)
            return str(net)
        return str(addr)

    def _prune(self, now: float) -> None:
        failures = self._failures
        horizon = now - self.window
        while failures:
            first = next(iter(failures.values()))
            if first[-1] > horizon:
                break
            failures.popitem(last=False)
        blocked = self._blocked
        while blocked and next(iter(blocked.values()))[0] <= now:
            blocked.popitem(last=False)

    def record_failure(self, ip: str, now: float) -> bool:
        """Count one failure; True when this failure starts a block."""
        key = self._key(ip)
        if key is None:
            return False
        self._prune(now)
        if key in self._blocked:
            return False
        failures = self._failures
        times = failures.get(key)
        if times is None:
            times = deque(maxlen=self.limit)
            failures[key] = times
        else:
            failures.move_to_end(key)
            horizon = now - self.window
            while times and times[0] <= horizon:
                times.popleft()
        times.append(now)
        if len(times) >= self.limit:
            del failures[key]
            self._blocked[key] = [now + self.block, 0]
            while len(self._blocked) > self.max_sources:
                self._blocked.popitem(last=False)
            return True
        while len(failures) > self.max_sources:
            failures.popitem(last=False)
        return False

    def is_blocked(self, ip: str, now: float) -> bool:
        key = self._key(ip)
        if key is None:
            return False
        entry = self._blocked.get(key)
        if entry is None:
            return False
        if entry[0] <= now:
            del self._blocked[key]
            return False
        return True

    def note_rejected(self, ip: str, now: float) -> int:
        """Count a request refused while blocked; 1 for the first, so callers log once."""
        key = self._key(ip)
        entry = self._blocked.get(key) if key is not None else None
        if entry is None or entry[0] <= now:
            return 0
        entry[1] += 1
        return int(entry[1])

    def blocked_until(self, ip: str, now: float) -> float | None:
        key = self._key(ip)
        entry = self._blocked.get(key) if key is not None else None
        if entry is None or entry[0] <= now:
            return None
        return entry[0]

    def clear(self, ip: str) -> None:
        """Forget a source (an operator unblocking it)."""
        key = self._key(ip)
        if key is not None:
            self._failures.pop(key, None)
            self._blocked.pop(key, None)

    def __len__(self) -> int:
        """Sources currently held in memory, counting or blocked."""
        return len(self._failures) + len(self._blocked)
