"""How much media a call has had: the only thing billing asks of the media path.

The media bridge (a later issue) will count, per call, the seconds during which
media actually flowed and when the last packet was seen.  In the media loop that
is a float addition and a timestamp, nothing more: billing reads the counters on
its own timer (:mod:`gateway.billing.service`), so charging never slows media.

Until the bridge exists, :class:`SignallingMeter` bills what SIP tells us: the
time from the call being answered to it ending.  :class:`FakeMeter` is for tests.

Times are seconds on the caller's clock (the reactor's ``seconds()`` in the
service, a settable number in tests); meters never read a clock themselves
unless given one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


class Meter(Protocol):
    """Per-call media counters (seconds of media, time of the last media)."""

    def media_seconds(self, call_id: str) -> float:
        """Seconds of media so far (0.0 for an unknown or unanswered call); never decreases."""
        ...

    def last_media_at(self, call_id: str) -> float | None:
        """When media was last seen (the meter's clock), None if never."""
        ...


@dataclass
class _Span:
    answered: float
    ended: float | None = None


class SignallingMeter:
    """Media time = time since the SIP call was answered, until it ended.

    An interim meter: it bills a call whose media silently died until SIP notices
    (session timer, BYE).  The media bridge's meter replaces it.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._spans: dict[str, _Span] = {}

    def answered(self, call_id: str, at: float) -> None:
        self._spans.setdefault(call_id, _Span(at))

    def ended(self, call_id: str, at: float) -> None:
        span = self._spans.get(call_id)
        if span is not None and span.ended is None:
            span.ended = max(at, span.answered)

    def forget(self, call_id: str) -> None:
        """Drop a settled call's counters."""
        self._spans.pop(call_id, None)

    def media_seconds(self, call_id: str) -> float:
        span = self._spans.get(call_id)
        if span is None:
            return 0.0
        end = span.ended if span.ended is not None else self._clock()
        return max(0.0, end - span.answered)

    def last_media_at(self, call_id: str) -> float | None:
        span = self._spans.get(call_id)
        if span is None:
            return None
        return span.ended if span.ended is not None else self._clock()


class FakeMeter:
    """A meter whose counters tests set directly."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.last: dict[str, float] = {}

    def set(self, call_id: str, seconds: float, at: float | None = None) -> None:
        if seconds < self.seconds.get(call_id, 0.0):
            raise ValueError("media seconds never decrease")
        self.seconds[call_id] = seconds
        if at is not None:
            self.last[call_id] = at

    def media_seconds(self, call_id: str) -> float:
        return self.seconds.get(call_id, 0.0)

    def last_media_at(self, call_id: str) -> float | None:
        return self.last.get(call_id)


__all__ = ["FakeMeter", "Meter", "SignallingMeter"]
