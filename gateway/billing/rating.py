"""Rate one call: from facility, service, start time and media seconds to a priced,
explained :class:`Rating`.  Pure: no I/O, no clock, same inputs -> same Rating.

Rules, each chosen so a family can check the bill by hand:

* **Billed time.**  ``per_minute_round_up`` (the default, as operators bill
  today) bills whole minutes, a partial minute counting as a full one;
  ``per_second`` bills the exact media seconds.  A call with 0 media seconds
  bills nothing.  Internally both are whole seconds (a billed minute is 60 s),
  so every amount is integer arithmetic.
* **Which rate.**  The rate, cap, additive, payer split and taxes in force on
  the facility's local calendar date at the call's *start* apply to the whole
  call, even if it runs past midnight into a new rate period.
* **Free minutes** (a daily allowance) cover billed time first; only the rest
  is charged, and the additive is not charged on free time either.
* **Lines.**  Usage (rate x chargeable minutes), the facility-cost additive
  (its own line, only if the facility applies it) and each pass-through tax
  (exactly its percentage of usage + additive, never marked up).  The only
  charge kinds that exist are usage, tax and credit: there is no way to add a
  fee.
* **Rounding happens once per line, in one place** (:func:`_round_line`): the
  exact amount, possibly a fraction of a µ$, is rounded DOWN to the cent by
  :func:`gateway.billing.money.round_down_to_cent`.  So usage <= cap x billed
  minutes and additive <= additive cap x billed minutes, always.
* **Payers.**  Each line is split among the payers in force (family account,
  agency, cost-sharing percentages) by the largest-remainder method, in whole
  cents; the parts sum exactly to the line.  An agency's share is still metered
  and billed to the agency; what the family pays can be $0.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_DOWN, Decimal
from fractions import Fraction
from typing import Literal

from gateway.billing.money import ZERO, Money, allocate, round_down_to_cent
from gateway.billing.rates import (
    CapSchedule,
    Facility,
    RateAboveCapError,
    Service,
    check_service,
    load_caps,
    rate_above_cap_message,
)

Increment = Literal["per_second", "per_minute_round_up"]
INCREMENTS: tuple[Increment, ...] = ("per_minute_round_up", "per_second")
PayerKind = Literal["family", "agency"]
PAYER_KINDS: tuple[PayerKind, ...] = ("family", "agency")
_HUNDRED = Decimal(100)


class ChargeKind(enum.Enum):
    """The only kinds of charge there are.  No ancillary fees, by construction."""

    USAGE = "usage"
    TAX = "tax"
    CREDIT = "credit"


# ------------------------------------------------------------------ payers


@dataclass(frozen=True)
class Payer:
    """Who pays: a family's prepaid account or an agency (state, county, nonprofit)."""

    kind: PayerKind
    account: str
    label: str = ""

    def __post_init__(self) -> None:
        if self.kind not in PAYER_KINDS:
            raise ValueError(f"payer kind: expected \"family\" or \"agency\", got {self.kind!r}")
        if not isinstance(self.account, str) or not self.account:
            raise ValueError(
                f"payer account: expected a non-empty account id, got {self.account!r}"
            )

    @property
    def name(self) -> str:
        return self.label or (
            f"family account {self.account}" if self.kind == "family" else f"agency {self.account}"
        )


