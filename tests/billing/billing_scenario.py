"""A month of real billing activity for the export, statement and API tests.

Calls go through the real ledger path (:class:`CallLedger`: reserve, settle, credit,
CDR), with a settable clock, so CDRs and ledger entries are what production writes.
Call ids and times are fixed: the same scenario gives the same records on SQLite and
PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal

from gateway.billing.accounts import Accounts
from gateway.billing.calls import CallLedger
from gateway.billing.cdr import Cdr
from gateway.billing.db import Database
from gateway.billing.money import Money
from gateway.billing.rates import Facility, RateEntry
from gateway.billing.session import (
    CallRequest,
    ChargingSession,
    EndInfo,
    PayerRef,
    Refusal,
    SessionPolicy,
)

USD = Money.parse
FACILITY = Facility(
    id="county-jail", facility_type="jail", adp=420,
    rates=(RateEntry("video", date(2026, 4, 6), USD("0.19")),
           RateEntry("audio", date(2026, 4, 6), USD("0.12"))),
)
OTHER = Facility(id="state-prison", facility_type="prison", adp=2000,
                 rates=(RateEntry("video", date(2026, 4, 6), USD("0.16")),))
POLICY = SessionPolicy(first_block_seconds=300, warning_seconds=120, hold_ttl_seconds=900)


def at(day: str, hms: str = "12:00:00") -> datetime:
    return datetime.fromisoformat(f"{day}T{hms}+00:00")


class FixedClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Scenario:
    db: Database
    clock: FixedClock = field(default_factory=lambda: FixedClock(at("2026-04-01")))
    cdrs: dict[str, Cdr] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.accounts = Accounts(self.db, clock=self.clock, actor="test")
        self.ledger = CallLedger(self.accounts, {FACILITY.id: FACILITY, OTHER.id: OTHER})

    def call(self, call_id: str, payers: tuple[PayerRef, ...], *, when: datetime,
             media: float, ended_by: str = "caller", reason: str = "BYE",
             facility: Facility = FACILITY, caller: str = "kiosk-1",
             callee: str = "5551234", service: str = "video") -> Cdr:
        self.clock.now = when
        request = CallRequest(
            call_id=call_id, node_id="node-1", plan="test", facility_id=facility.id,
            service=service, caller=caller, callee=callee,  # type: ignore[arg-type]
            setup_at=when, payers=payers)
        result = self.ledger.reserve(request, POLICY)
        assert not isinstance(result, Refusal), result
        session = ChargingSession(result.reservation, facility, POLICY, result.funds)
        answered = when + timedelta(seconds=2)
        session.answered(answered.timestamp())
        self.clock.now = answered + timedelta(seconds=media)
        settle = session.end(EndInfo(self.clock.now.timestamp(), reason,
                                     ended_by), media)  # type: ignore[arg-type]
        cdr, wrote = self.ledger.settle(settle)
        assert wrote
        self.cdrs[call_id] = cdr
        return cdr

    def deposit(self, account: str, amount: str, when: datetime, key: str) -> None:
        self.clock.now = when
        self.accounts.deposit(account, USD(amount), idempotency_key=key, memo="card payment")


def build(db: Database) -> Scenario:
    """Accounts jane (visitor), roe (visitor), state-doc (agency); calls in April, May, June.

    May 2026 for jane: a deposit, a 12.5-minute call ($2.47), a call that dropped after
    100 s ($0.38, the last minute $0.19 credited), a call shared 65/35 with the state
    ($0.95: jane $0.62), a refund and an adjustment.  One call at another facility.
    """
    sc = Scenario(db)
    a = sc.accounts
    sc.clock.now = at("2026-04-01", "08:00:00")
    a.open_account("visitor", "jane-doe", "Jane Doe", account_id="jane")
    a.open_account("visitor", "5559876", "Richard Roe", account_id="roe")
    a.open_account("agency", "state", "State DOC", account_id="state-doc")
    sc.deposit("jane", "20.00", at("2026-04-02"), "dep-jane-1")
    sc.deposit("roe", "15.00", at("2026-04-02", "13:00:00"), "dep-roe-1")
    jane = (PayerRef("jane"),)
    sc.call("call-apr-1", jane, when=at("2026-04-20"), media=185)  # 4 min = $0.76
    sc.deposit("jane", "10.00", at("2026-05-03", "09:30:00"), "dep-jane-2")
    sc.call("call-may-1", jane, when=at("2026-05-05", "18:00:00"), media=750)  # 13 min
    sc.call("call-may-2", jane, when=at("2026-05-10", "19:00:00"), media=100,
            ended_by="timeout", reason="media timeout")  # dropped: credited
    sc.call("call-may-3", (PayerRef("jane", Decimal(65)), PayerRef("state-doc", Decimal(35))),
            when=at("2026-05-12", "20:15:00"), media=290, callee="jane-doe")
    sc.call("call-may-4", (PayerRef("roe"),), when=at("2026-05-14"), media=61,
            facility=OTHER, caller="kiosk-9", callee="5559876")
    sc.call("call-may-5", (PayerRef("roe"),), when=at("2026-05-31", "23:50:00"), media=0,
            caller="kiosk-9", callee="5559876", reason="487 Request Terminated")
    sc.clock.now = at("2026-05-20")
    a.refund("jane", USD("1.00"), idempotency_key="refund-jane-1", memo="duplicate payment")
    sc.clock.now = at("2026-05-25")
    a.adjust("jane", USD("0.50"), idempotency_key="adj-jane-1", memo="goodwill")
    sc.call("call-jun-1", jane, when=at("2026-06-01", "00:00:00"), media=30)
    return sc
