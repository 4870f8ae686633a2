"""FCC rate caps (from ``caps.toml``) and facilities' own rate tables.

The caps are data, effective-dated, so that a new FCC order is a reviewed data
change, not a code change.  A facility's configured per-minute rates are checked
against every cap period they span when the facility is loaded: a rate above
the cap is refused before any call can be billed at it, with an error that
names the facility, the service, the date and both amounts.

The FCC's facility-cost *additive* (FCC 25-75) is not part of the rate: it is a
separate per-minute amount a facility may be configured to charge on top of the
cap, billed and shown as its own line.  A configured rate is therefore checked
against the cap alone.

Dates are calendar dates in the facility's local time zone (the day a family
sees on their statement), taken at the start of the call.
"""

from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from typing import Any, Literal, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.billing.money import ZERO, Money

FacilityType = Literal["prison", "jail"]
Service = Literal["audio", "video"]
FACILITY_TYPES: tuple[FacilityType, ...] = ("prison", "jail")
SERVICES: tuple[Service, ...] = ("audio", "video")

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class CapDataError(ValueError):
    """caps.toml is malformed: refuse to bill rather than guess a cap."""


class RateAboveCapError(ValueError):
    """A configured rate exceeds the FCC cap in force for that facility and date."""


# ------------------------------------------------------------------ validation helpers


def check_facility_type(value: object) -> FacilityType:
    if value not in FACILITY_TYPES:
        raise ValueError(f"facility_type: expected \"prison\" or \"jail\", got {value!r}")
    return value


def check_service(value: object) -> Service:
    if value not in SERVICES:
        raise ValueError(f"service: expected \"audio\" or \"video\", got {value!r}")
    return value