def _percent(value: object, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        raise ValueError(f"{where}: expected a percentage as Decimal, int or string, got {value!r}")
    try:
        pct = Decimal(value)
    except ArithmeticError:
        raise ValueError(f"{where}: expected a percentage, got {value!r}") from None
    if not pct.is_finite() or not Decimal(0) < pct <= _HUNDRED:
        raise ValueError(f"{where}: expected a percentage above 0 and at most 100, got {value!r}")
    return pct


@dataclass(frozen=True)
class SplitPeriod:
    """Who pays what share (percentages summing to exactly 100) from a date on."""

    effective_from: date
    shares: tuple[tuple[Payer, Decimal], ...]

    def __post_init__(self) -> None:
        if isinstance(self.effective_from, datetime) or not isinstance(self.effective_from, date):
            raise ValueError(f"split effective_from: expected a date, got {self.effective_from!r}")
        if not self.shares:
            raise ValueError(f"split from {self.effective_from}: expected at least one payer")
        payers = [p for p, _ in self.shares]
        if len(set(payers)) != len(payers):
            raise ValueError(f"split from {self.effective_from}: a payer appears twice")
        for payer, pct in self.shares:
            if not isinstance(payer, Payer):
                raise ValueError(f"split from {self.effective_from}: expected Payer, got {payer!r}")
            _percent(pct, f"split from {self.effective_from}: share of {payer.name}")
        total = sum((Decimal(p) for _, p in self.shares), Decimal(0))
        if total != _HUNDRED:
            raise ValueError(
                f"split from {self.effective_from}: shares must add up to exactly 100%,"
                f" got {total}%"
            )

    @classmethod
    def of(cls, effective_from: date, shares: Mapping[Payer, Decimal | int | str]) -> SplitPeriod:
        """Convenience: ``SplitPeriod.of(d, {state: "35", family: "65"})`` (order kept)."""
        return cls(
            effective_from,
            tuple((p, _percent(v, f"share of {p.name}")) for p, v in shares.items()),
        )


@dataclass(frozen=True)
class PayerSplit:
    """Effective-dated cost sharing: e.g. state pays 35% from D1, 100% from D2."""

    periods: tuple[SplitPeriod, ...]

    def __post_init__(self) -> None:
        if not self.periods:
            raise ValueError("split: expected at least one period")
        dates = [p.effective_from for p in self.periods]
        if dates != sorted(set(dates)):
            raise ValueError("split: periods must be in strictly increasing date order")

    @classmethod
    def single(cls, payer: Payer, effective_from: date = date.min) -> PayerSplit:
        """One payer for everything (the common case: the family's prepaid account)."""
        return cls((SplitPeriod(effective_from, ((payer, _HUNDRED),)),))

    @classmethod
    def dated(cls, *periods: tuple[date, Mapping[Payer, Decimal | int | str]]) -> PayerSplit:
        return cls(tuple(SplitPeriod.of(d, shares) for d, shares in periods))

    def shares_on(self, on: date) -> tuple[tuple[Payer, Decimal], ...]:
        current = [p for p in self.periods if p.effective_from <= on]
        if not current:
            raise ValueError(f"split: no payer split in force on {on}")
        return current[-1].shares


# ------------------------------------------------------------------ results


@dataclass(frozen=True)
class ChargeLine:
    """One line of a bill, its exact pre-rounding amount, and each payer's part."""

    kind: ChargeKind
    label: str
    amount: Money
    exact_micros: Fraction
    explanation: str
    by_payer: tuple[tuple[Payer, Money], ...]

    def __post_init__(self) -> None:
        if not isinstance(self.kind, ChargeKind):
            raise ValueError(f"kind: expected a ChargeKind (usage, tax, credit), got {self.kind!r}")
        if self.kind is ChargeKind.CREDIT and self.amount.micros > 0:
            raise ValueError("amount: a credit must be <= $0")
        if self.kind is not ChargeKind.CREDIT and self.amount.micros < 0:
            raise ValueError(f"amount: a {self.kind.value} charge must be >= $0")
        if sum((m for _, m in self.by_payer), ZERO) != self.amount:
            raise ValueError("by_payer: payer parts must add up to the line amount")


@dataclass(frozen=True)
class PayerTotal:
    """What one payer owes for the call, line kind by line kind."""

    payer: Payer
    percent: Decimal
    usage: Money
    additive: Money
    tax: Money

    @property
    def total(self) -> Money:
        return self.usage + self.additive + self.tax


@dataclass(frozen=True)
class Rating:
    """A priced call.  Amounts are whole cents; ``explanation`` is for the family."""

    facility_id: str
    service: Service
    started_at: datetime
    rating_date: date
    media_seconds: int
    increment: Increment
    billed_units: int
    billed_unit: Literal["second", "minute"]
    billed_seconds: int
    billed_minutes: Decimal
    free_minutes_remaining: Decimal
    free_seconds_covered: int
    chargeable_seconds: int
    rate_per_minute: Money
    cap_per_minute: Money
    additive_per_minute: Money
    cap_period: str
    tier: str
    lines: tuple[ChargeLine, ...]
    payers: tuple[PayerTotal, ...]
    explanation: str

    @property
    def free_minutes_covered(self) -> Decimal:
        return _minutes(self.free_seconds_covered)

    @property
    def chargeable_minutes(self) -> Decimal:
        return _minutes(self.chargeable_seconds)

    @property
    def usage(self) -> Money:
        return self._sum(ChargeKind.USAGE, "usage")

    @property
    def additive(self) -> Money:
        return self._sum(ChargeKind.USAGE, "additive")

    @property
    def tax(self) -> Money:
        return self._sum(ChargeKind.TAX, None)

    @property
    def total(self) -> Money:
        return sum((line.amount for line in self.lines), ZERO)

    def amount_for(self, payer: Payer) -> Money:
        """What this payer owes for the call ($0 if not a payer on that date)."""
        return sum((p.total for p in self.payers if p.payer == payer), ZERO)

    def _sum(self, kind: ChargeKind, label: str | None) -> Money:
        return sum(
            (
                line.amount
                for line in self.lines
                if line.kind is kind and (label is None or line.label == label)
            ),
            ZERO,
        )


# ------------------------------------------------------------------ helpers


def _minutes(seconds: int) -> Decimal:
    """Seconds as minutes, for display: exact when whole, else 4 decimals, truncated."""
    if seconds % 60 == 0:
        return Decimal(seconds // 60)
    return (Decimal(seconds) / 60).quantize(Decimal("0.0001"), rounding=ROUND_DOWN)


def _duration(seconds: int) -> str:
    m, s = divmod(seconds, 60)
    parts = []
    if m:
        parts.append(f"{m} minute{'s' if m != 1 else ''}")
    if s or not m:
        parts.append(f"{s} second{'s' if s != 1 else ''}")
    return " ".join(parts)


def _exact_text(exact: Fraction) -> str:
    dollars = Decimal(exact.numerator) / Decimal(exact.denominator) / Decimal(1_000_000)
    shown = dollars.quantize(Decimal("0.000001"), rounding=ROUND_DOWN)
    text = f"${shown.normalize():f}"
    return text + ("..." if Fraction(shown) != exact / 1_000_000 else "")


def _round_line(exact: Fraction) -> Money:
    """The one place a charge is rounded: exact µ$ -> whole cents, DOWN."""
    return round_down_to_cent(exact)


def _line(
    kind: ChargeKind,
    label: str,
    exact: Fraction,
    explanation_head: str,
    shares: tuple[tuple[Payer, Decimal], ...],
) -> ChargeLine:
    amount = _round_line(exact)
    explanation = f"{explanation_head} = {amount}"
    if Fraction(amount.micros) != exact:
        explanation += f" (exact {_exact_text(exact)}, rounded down to the cent)"
    parts = allocate(amount, [pct for _, pct in shares])
    return ChargeLine(
        kind=kind,
        label=label,
        amount=amount,
        exact_micros=exact,
        explanation=explanation,
        by_payer=tuple((payer, part) for (payer, _), part in zip(shares, parts, strict=True)),
    )


def _check_free_minutes(value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise ValueError(
            f"free_minutes_remaining: expected an int or Decimal number of minutes, got {value!r}"
        )
    minutes = Decimal(value)
    if not minutes.is_finite() or minutes < 0:
        raise ValueError(f"free_minutes_remaining: expected a number >= 0, got {value!r}")
    seconds = minutes * 60
    if seconds != seconds.to_integral_value():
        raise ValueError(
            f"free_minutes_remaining: {value} minutes is not a whole number of seconds"
        )
    return minutes


# ------------------------------------------------------------------ rating


def rate_call(
    facility: Facility,
    service: str,
    started_at: datetime,
    media_seconds: int,
    *,
    split: PayerSplit,
    increment: str = "per_minute_round_up",
    free_minutes_remaining: int | Decimal = 0,
    caps: CapSchedule | None = None,
) -> Rating:
    """Price one call.  Raises ValueError naming the field for any bad input.

    ``started_at`` must be timezone-aware (UTC from the call records); the
    facility's local date at that instant selects the rate, cap, additive, split
    and taxes for the whole call.
    """
    if not isinstance(facility, Facility):
        raise ValueError(f"facility: expected a Facility, got {facility!r}")
    svc = check_service(service)
    if isinstance(media_seconds, bool) or not isinstance(media_seconds, int):
        raise ValueError(
            f"media_seconds: expected a whole number of seconds, got {media_seconds!r}"
        )
    if media_seconds < 0:
        raise ValueError(f"media_seconds: cannot be negative, got {media_seconds}")
    if increment not in INCREMENTS:
        raise ValueError(
            f"increment: expected \"per_minute_round_up\" or \"per_second\", got {increment!r}"
        )
    inc: Increment = increment
    if not isinstance(split, PayerSplit):
        raise ValueError(f"split: expected a PayerSplit, got {split!r}")
    free_minutes = _check_free_minutes(free_minutes_remaining)
    schedule = caps if caps is not None else load_caps()
    on = facility.local_date(started_at)

    period = schedule.period_on(on)
    tier = period.classify(facility.facility_type, facility.adp)
    cap = period.cap(tier, svc)
    entry = facility.rate_entry_on(svc, on)
    rate = entry.per_minute
    if rate > cap:  # validate_facility refuses this at load; never bill above the cap
        raise RateAboveCapError(
            rate_above_cap_message(facility, svc, entry.effective_from, rate, on, schedule)
        )
    additive_rate = (
        period.additive.per_minute
        if facility.apply_additive and period.additive is not None
        else ZERO
    )
    shares = split.shares_on(on)

    billed_unit: Literal["second", "minute"]
    if inc == "per_second":
        billed_units, billed_unit = media_seconds, "second"
        billed_seconds = media_seconds
    else:
        billed_units, billed_unit = -(-media_seconds // 60), "minute"
        billed_seconds = billed_units * 60
    covered = min(int(free_minutes * 60), billed_seconds)
    chargeable = billed_seconds - covered

    lines: list[ChargeLine] = []
    usage_exact = Fraction(rate.micros * chargeable, 60)
    lines.append(
        _line(ChargeKind.USAGE, "usage", usage_exact,
              f"{_duration(chargeable)} at {rate}/min", shares)
    )
    if facility.apply_additive and period.additive is not None:
        lines.append(
            _line(
                ChargeKind.USAGE,
                "additive",
                Fraction(additive_rate.micros * chargeable, 60),
                f"{period.additive.label}: {_duration(chargeable)} at {additive_rate}/min",
                shares,
            )
        )
    base = sum((line.amount for line in lines), ZERO)
    for tax in facility.taxes:
        lines.append(
            _line(
                ChargeKind.TAX,
                f"tax:{tax.name}",
                Fraction(base.micros) * Fraction(tax.percent) / 100,
                f"{tax.name}: {tax.percent.normalize():f}% of {base}",
                shares,
            )
        )

    payers = tuple(
        PayerTotal(
            payer=payer,
            percent=pct,
            usage=_part(lines, i, ChargeKind.USAGE, "usage"),
            additive=_part(lines, i, ChargeKind.USAGE, "additive"),
            tax=_part(lines, i, ChargeKind.TAX, None),
        )
        for i, (payer, pct) in enumerate(shares)
    )
    explanation = _explain(
        media_seconds, inc, billed_seconds, covered, lines, payers, on, rate, cap, tier.label
    )
    return Rating(
        facility_id=facility.id,
        service=svc,
        started_at=started_at,
        rating_date=on,
        media_seconds=media_seconds,
        increment=inc,
        billed_units=billed_units,
        billed_unit=billed_unit,
        billed_seconds=billed_seconds,
        billed_minutes=_minutes(billed_seconds),
        free_minutes_remaining=free_minutes,
        free_seconds_covered=covered,
        chargeable_seconds=chargeable,
        rate_per_minute=rate,
        cap_per_minute=cap,
        additive_per_minute=additive_rate,
        cap_period=period.id,
        tier=tier.label,
        lines=tuple(lines),
        payers=payers,
        explanation=explanation,
    )


def _part(lines: Iterable[ChargeLine], index: int, kind: ChargeKind, label: str | None) -> Money:
    return sum(
        (
            line.by_payer[index][1]
            for line in lines
            if line.kind is kind and (label is None or line.label == label)
        ),
        ZERO,
    )


def _explain(
    media_seconds: int,
    increment: Increment,
    billed_seconds: int,
    covered: int,
    lines: list[ChargeLine],
    payers: tuple[PayerTotal, ...],
    on: date,
    rate: Money,
    cap: Money,
    tier_label: str,
) -> str:
    """Plain sentences, first the arithmetic ("12 minutes at $0.19/min = $2.28")."""
    out = [line.explanation for line in lines[:1]]
    notes = []
    if increment == "per_minute_round_up" and billed_seconds != media_seconds:
        notes.append(
            f"Call time {_duration(media_seconds)}, billed as {_duration(billed_seconds)} "
            "(each started minute counts as a full minute)."
        )
    if covered:
        notes.append(f"Free time used from the daily allowance: {_duration(covered)}, not charged.")
    out.extend(notes)
    out.extend(line.explanation for line in lines[1:])
    total = sum((line.amount for line in lines), ZERO)
    out.append(f"Total: {total}.")
    if len(payers) == 1:
        p = payers[0]
        verb = "Billed to" if p.payer.kind == "agency" else "Charged to"
        out.append(f"{verb} {p.payer.name}: {p.total}.")
    else:
        shares = "; ".join(
            f"{p.payer.name} {p.percent.normalize():f}%: {p.total}" for p in payers
        )
        out.append(f"Shared: {shares}.")
    if not any(p.payer.kind == "family" for p in payers):
        out.append("The family pays $0.00 for this call.")
    out.append(f"Rate {rate}/min on {on}; FCC cap for {tier_label}: {cap}/min.")
    return "\n".join(out)
