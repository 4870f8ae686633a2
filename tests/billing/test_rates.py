"""FCC caps as data, tier classification, and facility rates checked against caps."""

from __future__ import annotations

import copy
import tomllib
from datetime import UTC, date, datetime
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.billing.money import ZERO, Money
from gateway.billing.rates import (
    CapDataError,
    Facility,
    RateAboveCapError,
    RateEntry,
    additive_for,
    cap_for,
    load_caps,
    load_facility,
    parse_caps,
    rate_for,
    validate_facility,
)

CAPS = load_caps()
BEFORE = date(2026, 4, 5)  # last day of the 2024 caps
AFTER = date(2026, 4, 6)  # first day of the 2025 interim caps


def raw_caps() -> dict[str, Any]:
    text = resources.files("gateway.billing").joinpath("caps.toml").read_text("utf-8")
    return tomllib.loads(text)


def facility(
    facility_type: str = "jail", adp: int | Decimal = 420, rates: tuple[RateEntry, ...] = (),
    **kw: Any,
) -> Facility:
    return Facility("county-jail", facility_type, adp, rates, **kw)  # type: ignore[arg-type]


# ------------------------------------------------------------------ the cap tables


# Every figure in caps.toml.  2024: Table One of 89 FR 77244.  2025: the Prison
# Policy Initiative table of the final order (secondary; not yet checked against
# 47 CFR 64.6030 as amended by FR Doc 2025-22125).
EXPECTED = [
    # (date, facility type, ADP, audio, video)
    (BEFORE, "prison", 5000, "0.06", "0.16"),
    (BEFORE, "jail", 1000, "0.06", "0.11"),
    (BEFORE, "jail", 350, "0.07", "0.12"),
    (BEFORE, "jail", 100, "0.09", "0.14"),
    (BEFORE, "jail", 99, "0.12", "0.25"),
    (BEFORE, "jail", 0, "0.12", "0.25"),  # no 0-49 tier in the 2024 caps
    (AFTER, "prison", 5000, "0.11", "0.25"),
    (AFTER, "jail", 1000, "0.10", "0.19"),
    (AFTER, "jail", 350, "0.12", "0.19"),
    (AFTER, "jail", 100, "0.13", "0.21"),
    (AFTER, "jail", 50, "0.15", "0.25"),
    (AFTER, "jail", 49, "0.19", "0.44"),
    (AFTER, "jail", 0, "0.19", "0.44"),
]


@pytest.mark.parametrize(("on", "ftype", "adp", "audio", "video"), EXPECTED)
def test_cap_figures(on: date, ftype: str, adp: int, audio: str, video: str) -> None:
    assert CAPS.cap(ftype, adp, "audio", on) == Money.parse(audio)
    assert CAPS.cap(ftype, adp, "video", on) == Money.parse(video)


def test_periods_and_dates() -> None:
    first, second = CAPS.periods
    assert (first.id, first.effective_from, first.effective_to) == (
        "fcc-24-75", date(2025, 1, 1), date(2026, 4, 5)
    )
    assert (second.id, second.effective_from, second.effective_to) == (
        "fcc-25-75", date(2026, 4, 6), None
    )
    assert first.additive is None
    assert second.additive is not None and second.additive.per_minute == Money.parse("0.02")


def test_every_figure_says_how_far_it_was_checked() -> None:
    for period in CAPS.periods:
        assert period.sources and period.checked
        for tier in period.tiers:
            assert period.tier_checked[tier.id]
    # The 2024 start date is from secondary sources only: say so.
    assert "from secondary sources only" in CAPS.periods[0].checked
    # The 2025 per-tier figures come from a secondary source (the Prison Policy
    # Initiative table of the final order) and were not verified against the
    # rule text: say both, and name the source.
    second = CAPS.periods[1]
    assert "FROM A SECONDARY SOURCE" in second.checked
    assert "NOT YET CHECKED AGAINST THE RULE TEXT" in second.checked
    assert any("prisonpolicy.org" in s for s in second.sources)
    for tier in second.tiers:
        tier_checked = second.tier_checked[tier.id]
        assert "(secondary)" in tier_checked
        assert "not yet checked against the rule text" in tier_checked
    # The additive's amount and uniform structure are from secondary sources;
    # only its existence and separateness are checked against the FR summary.
    additive = second.additive
    assert additive is not None
    assert "agree across secondary sources" in additive.checked
    assert "not yet checked against the rule text" in additive.checked
    assert "checked against the FR Doc 2025-22125 summary" in additive.checked