def check_adp(value: object) -> int | Decimal:
    """ADP is an average, so it may be fractional; never a float, never negative."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise ValueError(
            f"adp: expected a whole number or Decimal average daily population, got {value!r}"
        )
    if isinstance(value, Decimal) and not value.is_finite():
        raise ValueError(f"adp: expected a finite number, got {value}")
    if value < 0:
        raise ValueError(f"adp: average daily population cannot be negative, got {value}")
    return value


def _check_date(value: object, name: str) -> date:
    if isinstance(value, datetime) or not isinstance(value, date):
        raise ValueError(f"{name}: expected a date (YYYY-MM-DD), got {value!r}")
    return value


# ------------------------------------------------------------------ caps


@dataclass(frozen=True)
class Tier:
    """A cap tier: a facility type and an inclusive ADP range (open above if None)."""

    id: str
    label: str
    facility_type: FacilityType
    adp_min: int
    adp_max: int | None = None

    def contains(self, facility_type: FacilityType, adp: int | Decimal) -> bool:
        # Bounds are whole numbers; a fractional ADP such as 349.6 belongs to the
        # tier whose range starts at or below it and the next starts above it.
        if facility_type != self.facility_type or adp < self.adp_min:
            return False
        return self.adp_max is None or adp < self.adp_max + 1


@dataclass(frozen=True)
class Additive:
    """The separate facility-cost amount per minute, with where it comes from."""

    per_minute: Money
    label: str
    sources: tuple[str, ...] = ()
    checked: str = ""


@dataclass(frozen=True)
class CapPeriod:
    """One set of caps and the inclusive date range in which it applies."""

    id: str
    title: str
    effective_from: date
    effective_to: date | None
    tiers: tuple[Tier, ...]
    caps: Mapping[tuple[str, Service], Money]
    additive: Additive | None = None
    sources: tuple[str, ...] = ()
    checked: str = ""
    notes: tuple[str, ...] = ()
    tier_checked: Mapping[str, str] = field(default_factory=dict)

    def covers(self, on: date) -> bool:
        return self.effective_from <= on and (self.effective_to is None or on <= self.effective_to)

    def classify(self, facility_type: FacilityType, adp: int | Decimal) -> Tier:
        for tier in self.tiers:
            if tier.contains(facility_type, adp):
                return tier
        raise ValueError(  # unreachable with validated data, kept as a guard
            f"adp: no {facility_type} tier for ADP {adp} in cap period {self.id}"
        )

    def cap(self, tier: Tier, service: Service) -> Money:
        return self.caps[(tier.id, service)]


@dataclass(frozen=True)
class CapSchedule:
    """All cap periods, in date order and not overlapping."""

    periods: tuple[CapPeriod, ...]
    origin: str = "caps.toml"

    def period_on(self, on: date) -> CapPeriod:
        _check_date(on, "on")
        for period in self.periods:
            if period.covers(on):
                return period
        known = ", ".join(
            f"{p.effective_from}..{p.effective_to or ''}" for p in self.periods
        )
        raise ValueError(f"on: no FCC cap table covers {on} (known periods: {known})")

    def classify(self, facility_type: object, adp: object, on: date) -> Tier:
        """The cap tier of a facility of this type and ADP on this date."""
        ft = check_facility_type(facility_type)
        a = check_adp(adp)
        return self.period_on(on).classify(ft, a)

    def cap(self, facility_type: object, adp: object, service: object, on: date) -> Money:
        """The per-minute cap for this facility type, ADP and service on this date."""
        ft = check_facility_type(facility_type)
        a = check_adp(adp)
        svc = check_service(service)
        period = self.period_on(on)
        return period.cap(period.classify(ft, a), svc)

    def additive_on(self, on: date) -> Money:
        """The per-minute facility-cost additive allowed on this date ($0 if none)."""
        additive = self.period_on(on).additive
        return additive.per_minute if additive is not None else ZERO


def _money(value: object, where: str) -> Money:
    if not isinstance(value, str):
        raise CapDataError(f"{where}: expected a decimal string such as \"0.25\", got {value!r}")
    try:
        amount = Money.parse(value)
    except ValueError as exc:
        raise CapDataError(f"{where}: {exc}") from None
    if amount.micros < 0:
        raise CapDataError(f"{where}: a cap cannot be negative, got {value}")
    return amount


def _strings(value: object, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise CapDataError(f"{where}: expected a list of strings")
    return tuple(value)


def _opt_str(value: object, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise CapDataError(f"{where}: expected a string, got {value!r}")
    return value


def parse_caps(data: Mapping[str, Any], origin: str = "caps.toml") -> CapSchedule:
    """Build and check a :class:`CapSchedule` from parsed ``caps.toml`` data."""
    if data.get("schema") != 1:
        raise CapDataError(f"{origin}: schema: expected 1, got {data.get('schema')!r}")
    if data.get("currency") != "USD" or data.get("unit") != "per_minute":
        raise CapDataError(f"{origin}: expected currency = \"USD\" and unit = \"per_minute\"")
    raw_periods = data.get("period")
    if not isinstance(raw_periods, list) or not raw_periods:
        raise CapDataError(f"{origin}: expected at least one [[period]]")
    periods: list[CapPeriod] = []
    for i, raw in enumerate(raw_periods):
        where = f"{origin}: period[{i}]"
        if not isinstance(raw, dict):
            raise CapDataError(f"{where}: expected a table")
        pid = raw.get("id")
        if not isinstance(pid, str) or not _ID_RE.match(pid):
            raise CapDataError(f"{where}.id: expected an identifier, got {pid!r}")
        where = f"{origin}: period {pid}"
        start = raw.get("effective_from")
        end = raw.get("effective_to")
        if isinstance(start, datetime) or not isinstance(start, date):
            raise CapDataError(f"{where}.effective_from: expected a date")
        if end is not None and (isinstance(end, datetime) or not isinstance(end, date)):
            raise CapDataError(f"{where}.effective_to: expected a date")
        if end is not None and end < start:
            raise CapDataError(f"{where}: effective_to {end} is before effective_from {start}")
        checked = _opt_str(raw.get("checked"), f"{where}.checked")
        if not checked:
            raise CapDataError(f"{where}.checked: say how far these figures were verified")
        tiers: list[Tier] = []
        caps: dict[tuple[str, Service], Money] = {}
        tier_checked: dict[str, str] = {}
        raw_tiers = raw.get("tier")
        if not isinstance(raw_tiers, list) or not raw_tiers:
            raise CapDataError(f"{where}: expected [[period.tier]] entries")
        for j, rt in enumerate(raw_tiers):
            tw = f"{where}.tier[{j}]"
            if not isinstance(rt, dict):
                raise CapDataError(f"{tw}: expected a table")
            tid = rt.get("id")
            if not isinstance(tid, str) or not _ID_RE.match(tid):
                raise CapDataError(f"{tw}.id: expected an identifier, got {tid!r}")
            if any(t.id == tid for t in tiers):
                raise CapDataError(f"{tw}.id: duplicate tier {tid!r}")
            ft = rt.get("facility_type")
            if ft not in FACILITY_TYPES:
                raise CapDataError(f"{tw}.facility_type: expected \"prison\" or \"jail\"")
            lo, hi = rt.get("adp_min"), rt.get("adp_max")
            if isinstance(lo, bool) or not isinstance(lo, int) or lo < 0:
                raise CapDataError(f"{tw}.adp_min: expected an integer >= 0")
            if hi is not None and (isinstance(hi, bool) or not isinstance(hi, int) or hi < lo):
                raise CapDataError(f"{tw}.adp_max: expected an integer >= adp_min")
            tiers.append(
                Tier(tid, _opt_str(rt.get("label"), f"{tw}.label") or tid,
                     cast(FacilityType, ft), lo, hi)
            )
            for svc in SERVICES:
                caps[(tid, svc)] = _money(rt.get(svc), f"{tw}.{svc}")
            tier_checked[tid] = _opt_str(rt.get("checked"), f"{tw}.checked") or checked
        _check_tiers(tiers, where)
        additive = None
        raw_add = raw.get("additive")
        if raw_add is not None:
            if not isinstance(raw_add, dict):
                raise CapDataError(f"{where}.additive: expected a table")
            additive = Additive(
                per_minute=_money(raw_add.get("per_minute"), f"{where}.additive.per_minute"),
                label=_opt_str(raw_add.get("label"), f"{where}.additive.label")
                or "Facility cost additive",
                sources=_strings(raw_add.get("sources"), f"{where}.additive.sources"),
                checked=_opt_str(raw_add.get("checked"), f"{where}.additive.checked"),
            )
        periods.append(
            CapPeriod(
                id=pid,
                title=_opt_str(raw.get("title"), f"{where}.title") or pid,
                effective_from=start,
                effective_to=end,
                tiers=tuple(tiers),
                caps=caps,
                additive=additive,
                sources=_strings(raw.get("sources"), f"{where}.sources"),
                checked=checked,
                notes=_strings(raw.get("notes"), f"{where}.notes"),
                tier_checked=tier_checked,
            )
        )
    for before, after in zip(periods, periods[1:], strict=False):
        if before.effective_to is None or before.effective_to >= after.effective_from:
            raise CapDataError(
                f"{origin}: periods {before.id} and {after.id} overlap or are out of date order"
            )
    return CapSchedule(tuple(periods), origin)


def _check_tiers(tiers: Sequence[Tier], where: str) -> None:
    """Every facility type and ADP must fall in exactly one tier: no gaps, no overlaps."""
    for ft in FACILITY_TYPES:
        ranges = sorted((t.adp_min, t.adp_max, t.id) for t in tiers if t.facility_type == ft)
        if not ranges:
            raise CapDataError(f"{where}: no tier for facility_type {ft!r}")
        expected = 0
        for n, (lo, hi, tid) in enumerate(ranges):
            if lo != expected:
                raise CapDataError(
                    f"{where}: {ft} tier {tid} starts at ADP {lo}, expected {expected}"
                    " (tiers must be contiguous from 0)"
                )
            if hi is None:
                if n != len(ranges) - 1:
                    raise CapDataError(f"{where}: {ft} tier {tid} is open-ended but not last")
                break
            expected = hi + 1
        else:
            raise CapDataError(f"{where}: the highest {ft} tier must have no adp_max")


@functools.lru_cache(maxsize=1)
def _packaged_caps() -> CapSchedule:
    text = resources.files("gateway.billing").joinpath("caps.toml").read_text("utf-8")
    return parse_caps(tomllib.loads(text), "gateway/billing/caps.toml")


def load_caps(path: str | Path | None = None) -> CapSchedule:
    """The packaged cap tables, or those in ``path`` (for tests and reviews)."""
    if path is None:
        return _packaged_caps()
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text("utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise CapDataError(f"{p}: {exc}") from None
    return parse_caps(data, str(p))


# ------------------------------------------------------------------ facilities


@dataclass(frozen=True)
class RateEntry:
    """A facility's per-minute rate for one service, in force from a date on."""

    service: Service
    effective_from: date
    per_minute: Money

    def __post_init__(self) -> None:
        check_service(self.service)
        _check_date(self.effective_from, "effective_from")
        if not isinstance(self.per_minute, Money) or self.per_minute.micros < 0:
            raise ValueError(f"per_minute: expected a Money amount >= $0, got {self.per_minute!r}")


