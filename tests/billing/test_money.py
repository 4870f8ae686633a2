"""Money: exact micro-dollars, one rounding rule (down to the cent), exact splits."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.billing.money import (
    MICROS_PER_CENT,
    ZERO,
    Money,
    allocate,
    round_down_to_cent,
)

# ------------------------------------------------------------------ parsing and formatting


@pytest.mark.parametrize(
    ("text", "micros"),
    [
        ("0.25", 250_000),
        ("$1.05", 1_050_000),
        ("1", 1_000_000),
        ("0.5", 500_000),
        ("0.065", 65_000),
        ("0.000001", 1),
        ("-0.10", -100_000),
        ("-$0.10", -100_000),
        (" $2.28 ", 2_280_000),
    ],
)
def test_parse(text: str, micros: int) -> None:
    assert Money.parse(text) == Money(micros)


@pytest.mark.parametrize(
    "text", ["", "$", "abc", "1.", ".5", "1e3", "0.0000001", "1,000.00", "$-1", "nan", "+1"]
)
def test_parse_refuses_bad_text_naming_the_field(text: str) -> None:
    with pytest.raises(ValueError, match="amount"):
        Money.parse(text)


def test_parse_refuses_floats() -> None:
    with pytest.raises(ValueError, match="amount"):
        Money.parse(0.25)  # type: ignore[arg-type]


def test_constructor_refuses_floats_and_bools() -> None:
    with pytest.raises(ValueError, match="micros"):
        Money(0.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="micros"):
        Money(True)


@pytest.mark.parametrize(
    ("micros", "text"),
    [
        (250_000, "$0.25"),
        (2_280_000, "$2.28"),
        (0, "$0.00"),
        (65_000, "$0.065"),
        (1, "$0.000001"),
        (-100_000, "-$0.10"),
        (1_234_500_000, "$1,234.50"),
    ],
)
def test_format(micros: int, text: str) -> None:
    assert str(Money(micros)) == text


def test_decimal_round_trip_is_exact() -> None:
    assert Money.parse("0.19").to_decimal() == Decimal("0.19")
    assert Money.from_decimal(Decimal("0.19")) == Money.parse("0.19")
    with pytest.raises(ValueError, match="micro-dollars"):
        Money.from_decimal(Decimal("0.0000005"))


def test_cents() -> None:
    assert Money.from_cents(228) == Money.parse("2.28")
    assert Money.parse("2.28").cents == 228
    assert not Money.parse("0.065").is_whole_cents
    with pytest.raises(ValueError, match="whole number of cents"):
        _ = Money.parse("0.065").cents


@given(st.integers(min_value=-(10**15), max_value=10**15))
def test_format_parse_round_trip(micros: int) -> None:
    text = Money(micros).format().replace(",", "")
    assert Money.parse(text) == Money(micros)


# ------------------------------------------------------------------ arithmetic


def test_arithmetic_is_exact() -> None:
    # Ten cents added ten times is exactly one dollar (it is not with floats).
    total = ZERO
    for _ in range(10):
        total += Money.parse("0.10")
    assert total == Money.parse("1.00")
    assert Money.parse("0.19") * 12 == Money.parse("2.28")
    assert 12 * Money.parse("0.19") == Money.parse("2.28")
    assert Money.parse("2.28") - Money.parse("0.28") == Money.parse("2")
    assert -Money.parse("1") == Money.parse("-1")
    assert Money.parse("0.19") < Money.parse("0.21")


def test_no_float_multiplication() -> None:
    with pytest.raises(TypeError):
        _ = Money.parse("0.19") * 1.5  # type: ignore[operator]


# ------------------------------------------------------------------ the rounding rule


@pytest.mark.parametrize(
    ("exact", "charged"),
    [
        # $0.19/min for 680 s = 0.19 * 680 / 60 = $2.153333...: charged $2.15.
        (Fraction(190_000 * 680, 60), "2.15"),
        (Fraction(2_280_000), "2.28"),  # already whole cents: unchanged
        (Fraction(9_999), "0.00"),  # 0.9999 cent: nothing, never rounded up
        (Fraction(10_000), "0.01"),
        (63_000, "0.06"),  # 2.5% of $2.52 = $0.063
        (Fraction(-15_000), "-0.01"),  # a credit is never larger than the exact credit
    ],
)
def test_round_down_to_cent(exact: Fraction | int, charged: str) -> None:
    assert round_down_to_cent(exact) == Money.parse(charged)


def test_round_down_refuses_floats() -> None:
    with pytest.raises(ValueError, match="exact_micros"):
        round_down_to_cent(1.5)  # type: ignore[arg-type]


@given(
    st.fractions(min_value=Fraction(-(10**12)), max_value=Fraction(10**12), max_denominator=10**6)
)
def test_rounding_never_exceeds_the_exact_amount(exact: Fraction) -> None:
    charged = round_down_to_cent(exact)
    assert charged.is_whole_cents
    assert abs(charged.micros) <= abs(exact)
    assert abs(exact) - abs(charged.micros) < MICROS_PER_CENT


# ------------------------------------------------------------------ allocation


def test_allocate_worked_examples() -> None:
    # $2.58 shared 35% / 65%: exact quotas 90.3 and 167.7 cents; floors 90 and 167;
    # the cent left over goes to the larger remainder (0.7): $0.90 and $1.68.
    assert allocate(Money.parse("2.58"), [Decimal("35"), Decimal("65")]) == [
        Money.parse("0.90"),
        Money.parse("1.68"),
    ]
    # $1.00 three ways: 33.33... each; one cent left, all remainders equal, so the
    # first payer gets it (ties go to the earlier payer, for determinism).
    assert allocate(Money.parse("1.00"), [1, 1, 1]) == [
        Money.parse("0.34"),
        Money.parse("0.33"),
        Money.parse("0.33"),
    ]
    assert allocate(Money.parse("0.01"), [50, 50]) == [Money.parse("0.01"), ZERO]
    assert allocate(Money.parse("2.28"), [100]) == [Money.parse("2.28")]
    assert allocate(Money.parse("-1.00"), [1, 2]) == [Money.parse("-0.33"), Money.parse("-0.67")]
    assert allocate(Money.parse("0.10"), [0, 1]) == [ZERO, Money.parse("0.10")]


def test_allocate_in_micro_dollars() -> None:
    assert allocate(Money(10), [1, 2], unit=1) == [Money(3), Money(7)]


def test_allocate_bad_input() -> None:
    with pytest.raises(ValueError, match="weights"):
        allocate(Money.parse("1"), [])
    with pytest.raises(ValueError, match="weights"):
        allocate(Money.parse("1"), [0, 0])
    with pytest.raises(ValueError, match=r"weights\[1\]"):
        allocate(Money.parse("1"), [1, -1])
    with pytest.raises(ValueError, match=r"weights\[0\]"):
        allocate(Money.parse("1"), [0.5])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="amount"):
        allocate(Money.parse("0.065"), [1])  # not whole cents
    with pytest.raises(ValueError, match="unit"):
        allocate(Money.parse("1"), [1], unit=0)


weights = st.lists(
    st.one_of(
        st.integers(min_value=0, max_value=10_000),
        st.decimals(min_value=0, max_value=100, places=4, allow_nan=False, allow_infinity=False),
    ),
    min_size=1,
    max_size=6,
).filter(lambda ws: sum(Fraction(w) for w in ws) > 0)


@given(st.integers(min_value=-(10**9), max_value=10**9), weights)
def test_allocation_loses_nothing(cents: int, ws: list[int | Decimal]) -> None:
    amount = Money.from_cents(cents)
    parts = allocate(amount, ws)
    assert len(parts) == len(ws)
    assert sum(parts, ZERO) == amount
    total_weight = sum(Fraction(w) for w in ws)
    for part, w in zip(parts, ws, strict=True):
        assert part.is_whole_cents
        quota = Fraction(amount.micros) * Fraction(w) / total_weight
        assert abs(part.micros - quota) < MICROS_PER_CENT  # within one unit of exact
        if w == 0:
            assert part == ZERO


@given(st.integers(min_value=0, max_value=10**12), weights)
def test_allocation_to_the_micro_dollar(micros: int, ws: list[int | Decimal]) -> None:
    parts = allocate(Money(micros), ws, unit=1)
    assert sum(parts, ZERO) == Money(micros)
    assert allocate(Money(micros), ws, unit=1) == parts  # deterministic