@pytest.mark.parametrize(
    ("ftype", "adp", "on", "tier"),
    [
        ("prison", 0, AFTER, "prison"),
        ("prison", 40_000, AFTER, "prison"),
        ("jail", 1000, AFTER, "jail_large"),
        ("jail", 999, AFTER, "jail_medium"),
        ("jail", 350, AFTER, "jail_medium"),
        ("jail", 349, AFTER, "jail_small"),
        ("jail", Decimal("349.6"), AFTER, "jail_small"),  # ADP is an average
        ("jail", 100, AFTER, "jail_small"),
        ("jail", Decimal("99.99"), AFTER, "jail_very_small"),
        ("jail", 50, AFTER, "jail_very_small"),
        ("jail", 49, AFTER, "jail_extremely_small"),
        ("jail", 0, AFTER, "jail_extremely_small"),
        ("jail", 49, BEFORE, "jail_very_small"),
    ],
)
def test_classify(ftype: str, adp: int | Decimal, on: date, tier: str) -> None:
    assert CAPS.classify(ftype, adp, on).id == tier


@given(
    st.sampled_from(["prison", "jail"]),
    st.one_of(
        st.integers(min_value=0, max_value=100_000),
        st.decimals(min_value=0, max_value=100_000, places=2),
    ),
    st.dates(min_value=date(2025, 1, 1), max_value=date(2035, 12, 31)),
)
def test_every_facility_falls_in_exactly_one_tier(
    ftype: str, adp: int | Decimal, on: date
) -> None:
    period = CAPS.period_on(on)
    matches = [t for t in period.tiers if t.contains(ftype, adp)]  # type: ignore[arg-type]
    assert len(matches) == 1


@pytest.mark.parametrize(
    ("ftype", "adp", "service", "field"),
    [
        ("camp", 10, "audio", "facility_type"),
        ("Jail", 10, "audio", "facility_type"),
        ("jail", -1, "audio", "adp"),
        ("jail", Decimal("-0.5"), "audio", "adp"),
        ("jail", 10.5, "audio", "adp"),
        ("jail", True, "audio", "adp"),
        ("jail", "10", "audio", "adp"),
        ("jail", 10, "sms", "service"),
    ],
)
def test_bad_classification_input_names_the_field(
    ftype: object, adp: object, service: object, field: str
) -> None:
    with pytest.raises(ValueError, match=field):
        CAPS.cap(ftype, adp, service, AFTER)


def test_no_cap_known_before_2025() -> None:
    with pytest.raises(ValueError, match="no FCC cap table covers 2024-12-31"):
        CAPS.period_on(date(2024, 12, 31))


# ------------------------------------------------------------------ caps.toml checks


def test_caps_data_errors_are_refused() -> None:
    data = raw_caps()
    bad = copy.deepcopy(data)
    bad["period"][1]["effective_from"] = date(2026, 4, 5)  # overlaps the 2024 period
    with pytest.raises(CapDataError, match="overlap"):
        parse_caps(bad)
    bad = copy.deepcopy(data)
    bad["period"][1]["tier"][3]["adp_min"] = 101  # gap: ADP 100 would have no tier
    with pytest.raises(CapDataError, match="contiguous"):
        parse_caps(bad)
    bad = copy.deepcopy(data)
    bad["period"][0]["tier"][0]["audio"] = 0.06  # a float: refused
    with pytest.raises(CapDataError, match="decimal string"):
        parse_caps(bad)
    bad = copy.deepcopy(data)
    del bad["period"][0]["checked"]
    with pytest.raises(CapDataError, match="checked"):
        parse_caps(bad)