@dataclass(frozen=True)
class PassThroughTax:
    """A government tax passed through at exactly its percentage, never marked up."""

    name: str
    percent: Decimal

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError("tax name: expected a non-empty name, as shown to families")
        if (
            not isinstance(self.percent, Decimal)
            or not self.percent.is_finite()
            or not Decimal(0) < self.percent < Decimal(100)
        ):
            raise ValueError(
                f"tax percent: expected a Decimal between 0 and 100 for {self.name!r}, "
                f"got {self.percent!r}"
            )


@dataclass(frozen=True)
class Facility:
    """A facility's billing configuration (checked against caps by :func:`validate_facility`)."""

    id: str
    facility_type: FacilityType
    adp: int | Decimal
    rates: tuple[RateEntry, ...]
    apply_additive: bool = False
    taxes: tuple[PassThroughTax, ...] = ()
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not _ID_RE.match(self.id):
            raise ValueError(f"facility id: expected an identifier, got {self.id!r}")
        check_facility_type(self.facility_type)
        check_adp(self.adp)
        if not isinstance(self.apply_additive, bool):
            raise ValueError(f"apply_additive: expected true or false, got {self.apply_additive!r}")
        seen: set[tuple[Service, date]] = set()
        for entry in self.rates:
            if not isinstance(entry, RateEntry):
                raise ValueError(f"rates: expected RateEntry items, got {entry!r}")
            key = (entry.service, entry.effective_from)
            if key in seen:
                raise ValueError(
                    f"facility {self.id!r}: rates: two {entry.service} rates from "
                    f"{entry.effective_from}"
                )
            seen.add(key)
        names = [t.name for t in self.taxes]
        if len(set(names)) != len(names):
            raise ValueError(f"facility {self.id!r}: taxes: duplicate tax names")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise ValueError(
                f"facility {self.id!r}: timezone: unknown time zone {self.timezone!r}"
            ) from None

    def local_date(self, at: datetime) -> date:
        """The facility's calendar date at an aware instant; naive times are refused."""
        if not isinstance(at, datetime):
            raise ValueError(f"started_at: expected a datetime, got {at!r}")
        if at.tzinfo is None or at.utcoffset() is None:
            raise ValueError(
                f"started_at: naive datetime {at.isoformat()}; give an aware UTC time"
            )
        return at.astimezone(ZoneInfo(self.timezone)).date()

    def rate_entry_on(self, service: object, on: date) -> RateEntry:
        """The rate entry in force on a date: the latest that starts on or before it."""
        svc = check_service(service)
        _check_date(on, "on")
        candidates = [e for e in self.rates if e.service == svc and e.effective_from <= on]
        if not candidates:
            raise ValueError(f"facility {self.id!r}: no {svc} rate configured for {on}")
        return max(candidates, key=lambda e: e.effective_from)


