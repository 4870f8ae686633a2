"""Call detail records and the receipt a family reads.

A CDR is written once per call, in the same database transaction as the
call's settlement (:mod:`gateway.billing.calls`), and never changed: it is the
record of who called whom, when, for how long, at what rate under which FCC
cap, what each payer was charged and credited, and why the call ended.

The receipt (``gateway billing receipt --call ID``) is that record explained in
plain words, first the arithmetic a family can check by hand::

    12 minutes at $0.19/min = $2.28; credited $0.19 because the call dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from gateway.billing.db import Database
from gateway.billing.models import CallRecord
from gateway.billing.money import Money

FUNDS_EXHAUSTED = "prepaid balance exhausted"  # the hang-up reason when money runs out
RECOVERED_CAUSE = "gateway restarted; the call was lost"


@dataclass(frozen=True)
class Cdr:
    """A call detail record, detached from the database session."""

    call_id: str
    visit_id: str | None
    node_id: str
    facility_id: str
    tier: str
    cap_period: str
    service: str
    caller: str
    callee: str
    payers: tuple[tuple[str, str, str], ...]  # (kind, account, share percent)
    setup_at: datetime
    answer_at: datetime | None
    end_at: datetime
    media_seconds: int
    metered_seconds: int
    uncharged_seconds: int
    increment: str
    billed_units: int
    billed_unit: str
    rate_per_minute: Money
    cap_per_minute: Money
    additive_per_minute: Money
    total: Money
    amounts: dict[str, Money]
    credit_total: Money
    credits: dict[str, Money]
    credit_reason: str
    lines: tuple[dict[str, str], ...]
    explanation: str
    disconnect_cause: str
    ended_by: str
    sip_status: int | None
    low_balance_warning: int | None
    quality: Any
    recovered: bool
    settle_entry_id: int
    created_at: datetime
    free_seconds_used: int = 0  # of the payer's daily free minutes, not charged

    @classmethod
    def from_row(cls, row: CallRecord) -> Cdr:
        return cls(
            call_id=row.call_id, visit_id=row.visit_id, node_id=row.node_id,
            facility_id=row.facility_id, tier=row.tier, cap_period=row.cap_period,
            service=row.service, caller=row.caller, callee=row.callee,
            payers=tuple((str(k), str(a), str(s)) for k, a, s in row.payers),
            setup_at=row.setup_at, answer_at=row.answer_at, end_at=row.end_at,
            media_seconds=row.media_seconds, metered_seconds=row.metered_seconds,
            uncharged_seconds=row.uncharged_seconds, increment=row.increment,
            billed_units=row.billed_units, billed_unit=row.billed_unit,
            rate_per_minute=Money(row.rate_per_minute), cap_per_minute=Money(row.cap_per_minute),
            additive_per_minute=Money(row.additive_per_minute), total=Money(row.total),
            amounts={a: Money(int(m)) for a, m in row.amounts.items()},
            credit_total=Money(row.credit_total),
            credits={a: Money(int(m)) for a, m in row.credits.items()},
            credit_reason=row.credit_reason,
            lines=tuple({str(k): str(v) for k, v in li.items()} for li in row.lines),
            explanation=row.explanation, disconnect_cause=row.disconnect_cause,
            ended_by=row.ended_by, sip_status=row.sip_status,
            low_balance_warning=row.low_balance_warning, quality=row.quality,
            recovered=row.recovered, settle_entry_id=row.settle_entry_id,
            created_at=row.created_at, free_seconds_used=row.free_seconds_used or 0,
        )

    def paid(self, account: str) -> Money:
        """What the account paid for the call after credits."""
        return self.amounts.get(account, Money(0)) - self.credits.get(account, Money(0))

    @property
    def net(self) -> Money:
        return self.total - self.credit_total

    def as_dict(self) -> dict[str, Any]:
        """Every field, amounts as µ$ integers and times as ISO UTC (for exports)."""
        return {
            "call_id": self.call_id, "visit_id": self.visit_id, "node_id": self.node_id,
            "facility_id": self.facility_id, "tier": self.tier, "cap_period": self.cap_period,
            "service": self.service, "caller": self.caller, "callee": self.callee,
            "payers": [list(p) for p in self.payers],
            "setup_at": _iso(self.setup_at), "answer_at": _iso(self.answer_at),
            "end_at": _iso(self.end_at), "media_seconds": self.media_seconds,
            "metered_seconds": self.metered_seconds,
            "uncharged_seconds": self.uncharged_seconds, "increment": self.increment,
            "billed_units": self.billed_units, "billed_unit": self.billed_unit,
            "rate_per_minute_micros": self.rate_per_minute.micros,
            "cap_per_minute_micros": self.cap_per_minute.micros,
            "additive_per_minute_micros": self.additive_per_minute.micros,
            "total_micros": self.total.micros,
            "amounts_micros": {a: m.micros for a, m in self.amounts.items()},
            "credit_total_micros": self.credit_total.micros,
            "credits_micros": {a: m.micros for a, m in self.credits.items()},
            "credit_reason": self.credit_reason, "disconnect_cause": self.disconnect_cause,
            "ended_by": self.ended_by, "sip_status": self.sip_status,
            "low_balance_warning_seconds": self.low_balance_warning, "quality": self.quality,
            "recovered": self.recovered, "settle_entry_id": self.settle_entry_id,
        }


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def get_cdr(db: Database, call_id: str) -> Cdr | None:
    with db.read() as s:
        row = s.get(CallRecord, call_id)
        return Cdr.from_row(row) if row is not None else None


def list_cdrs(db: Database, *, account: str | None = None,
              limit: int | None = None) -> list[Cdr]:
    """CDRs in call order, optionally only those ``account`` paid a share of."""
    with db.read() as s:
        rows = s.scalars(select(CallRecord).order_by(CallRecord.setup_at, CallRecord.call_id))
        out = [Cdr.from_row(r) for r in rows]
    if account is not None:
        out = [c for c in out if any(a == account for _, a, _ in c.payers)]
    return out if limit is None else out[:limit]


# ---------------------------------------------------------------------- the receipt


def _duration(seconds: int) -> str:
    m, s = divmod(seconds, 60)
    parts = []
    if m:
        parts.append(f"{m} minute{'s' if m != 1 else ''}")
    if s or not m:
        parts.append(f"{s} second{'s' if s != 1 else ''}")
    return " ".join(parts)


def how_it_ended(cdr: Cdr) -> str:
    """Why the call ended, in a sentence."""
    if cdr.recovered:
        return ("The call was cut off when the gateway restarted. It was charged only up to "
                "the last moment the gateway recorded it.")
    if cdr.answer_at is None and cdr.media_seconds == 0:
        return f"The call did not connect ({cdr.disconnect_cause}). Nothing was charged."
    if cdr.disconnect_cause == FUNDS_EXHAUSTED:
        warned = ""
        if cdr.low_balance_warning is not None:
            warned = (f" A low-balance warning was given {_duration(cdr.low_balance_warning)} "
                      "before.")
        return f"The call was ended because the prepaid balance ran out.{warned}"
    if cdr.ended_by == "caller":
        return "The call ended when the caller hung up."
    if cdr.ended_by == "callee":
        return "The call ended when the person called hung up."
    if cdr.credit_total.micros > 0:
        return f"The call dropped ({cdr.disconnect_cause})."
    return f"The call was ended by the system ({cdr.disconnect_cause})."


def free_time_note(cdr: Cdr) -> str:
    """E.g. "First 10 minutes free today (daily free-minute allowance)." ("" if none)."""
    if not cdr.free_seconds_used:
        return ""
    return f"First {_duration(cdr.free_seconds_used)} free today (daily free-minute allowance)."


def summary(cdr: Cdr) -> str:
    """The one line to read first: the arithmetic, any credit, what was paid."""
    first = cdr.explanation.splitlines()[0] if cdr.explanation else f"Total {cdr.total}"
    parts = [first]
    if cdr.free_seconds_used:
        parts.insert(0, f"First {_duration(cdr.free_seconds_used)} free today")
    if cdr.credit_total.micros > 0:
        parts.append(f"credited {cdr.credit_total} because the call dropped")
    text = "; ".join(parts) + "."
    if cdr.credit_total.micros > 0:
        text += f" Total after credit: {cdr.net}."
    return text


def receipt(cdr: Cdr) -> dict[str, Any]:
    """The receipt for one call, as JSON-ready data with plain-language sentences."""
    payers = []
    for kind, account, share in cdr.payers:
        charged = cdr.amounts.get(account, Money(0))
        credited = cdr.credits.get(account, Money(0))
        payers.append({
            "account": account,
            "kind": kind,
            "share_percent": share,
            "charged": str(charged),
            "credited": str(credited),
            "paid": str(charged - credited),
        })
    notes: list[str] = []
    if cdr.free_seconds_used:
        notes.append(free_time_note(cdr))
    if cdr.uncharged_seconds:
        notes.append(f"{_duration(cdr.uncharged_seconds)} after the balance ran out were not "
                     "charged.")
    if cdr.credit_reason:
        notes.append(f"Credit: {cdr.credit_reason}.")
    return {
        "call_id": cdr.call_id,
        "visit_id": cdr.visit_id,
        "summary": summary(cdr),
        "how_it_ended": how_it_ended(cdr),
        "facility": cdr.facility_id,
        "service": cdr.service,
        "from": cdr.caller,
        "to": cdr.callee,
        "started_at": _iso(cdr.setup_at),
        "answered_at": _iso(cdr.answer_at),
        "ended_at": _iso(cdr.end_at),
        "call_time": _duration(cdr.media_seconds),
        "billed": _billed(cdr),
        "rate": f"{cdr.rate_per_minute}/min",
        "fcc_cap": {"per_minute": f"{cdr.cap_per_minute}/min", "tier": cdr.tier,
                    "order": cdr.cap_period},
        "charges": [dict(li) for li in cdr.lines],
        "free_today": _duration(cdr.free_seconds_used) if cdr.free_seconds_used else None,
        "total": str(cdr.total),
        "credits": [{"account": a, "amount": str(m)} for a, m in cdr.credits.items()],
        "total_after_credits": str(cdr.net),
        "payers": payers,
        "notes": notes,
        "details": cdr.explanation.splitlines(),
    }


def _billed(cdr: Cdr) -> str:
    if cdr.billed_unit == "minute":
        return f"{cdr.billed_units} minute{'s' if cdr.billed_units != 1 else ''}"
    return _duration(cdr.billed_units)