def test_load_caps_from_a_file(tmp_path: Path) -> None:
    src = resources.files("gateway.billing").joinpath("caps.toml").read_text("utf-8")
    path = tmp_path / "caps.toml"
    path.write_text(src, "utf-8")
    assert load_caps(path).periods == CAPS.periods
    path.write_text("schema = [", "utf-8")
    with pytest.raises(CapDataError, match=str(path)):
        load_caps(path)


# ------------------------------------------------------------------ facilities


def test_cap_rate_and_additive_for_a_facility() -> None:
    f = facility(
        rates=(
            RateEntry("video", date(2025, 1, 1), Money.parse("0.12")),
            RateEntry("video", AFTER, Money.parse("0.19")),
        ),
        apply_additive=True,
    )
    assert cap_for(f, "video", BEFORE) == Money.parse("0.12")
    assert cap_for(f, "video", AFTER) == Money.parse("0.19")
    assert rate_for(f, "video", BEFORE) == Money.parse("0.12")
    assert rate_for(f, "video", AFTER) == Money.parse("0.19")
    assert additive_for(f, BEFORE) == ZERO  # no additive under the 2024 caps
    assert additive_for(f, AFTER) == Money.parse("0.02")
    assert additive_for(facility(apply_additive=False), AFTER) == ZERO
    with pytest.raises(ValueError, match="no audio rate configured"):
        rate_for(f, "audio", AFTER)
    with pytest.raises(ValueError, match="service"):
        rate_for(f, "fax", AFTER)


def test_rate_at_the_cap_is_accepted() -> None:
    f = facility(
        rates=(
            RateEntry("audio", date(2025, 1, 1), Money.parse("0.07")),  # under both caps
            RateEntry("video", date(2025, 1, 1), Money.parse("0.12")),
            RateEntry("video", AFTER, Money.parse("0.19")),
        )
    )
    assert validate_facility(f, CAPS) is f


def test_rate_above_cap_names_facility_service_date_and_amounts() -> None:
    f = facility(rates=(RateEntry("video", AFTER, Money.parse("0.20")),))
    with pytest.raises(RateAboveCapError) as err:
        validate_facility(f, CAPS)
    msg = str(err.value)
    for part in ("'county-jail'", "video", "$0.20/min", "$0.19/min", "2026-04-06",
                 "Medium jails"):
        assert part in msg


def test_rate_spanning_into_lower_cap_is_refused_on_the_first_day_it_breaks() -> None:
    # $0.10 audio from 2026-04-06 is fine; $0.10 from 2025-06-01 is over the 2024
    # cap ($0.07 for a medium jail) until 2026-04-05, so it is refused.
    f = facility(rates=(RateEntry("audio", date(2025, 6, 1), Money.parse("0.10")),))
    with pytest.raises(RateAboveCapError, match=r"\$0\.07/min .* on 2025-06-01 \(fcc-24-75\)"):
        validate_facility(f, CAPS)
    # A later entry ends the earlier one's span: then it is accepted.
    ok = facility(
        rates=(
            RateEntry("audio", date(2025, 6, 1), Money.parse("0.07")),
            RateEntry("audio", AFTER, Money.parse("0.12")),
        )
    )
    validate_facility(ok, CAPS)
    # ... but not if the later cap is lower than the rate carried over.
    small = facility(
        adp=60, rates=(RateEntry("video", date(2025, 1, 1), Money.parse("0.25")),)
    )
    validate_facility(small, CAPS)  # very small jail video: $0.25 under both tables


def test_additive_is_not_part_of_the_rate() -> None:
    # Folding the $0.02 additive into the rate exceeds the cap: refused, with a hint.
    f = facility(rates=(RateEntry("video", AFTER, Money.parse("0.21")),), apply_additive=True)
    with pytest.raises(RateAboveCapError, match="additive of \\$0.02/min is billed as a separate"):
        validate_facility(f, CAPS)


