"""Exact money for billing: integer micro-dollars (USD), never floats.

Families have been overcharged by opaque rounding, so every amount here is an
integer number of micro-dollars (1 USD = 1,000,000 µ$) and there is exactly one
rounding rule, :func:`round_down_to_cent`:

    An amount to charge is worked out exactly first (possibly a fraction of a
    µ$, e.g. $0.19/min x 61 s / 60), then rounded DOWN (floor) to a whole cent,
    once.  The family is therefore never debited more than the exact amount,
    and never more than cap x minutes.  The operator loses less than one cent
    per rounded line; that is the intended direction of the error.

Splitting an amount among payers never rounds: :func:`allocate` uses the
largest-remainder method, so the parts are whole units and sum exactly.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

MICROS_PER_DOLLAR = 1_000_000
MICROS_PER_CENT = 10_000

_AMOUNT_RE = re.compile(r"^(-)?\$?([0-9]+)(?:\.([0-9]{1,6}))?$")


def _require_int(value: object, field: str) -> int:
    """Accept a real int only: bools and floats are mistakes in money code."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{field}: expected an integer, got {value!r}")
    return value


@dataclass(frozen=True, order=True, slots=True)
class Money:
    """An exact USD amount in integer micro-dollars; immutable and hashable."""

    micros: int

    def __post_init__(self) -> None:
        _require_int(self.micros, "micros")

    # ------------------------------------------------------------ construction

    @classmethod
    def zero(cls) -> Money:
        return cls(0)

    @classmethod
    def parse(cls, text: str) -> Money:
        """Parse "0.25", "$1.05", "-0.10" or "-$0.10"; at most 6 decimals.

        Strings, not floats, so that "0.1" means exactly ten cents.  More than
        six decimal places cannot be held exactly and is refused, not rounded.
        """
        if not isinstance(text, str):
            raise ValueError(f"amount: expected a decimal string like \"0.25\", got {text!r}")
        m = _AMOUNT_RE.match(text.strip())
        if m is None:
            raise ValueError(
                f"amount: expected a dollar amount like \"0.25\" or \"$1.05\" "
                f"(at most 6 decimal places), got {text!r}"
            )
        sign, whole, frac = m.groups()
        micros = int(whole) * MICROS_PER_DOLLAR + int((frac or "").ljust(6, "0"))
        return cls(-micros if sign else micros)

    @classmethod
    def from_decimal(cls, value: Decimal) -> Money:
        """Exact conversion from a Decimal number of dollars; refuses to round."""
        if not isinstance(value, Decimal) or not value.is_finite():
            raise ValueError(f"amount: expected a finite Decimal, got {value!r}")
        scaled = value * MICROS_PER_DOLLAR
        if scaled != scaled.to_integral_value():
            raise ValueError(f"amount: {value} dollars is not a whole number of micro-dollars")
        return cls(int(scaled))

    @classmethod
    def from_cents(cls, cents: int) -> Money:
        return cls(_require_int(cents, "cents") * MICROS_PER_CENT)

    # ------------------------------------------------------------ conversion

    def to_decimal(self) -> Decimal:
        """The exact amount in dollars."""
        return Decimal(self.micros).scaleb(-6)

    @property
    def is_whole_cents(self) -> bool:
        return self.micros % MICROS_PER_CENT == 0

    @property
    def cents(self) -> int:
        """Whole cents; raises if the amount has a fraction of a cent."""
        if not self.is_whole_cents:
            raise ValueError(f"{self} is not a whole number of cents")
        return self.micros // MICROS_PER_CENT

    def format(self) -> str:
        """"$0.25", "-$1.05", "$0.065": at least 2 decimals, more only if needed."""
        sign = "-" if self.micros < 0 else ""
        whole, frac = divmod(abs(self.micros), MICROS_PER_DOLLAR)
        digits = f"{frac:06d}".rstrip("0").ljust(2, "0")
        return f"{sign}${whole:,}.{digits}"

    def __str__(self) -> str:
        return self.format()

    def __repr__(self) -> str:
        return f"Money('{self.format().replace('$', '').replace(',', '')}')"

    # ------------------------------------------------------------ arithmetic

    def __add__(self, other: Money) -> Money:
        if not isinstance(other, Money):
            return NotImplemented
        return Money(self.micros + other.micros)

    def __sub__(self, other: Money) -> Money:
        if not isinstance(other, Money):
            return NotImplemented
        return Money(self.micros - other.micros)

    def __neg__(self) -> Money:
        return Money(-self.micros)

    def __mul__(self, factor: int) -> Money:
        """Multiply by a whole count (minutes, calls); exact.  No floats."""
        if isinstance(factor, bool) or not isinstance(factor, int):
            return NotImplemented
        return Money(self.micros * factor)

    __rmul__ = __mul__