def cap_for(
    facility: Facility, service: object, on: date, caps: CapSchedule | None = None
) -> Money:
    """The FCC per-minute cap for this facility and service on this date."""
    schedule = caps if caps is not None else load_caps()
    return schedule.cap(facility.facility_type, facility.adp, service, on)


def rate_for(facility: Facility, service: object, on: date) -> Money:
    """The facility's configured per-minute rate for this service on this date."""
    return facility.rate_entry_on(service, on).per_minute


def additive_for(facility: Facility, on: date, caps: CapSchedule | None = None) -> Money:
    """The facility-cost additive per minute: $0 unless configured and allowed then."""
    if not facility.apply_additive:
        return ZERO
    schedule = caps if caps is not None else load_caps()
    return schedule.additive_on(on)


def rate_above_cap_message(
    facility: Facility, service: Service, rate_from: date, rate: Money, on: date,
    caps: CapSchedule,
) -> str:
    period = caps.period_on(on)
    tier = period.classify(facility.facility_type, facility.adp)
    cap = period.cap(tier, service)
    msg = (
        f"facility {facility.id!r}: {service} rate {rate}/min (in force from {rate_from}) "
        f"is above the FCC cap of {cap}/min for {tier.label} on {on} ({period.id})"
    )
    if facility.apply_additive and period.additive is not None:
        msg += (
            f"; the facility cost additive of {period.additive.per_minute}/min is billed "
            "as a separate line and must not be included in the rate"
        )
    return msg


def validate_facility(facility: Facility, caps: CapSchedule | None = None) -> Facility:
    """Refuse any configured rate above the cap on any day it would be in force.

    Each rate entry is in force from its date until the next entry for the same
    service (or forever); every cap period in that span is checked, and a span
    reaching a day with no known cap is refused too, since nothing may be billed
    on a day whose cap we do not know.
    """
    schedule = caps if caps is not None else load_caps()
    for service in SERVICES:
        entries = sorted(
            (e for e in facility.rates if e.service == service), key=lambda e: e.effective_from
        )
        for n, entry in enumerate(entries):
            last = (
                entries[n + 1].effective_from - timedelta(days=1) if n + 1 < len(entries) else None
            )
            _check_span(facility, entry, last, schedule)
    return facility