def test_rate_on_a_day_with_no_known_cap_is_refused() -> None:
    f = facility(rates=(RateEntry("audio", date(2024, 12, 1), Money.parse("0.01")),))
    with pytest.raises(RateAboveCapError, match="2024-12-01, when no FCC cap table is known"):
        validate_facility(f, CAPS)


def test_facility_field_errors() -> None:
    with pytest.raises(ValueError, match="facility_type"):
        facility("camp")
    with pytest.raises(ValueError, match="adp"):
        facility(adp=-1)
    with pytest.raises(ValueError, match="timezone"):
        facility(timezone="Mars/Olympus")
    with pytest.raises(ValueError, match="facility id"):
        Facility("", "jail", 10, ())
    with pytest.raises(ValueError, match="two audio rates from 2026-04-06"):
        facility(rates=(RateEntry("audio", AFTER, Money.parse("0.1")),) * 2)
    with pytest.raises(ValueError, match="per_minute"):
        RateEntry("audio", AFTER, Money.parse("-0.01"))
    with pytest.raises(ValueError, match="service"):
        RateEntry("sms", AFTER, Money.parse("0.01"))  # type: ignore[arg-type]


def test_local_date_uses_the_facility_time_zone() -> None:
    f = facility(timezone="America/Chicago")
    # 03:00 UTC on 6 April is 22:00 on 5 April in Chicago: still the 2024 caps.
    assert f.local_date(datetime(2026, 4, 6, 3, 0, tzinfo=UTC)) == BEFORE
    with pytest.raises(ValueError, match="started_at: naive datetime"):
        f.local_date(datetime(2026, 4, 6, 3, 0))


# ------------------------------------------------------------------ facility config


def config(**over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": "county-jail",
        "type": "jail",
        "adp": 420,
        "timezone": "America/Chicago",
        "apply_additive": True,
        "rate": [
            {"service": "audio", "effective_from": AFTER, "per_minute": "0.12"},
            {"service": "video", "effective_from": AFTER, "per_minute": "0.19"},
        ],
        "tax": [{"name": "County 911 surcharge", "percent": "2.5"}],
    }
    data.update(over)
    return data


def test_load_facility() -> None:
    f = load_facility(config(), CAPS)
    assert f.id == "county-jail" and f.facility_type == "jail" and f.adp == 420
    assert f.apply_additive and f.timezone == "America/Chicago"
    assert f.taxes[0].percent == Decimal("2.5")
    assert rate_for(f, "video", AFTER) == Money.parse("0.19")
    assert load_facility(config(adp="349.5"), CAPS).adp == Decimal("349.5")


@pytest.mark.parametrize(
    ("over", "needle"),
    [
        ({"type": "camp"}, "facility 'county-jail': facility_type"),
        ({"adp": -3}, "facility 'county-jail': adp"),
        ({"adp": 420.0}, "facility 'county-jail': adp"),
        ({"colour": "red"}, "unknown keys colour"),
        ({"fee": "3.00"}, "unknown keys fee"),
        ({"rate": [{"service": "video", "effective_from": AFTER, "per_minute": 0.19}]},
         "rate\\[0\\]: per_minute"),
        ({"rate": [{"service": "video", "effective_from": "2026-04-06", "per_minute": "0.19"}]},
         "rate\\[0\\]: effective_from"),
        ({"rate": [{"service": "video", "effective_from": AFTER, "per_minute": "0.30"}]},
         "above the FCC cap"),
        ({"tax": [{"name": "Markup", "percent": "150"}]}, "tax\\[0\\]: tax percent"),
        ({"tax": [{"name": "", "percent": "1"}]}, "tax\\[0\\]: tax name"),
        ({"timezone": "Nowhere/Else"}, "timezone"),
        ({"apply_additive": "yes"}, "apply_additive"),
    ],
)
def test_load_facility_errors(over: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        load_facility(config(**over), CAPS)