ZERO = Money(0)


def round_down_to_cent(exact_micros: Fraction | int) -> Money:
    """THE rounding rule: floor an exact amount (in µ$) to a whole cent.

    Never rounds up, so what a family is debited is never more than the exact
    amount.  Used once per charge line, in :mod:`gateway.billing.rating`.
    Negative amounts (credits) are floored toward zero in magnitude as well, so
    a credit is never larger than the exact credit either.
    """
    if isinstance(exact_micros, bool) or not isinstance(exact_micros, int | Fraction):
        raise ValueError(f"exact_micros: expected an int or Fraction, got {exact_micros!r}")
    exact = Fraction(exact_micros)
    magnitude = abs(exact) // MICROS_PER_CENT  # floor of a non-negative Fraction
    cents = int(magnitude)
    return Money.from_cents(-cents if exact < 0 else cents)


def allocate(
    amount: Money, weights: Sequence[int | Decimal], unit: int = MICROS_PER_CENT
) -> list[Money]:
    """Split ``amount`` by ``weights`` into whole ``unit`` parts that sum exactly.

    Largest-remainder (Hamilton) method: each part gets the floor of its exact
    quota; the units left over go one each to the largest fractional remainders,
    ties to the earlier payer, so the result is deterministic.  Nothing is lost
    or invented: ``sum(parts) == amount`` always.  ``amount`` must be a whole
    number of ``unit`` (cents by default, since debits are in cents).
    """
    _require_int(unit, "unit")
    if unit <= 0:
        raise ValueError(f"unit: expected a positive number of micro-dollars, got {unit}")
    if not weights:
        raise ValueError("weights: expected at least one weight")
    exact_weights: list[Fraction] = []
    for i, w in enumerate(weights):
        if isinstance(w, bool) or not isinstance(w, int | Decimal):
            raise ValueError(f"weights[{i}]: expected an int or Decimal, got {w!r}")
        if isinstance(w, Decimal) and not w.is_finite():
            raise ValueError(f"weights[{i}]: expected a finite number, got {w}")
        fw = Fraction(w)
        if fw < 0:
            raise ValueError(f"weights[{i}]: expected a weight >= 0, got {w}")
        exact_weights.append(fw)
    total_weight = sum(exact_weights, Fraction(0))
    if total_weight == 0:
        raise ValueError("weights: at least one weight must be positive")
    if amount.micros % unit:
        raise ValueError(f"amount: {amount} is not a whole number of units of {unit} µ$")
    negative = amount.micros < 0
    units = abs(amount.micros) // unit
    quotas = [units * w / total_weight for w in exact_weights]
    floors = [int(q) for q in quotas]  # quotas are >= 0, so int() is floor
    leftover = units - sum(floors)
    order = sorted(range(len(quotas)), key=lambda i: (-(quotas[i] - floors[i]), i))
    for i in order[:leftover]:
        floors[i] += 1
    sign = -1 if negative else 1
    return [Money(sign * n * unit) for n in floors]