def _check_span(
    facility: Facility, entry: RateEntry, last: date | None, caps: CapSchedule
) -> None:
    day: date | None = entry.effective_from
    for period in caps.periods:
        if day is None or (last is not None and day > last):
            return
        if period.effective_to is not None and period.effective_to < day:
            continue
        if period.effective_from > day:
            break  # a gap before this period: reported below
        tier = period.classify(facility.facility_type, facility.adp)
        if entry.per_minute > period.cap(tier, entry.service):
            raise RateAboveCapError(
                rate_above_cap_message(
                    facility, entry.service, entry.effective_from, entry.per_minute, day, caps
                )
            )
        day = None if period.effective_to is None else period.effective_to + timedelta(days=1)
    if day is not None and (last is None or day <= last):
        raise RateAboveCapError(
            f"facility {facility.id!r}: {entry.service} rate {entry.per_minute}/min "
            f"(in force from {entry.effective_from}) would apply on {day}, "
            "when no FCC cap table is known; end it earlier or add the cap data"
        )


# ------------------------------------------------------------------ facility config


_FACILITY_KEYS = {"id", "type", "adp", "timezone", "apply_additive", "rate", "tax"}
_RATE_KEYS = {"service", "effective_from", "per_minute"}
_TAX_KEYS = {"name", "percent"}


def _decimal(value: object, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"{where}: expected a whole number or a decimal string, got {value!r}")
    try:
        d = Decimal(value)
    except InvalidOperation:
        raise ValueError(f"{where}: expected a decimal number, got {value!r}") from None
    if not d.is_finite():
        raise ValueError(f"{where}: expected a finite number, got {value!r}")
    return d


def load_facility(data: Mapping[str, Any], caps: CapSchedule | None = None) -> Facility:
    """Build a facility from a config table (``[[facility]]``) and check it against caps.

    Keys: ``id``, ``type`` ("prison"/"jail"), ``adp`` (integer or decimal string),
    ``timezone`` (IANA, default "UTC"), ``apply_additive`` (bool, default false),
    ``[[rate]]`` tables (``service``, ``effective_from``, ``per_minute`` as a
    string) and ``[[tax]]`` tables (``name``, ``percent`` as a string).
    """
    fid = data.get("id")
    where = f"facility {fid!r}"
    unknown = sorted(set(data) - _FACILITY_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown keys {', '.join(unknown)}")
    adp_raw = data.get("adp")
    adp: int | Decimal
    if isinstance(adp_raw, int) and not isinstance(adp_raw, bool):
        adp = adp_raw
    elif isinstance(adp_raw, str):
        adp = _decimal(adp_raw, f"{where}: adp")
    else:
        raise ValueError(f"{where}: adp: expected an integer or a decimal string, got {adp_raw!r}")
    rates: list[RateEntry] = []
    for i, raw in enumerate(data.get("rate") or []):
        rw = f"{where}: rate[{i}]"
        if not isinstance(raw, Mapping):
            raise ValueError(f"{rw}: expected a table")
        extra = sorted(set(raw) - _RATE_KEYS)
        if extra:
            raise ValueError(f"{rw}: unknown keys {', '.join(extra)}")
        per_minute = raw.get("per_minute")
        if not isinstance(per_minute, str):
            raise ValueError(
                f"{rw}: per_minute: expected a string such as \"0.19\", got {per_minute!r}"
            )
        try:
            rates.append(
                RateEntry(
                    service=check_service(raw.get("service")),
                    effective_from=_check_date(raw.get("effective_from"), "effective_from"),
                    per_minute=Money.parse(per_minute),
                )
            )
        except ValueError as exc:
            raise ValueError(f"{rw}: {exc}") from None
    taxes: list[PassThroughTax] = []
    for i, raw in enumerate(data.get("tax") or []):
        tw = f"{where}: tax[{i}]"
        if not isinstance(raw, Mapping):
            raise ValueError(f"{tw}: expected a table")
        extra = sorted(set(raw) - _TAX_KEYS)
        if extra:
            raise ValueError(f"{tw}: unknown keys {', '.join(extra)}")
        try:
            taxes.append(
                PassThroughTax(str(raw.get("name") or ""), _decimal(raw.get("percent"), "percent"))
            )
        except ValueError as exc:
            raise ValueError(f"{tw}: {exc}") from None
    facility_type = data.get("type")
    try:
        facility = Facility(
            id=cast(str, fid),
            facility_type=check_facility_type(facility_type),
            adp=adp,
            rates=tuple(rates),
            apply_additive=data.get("apply_additive", False),
            taxes=tuple(taxes),
            timezone=data.get("timezone", "UTC"),
        )
    except ValueError as exc:
        msg = str(exc)
        raise ValueError(msg if msg.startswith("facility ") else f"{where}: {msg}") from None
    return validate_facility(facility, caps)
