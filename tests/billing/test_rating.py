"""Rating calls: worked examples a billing clerk can check by hand, and properties.

Unless said otherwise the facility is a medium jail (ADP 420: 350-999), where
video is capped at $0.19/min from 2026-04-06 (FCC 25-75) and at $0.12/min
before (FCC 24-75), and the facility charges exactly the cap.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.billing.money import MICROS_PER_CENT, ZERO, Money
from gateway.billing.rates import (
    Facility,
    PassThroughTax,
    RateAboveCapError,
    RateEntry,
    load_caps,
    validate_facility,
)
from gateway.billing.rating import (
    ChargeKind,
    ChargeLine,
    Payer,
    PayerSplit,
    Rating,
    SplitPeriod,
    rate_call,
)

CAPS = load_caps()
OLD, NEW = date(2025, 1, 1), date(2026, 4, 6)
FAMILY = Payer("family", "A-1001", "family account A-1001")
STATE = Payer("agency", "STATE-DOC", "State DOC")
FAMILY_PAYS = PayerSplit.single(FAMILY)
MAY_2 = datetime(2026, 5, 2, 15, 0, tzinfo=UTC)


def jail(**kw: Any) -> Facility:
    args: dict[str, Any] = {
        "id": "county-jail",
        "facility_type": "jail",
        "adp": 420,
        "rates": (
            RateEntry("audio", OLD, Money.parse("0.07")),
            RateEntry("audio", NEW, Money.parse("0.12")),
            RateEntry("video", OLD, Money.parse("0.12")),
            RateEntry("video", NEW, Money.parse("0.19")),
        ),
    }
    args.update(kw)
    return validate_facility(Facility(**args), CAPS)


def rate(
    media_seconds: int, *, facility: Facility | None = None, at: datetime = MAY_2,
    split: PayerSplit = FAMILY_PAYS, service: str = "video", **kw: Any,
) -> Rating:
    return rate_call(
        facility or jail(), service, at, media_seconds, split=split, caps=CAPS, **kw
    )


# ------------------------------------------------------------------ worked examples


def test_the_example_from_the_issue() -> None:
    # 11 min 20 s of video, billed per started minute: 12 minutes x $0.19 = $2.28.
    r = rate(680)
    assert r.explanation.splitlines()[0] == "12 minutes at $0.19/min = $2.28"
    assert (r.billed_units, r.billed_unit, r.billed_minutes) == (12, "minute", Decimal(12))
    assert r.rate_per_minute == r.cap_per_minute == Money.parse("0.19")
    assert r.additive_per_minute == ZERO
    assert r.usage == r.total == r.amount_for(FAMILY) == Money.parse("2.28")
    assert r.cap_period == "fcc-25-75" and r.tier == "Medium jails (ADP 350-999)"
    assert "billed as 12 minutes" in r.explanation
    assert "Charged to family account A-1001: $2.28." in r.explanation


@pytest.mark.parametrize(
    ("seconds", "minutes", "total"),
    [(0, 0, "0.00"), (1, 1, "0.19"), (59, 1, "0.19"), (60, 1, "0.19"), (61, 2, "0.38"),
     (600, 10, "1.90"), (36_000, 600, "114.00")],
)
def test_per_minute_round_up(seconds: int, minutes: int, total: str) -> None:
    r = rate(seconds)
    assert r.billed_units == minutes and r.billed_seconds == minutes * 60
    assert r.total == Money.parse(total)


@pytest.mark.parametrize(
    ("seconds", "total", "minutes"),
    [
        (680, "2.15", Decimal("11.3333")),  # 0.19 x 680 / 60 = 2.1533...: down to $2.15
        (30, "0.09", Decimal("0.5")),  # 0.095: down to $0.09
        (60, "0.19", Decimal(1)),
        (0, "0.00", Decimal(0)),
    ],
)
def test_per_second(seconds: int, total: str, minutes: Decimal) -> None:
    r = rate(seconds, increment="per_second")
    assert (r.billed_units, r.billed_unit, r.billed_minutes) == (seconds, "second", minutes)
    assert r.total == Money.parse(total)


def test_per_second_explains_the_rounding() -> None:
    r = rate(680, increment="per_second")
    assert r.explanation.splitlines()[0] == (
        "11 minutes 20 seconds at $0.19/min = $2.15 (exact $2.153333..., rounded down to the cent)"
    )


def test_additive_and_tax_are_separate_lines() -> None:
    f = jail(apply_additive=True, taxes=(PassThroughTax("County 911 surcharge", Decimal("2.5")),))
    r = rate(680, facility=f)
    # usage 12 x $0.19 = $2.28; additive 12 x $0.02 = $0.24; tax 2.5% of $2.52 = $0.063 -> $0.06.
    assert [(line.kind, line.label, line.amount) for line in r.lines] == [
        (ChargeKind.USAGE, "usage", Money.parse("2.28")),
        (ChargeKind.USAGE, "additive", Money.parse("0.24")),
        (ChargeKind.TAX, "tax:County 911 surcharge", Money.parse("0.06")),
    ]
    assert (r.usage, r.additive, r.tax, r.total) == tuple(
        Money.parse(x) for x in ("2.28", "0.24", "0.06", "2.58")
    )
    assert r.additive_per_minute == Money.parse("0.02")
    lines = r.explanation.splitlines()
    assert "Facility cost additive (FCC 25-75): 12 minutes at $0.02/min = $0.24" in lines
    assert (
        "County 911 surcharge: 2.5% of $2.52 = $0.06 (exact $0.063, rounded down to the cent)"
        in lines
    )
    assert "Total: $2.58." in lines


def test_no_additive_before_fcc_25_75() -> None:
    r = rate(600, facility=jail(apply_additive=True), at=datetime(2026, 1, 5, tzinfo=UTC))
    assert r.additive_per_minute == ZERO and r.additive == ZERO
    assert r.total == Money.parse("1.20")  # 10 x $0.12


def test_agency_pays_everything_family_pays_nothing_but_it_is_metered() -> None:
    r = rate(680, split=PayerSplit.single(STATE))
    assert r.total == r.amount_for(STATE) == Money.parse("2.28")
    assert r.amount_for(FAMILY) == ZERO
    assert "Billed to State DOC: $2.28." in r.explanation
    assert "The family pays $0.00 for this call." in r.explanation


def test_dated_cost_sharing() -> None:
    # State pays 35% from 1 May 2026 and 100% from 1 July 2026.
    split = PayerSplit.dated(
        (date(2026, 1, 1), {FAMILY: 100}),
        (date(2026, 5, 1), {STATE: "35", FAMILY: "65"}),
        (date(2026, 7, 1), {STATE: 100}),
    )
    april = rate(680, split=split, at=datetime(2026, 4, 20, 12, tzinfo=UTC))
    assert april.amount_for(FAMILY) == Money.parse("2.28")
    # May: $2.28 -> 35% = 79.8 cents, 65% = 148.2 cents; the spare cent goes to the
    # larger remainder (0.8): state $0.80, family $1.48, together exactly $2.28.
    may = rate(680, split=split)
    assert may.amount_for(STATE) == Money.parse("0.80")
    assert may.amount_for(FAMILY) == Money.parse("1.48")
    assert "Shared: State DOC 35%: $0.80; family account A-1001 65%: $1.48." in may.explanation
    july = rate(680, split=split, at=datetime(2026, 7, 2, 12, tzinfo=UTC))
    assert july.amount_for(STATE) == Money.parse("2.28") and july.amount_for(FAMILY) == ZERO


@pytest.mark.parametrize(
    ("free", "increment", "covered_s", "total"),
    [
        (5, "per_minute_round_up", 300, "1.33"),  # 12 billed - 5 free = 7 x $0.19
        (20, "per_minute_round_up", 720, "0.00"),  # all 12 billed minutes free
        (Decimal("2.5"), "per_minute_round_up", 150, "1.80"),  # 9.5 x 0.19 = 1.805
        (5, "per_second", 300, "1.20"),  # 380 s x 0.19 / 60 = 1.2033
        (0, "per_minute_round_up", 0, "2.28"),
    ],
)
def test_free_minutes(free: int | Decimal, increment: str, covered_s: int, total: str) -> None:
    r = rate(680, free_minutes_remaining=free, increment=increment)
    assert r.free_seconds_covered == covered_s
    assert r.free_minutes_covered == Decimal(covered_s) / 60
    assert r.chargeable_seconds == r.billed_seconds - covered_s
    assert r.total == Money.parse(total)
    if covered_s:
        assert "Free time used from the daily allowance" in r.explanation


def test_free_minutes_also_spare_the_additive() -> None:
    r = rate(680, facility=jail(apply_additive=True), free_minutes_remaining=5)
    assert r.additive == Money.parse("0.14")  # 7 x $0.02


def test_rate_at_call_start_applies_to_the_whole_call() -> None:
    chicago = jail(timezone="America/Chicago")
    # 23:50 on 5 April in Chicago (04:50 UTC on 6 April), 30 minutes long: the whole
    # call is billed at the 2024 rate and cap in force when it started.
    start = datetime(2026, 4, 6, 4, 50, tzinfo=UTC)
    r = rate(30 * 60, facility=chicago, at=start)
    assert r.rating_date == date(2026, 4, 5) and r.cap_period == "fcc-24-75"
    assert r.rate_per_minute == Money.parse("0.12") and r.total == Money.parse("3.60")
    later = rate(30 * 60, facility=chicago, at=start + timedelta(minutes=15))
    assert later.rating_date == NEW and later.total == Money.parse("5.70")


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: rate(-1), "media_seconds"),
        (lambda: rate(1.5), "media_seconds"),  # type: ignore[arg-type]
        (lambda: rate(True), "media_seconds"),
        (lambda: rate(60, at=datetime(2026, 5, 2, 15, 0)), "started_at: naive"),
        (lambda: rate(60, increment="per_6_seconds"), "increment"),
        (lambda: rate(60, service="sms"), "service"),
        (lambda: rate(60, free_minutes_remaining=-1), "free_minutes_remaining"),
        (lambda: rate(60, free_minutes_remaining=Decimal("0.001")), "free_minutes_remaining"),
        (lambda: rate(60, free_minutes_remaining=1.5), "free_minutes_remaining"),
        (lambda: rate(60, split="family"), "split"),  # type: ignore[arg-type]
        (lambda: rate(60, split=PayerSplit.single(FAMILY, date(2027, 1, 1))), "split"),
        (lambda: rate(60, facility=jail(facility_type="camp")), "facility_type"),
        (lambda: rate(60, facility=jail(adp=-1)), "adp"),
        (lambda: rate(60, at=datetime(2024, 6, 1, tzinfo=UTC)), "no FCC cap table"),
        (lambda: rate_call("jail", "video", MAY_2, 60, split=FAMILY_PAYS), "facility"),  # type: ignore[arg-type]
    ],
)
def test_bad_input_is_a_value_error_naming_the_field(call: Any, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        call()


def test_rate_above_cap_is_refused_at_rating_time_too() -> None:
    # A facility built without validate_facility still cannot bill above the cap.
    f = Facility("county-jail", "jail", 420, (RateEntry("video", NEW, Money.parse("0.25")),))
    with pytest.raises(RateAboveCapError, match=r"\$0\.25/min .* cap of \$0\.19/min"):
        rate(60, facility=f)


def test_split_validation() -> None:
    with pytest.raises(ValueError, match="exactly 100%"):
        SplitPeriod.of(NEW, {FAMILY: "60", STATE: "39"})
    with pytest.raises(ValueError, match="above 0"):
        SplitPeriod.of(NEW, {FAMILY: 100, STATE: 0})
    with pytest.raises(ValueError, match="appears twice"):
        SplitPeriod(NEW, ((FAMILY, Decimal(50)), (FAMILY, Decimal(50))))
    with pytest.raises(ValueError, match="increasing date order"):
        PayerSplit.dated((NEW, {FAMILY: 100}), (OLD, {FAMILY: 100}))
    with pytest.raises(ValueError, match="payer kind"):
        Payer("vendor", "X")  # type: ignore[arg-type]


# ------------------------------------------------------------------ no fees, ever


def test_the_only_charge_kinds_are_usage_tax_and_credit() -> None:
    assert {k.value for k in ChargeKind} == {"usage", "tax", "credit"}
    f = jail(apply_additive=True, taxes=(PassThroughTax("State tax", Decimal("6")),))
    assert {line.kind for line in rate(680, facility=f).lines} <= {ChargeKind.USAGE, ChargeKind.TAX}
    with pytest.raises(ValueError, match="kind"):
        ChargeLine("fee", "convenience fee", Money.parse("3"), Fraction(0), "", ())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="credit must be"):
        ChargeLine(ChargeKind.CREDIT, "refund", Money.parse("1"), Fraction(0), "", ())


def test_rating_is_deterministic_and_idempotent() -> None:
    f = jail(apply_additive=True, taxes=(PassThroughTax("State tax", Decimal("6.25")),))
    split = PayerSplit.dated((OLD, {STATE: "33.33", FAMILY: "66.67"}))
    a = rate(1234, facility=f, split=split, free_minutes_remaining=3)
    b = rate(1234, facility=f, split=split, free_minutes_remaining=3)
    assert a == b and hash(a) == hash(b)
    # Re-rating from what the Rating records gives the same Rating.
    again = rate_call(
        f, a.service, a.started_at, a.media_seconds, split=split, increment=a.increment,
        free_minutes_remaining=a.free_minutes_remaining, caps=CAPS,
    )
    assert again == a


# ------------------------------------------------------------------ properties

# A few ADPs in every tier of both tables, plus any ADP at all.
TIER_POINTS = [("prison", 0), ("prison", 12_000)] + [
    ("jail", adp) for adp in (0, 49, 50, 99, 100, 349, 350, 999, 1000, 25_000)
]


@st.composite
def facilities(draw: st.DrawFn) -> Facility:
    ftype, adp = draw(
        st.one_of(
            st.sampled_from(TIER_POINTS),
            st.tuples(st.sampled_from(["prison", "jail"]), st.integers(0, 5000)),
        )
    )
    rates = []
    for period in CAPS.periods:
        tier = period.classify(ftype, adp)  # type: ignore[arg-type]
        for service in ("audio", "video"):
            cap = period.cap(tier, service)
            micros = draw(st.one_of(st.just(cap.micros), st.integers(0, cap.micros)))
            rates.append(RateEntry(service, period.effective_from, Money(micros)))
    taxes = draw(
        st.lists(
            st.decimals(min_value=Decimal("0.01"), max_value=Decimal("15"), places=3),
            max_size=2,
        )
    )
    f = Facility(
        "f-1", ftype, adp, tuple(rates), apply_additive=draw(st.booleans()),  # type: ignore[arg-type]
        taxes=tuple(PassThroughTax(f"tax {i}", pct) for i, pct in enumerate(taxes)),
    )
    return validate_facility(f, CAPS)


@st.composite
def splits(draw: st.DrawFn) -> PayerSplit:
    n = draw(st.integers(1, 3))
    cuts = sorted(draw(st.sets(st.integers(1, 9999), min_size=n - 1, max_size=n - 1)))
    bounds = [0, *cuts, 10_000]
    payers = [FAMILY, STATE, Payer("agency", "NONPROFIT")][:n]
    shares = {
        p: Decimal(hi - lo) / 100 for p, lo, hi in zip(payers, bounds, bounds[1:], strict=False)
    }
    return PayerSplit.dated((date(2025, 1, 1), shares))


calls = st.fixed_dictionaries(
    {
        "facility": facilities(),
        "service": st.sampled_from(["audio", "video"]),
        "day": st.dates(min_value=date(2025, 1, 1), max_value=date(2032, 12, 31)),
        "clock": st.times(),
        "media_seconds": st.integers(0, 10 * 3600),
        "increment": st.sampled_from(["per_minute_round_up", "per_second"]),
        "split": splits(),
        "free": st.one_of(st.just(0), st.integers(0, 120)),
    }
)


def run(c: dict[str, Any]) -> Rating:
    return rate_call(
        c["facility"], c["service"],
        datetime.combine(c["day"], c["clock"], tzinfo=UTC),
        c["media_seconds"], split=c["split"], increment=c["increment"],
        free_minutes_remaining=c["free"], caps=CAPS,
    )


@settings(max_examples=400, deadline=None)
@given(calls)
def test_never_more_than_cap_times_billed_minutes(c: dict[str, Any]) -> None:
    r = run(c)
    f: Facility = c["facility"]
    cap = CAPS.cap(f.facility_type, f.adp, c["service"], c["day"])
    additive = CAPS.additive_on(c["day"]) if f.apply_additive else ZERO
    billed_minutes = Fraction(r.billed_seconds, 60)
    assert r.cap_per_minute == cap and r.additive_per_minute == additive
    assert r.usage.micros <= cap.micros * billed_minutes
    assert r.additive.micros <= additive.micros * billed_minutes
    assert (r.usage + r.additive).micros <= (cap + additive).micros * billed_minutes
    # ... and never more than one cent under the exact amount (rounded down once).
    exact_usage = r.rate_per_minute.micros * Fraction(r.chargeable_seconds, 60)
    assert 0 <= exact_usage - r.usage.micros < MICROS_PER_CENT
    # Taxes are exactly their percentage of usage + additive, rounded down once.
    base = r.usage + r.additive
    for tax, line in zip(f.taxes, [x for x in r.lines if x.kind is ChargeKind.TAX], strict=True):
        exact_tax = base.micros * Fraction(tax.percent) / 100
        assert 0 <= exact_tax - line.amount.micros < MICROS_PER_CENT
    assert r.billed_seconds >= r.media_seconds
    assert r.billed_seconds - r.media_seconds < (60 if c["increment"] != "per_second" else 1)


@settings(max_examples=300, deadline=None)
@given(calls)
def test_payer_split_loses_nothing(c: dict[str, Any]) -> None:
    r = run(c)
    for line in r.lines:
        assert line.amount.is_whole_cents
        assert sum((m for _, m in line.by_payer), ZERO) == line.amount
    assert sum((p.total for p in r.payers), ZERO) == r.total
    assert sum((line.amount for line in r.lines), ZERO) == r.total
    for p in r.payers:
        assert p.total.micros >= 0 and p.total.is_whole_cents
        assert r.amount_for(p.payer) == p.total


@settings(max_examples=150, deadline=None)
@given(calls)
def test_rating_is_a_pure_function(c: dict[str, Any]) -> None:
    a, b = run(c), run(c)
    assert a == b
    first = a.explanation.splitlines()[0]
    assert re.fullmatch(
        r"(\d+ minutes?( \d+ seconds?)?|\d+ seconds?) at \$\d+\.\d{2,6}/min = \$\d+\.\d\d.*", first
    )
    assert a.total.format() in a.explanation
    assert a.explanation.count("\n") >= 2  # arithmetic, total, who pays, rate and cap


def test_media_longer_than_the_test_range_still_rates() -> None:
    r = rate(10 * 3600 + 1)
    assert r.billed_units == 601


def test_start_time_in_any_aware_zone_is_the_same_instant() -> None:
    eastern = timezone(timedelta(hours=-4))
    a = rate(60, at=datetime.combine(date(2026, 5, 2), time(11, 0), tzinfo=eastern))
    b = rate(60, at=MAY_2)  # 15:00 UTC, the same instant
    assert a.rating_date == b.rating_date and a.lines == b.lines and a.total == b.total
