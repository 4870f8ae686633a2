"""Charging sessions against the real ledger (SQLite and PostgreSQL), time and media faked.

A small synchronous harness plays the part of the Twisted service: it reserves,
ticks the sans-IO session with a FakeMeter and a settable clock, runs each
Tick's ledger work with :class:`CallLedger`, and settles.  The facility is a
medium jail at the FCC cap of $0.19/min for video, billed per started minute
unless a test says otherwise, so the arithmetic can be checked by hand.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from gateway.billing.accounts import Accounts
from gateway.billing.calls import CallLedger, OpenCall
from gateway.billing.cdr import FUNDS_EXHAUSTED, Cdr, get_cdr, receipt
from gateway.billing.db import Database
from gateway.billing.models import CallStart, Entry
from gateway.billing.money import ZERO, Money
from gateway.billing.rates import Facility, PassThroughTax, RateEntry
from gateway.billing.rating import Payer, PayerSplit, SplitPeriod, rate_call
from gateway.billing.session import (
    CallFacts,
    CallRequest,
    ChargingSession,
    CreditPolicy,
    EndInfo,
    LowBalance,
    OutOfFunds,
    PayerRef,
    Pricer,
    Refusal,
    SessionPolicy,
    Tick,
    increment_key,
)

USD = Money.parse
FAC = Facility(
    id="county-jail", facility_type="jail", adp=420,
    rates=(RateEntry("video", date(2026, 4, 6), USD("0.19")),),
)
TAXED = Facility(
    id="taxed-jail", facility_type="jail", adp=420,
    rates=(RateEntry("video", date(2026, 4, 6), USD("0.19")),),
    apply_additive=True, taxes=(PassThroughTax("State tax", Decimal("5")),),
)
STARTED = datetime(2026, 5, 2, 15, 0, tzinfo=UTC)
POLICY = SessionPolicy(first_block_seconds=300, warning_seconds=120, hold_ttl_seconds=900)


class Harness:
    """The service's part, synchronously: reserve, tick, apply, settle."""

    def __init__(self, db: Database, clock: Any, facility: Facility = FAC,
                 policy: SessionPolicy = POLICY) -> None:
        self.clock = clock
        self.accounts = Accounts(db, clock=clock, actor="test")
        self.ledger = CallLedger(self.accounts, {facility.id: facility})
        self.facility = facility
        self.policy = policy
        self.ticks: list[Tick] = []
        self.answered_at = 0.0
        self.free_minutes_per_day = 0  # the plan's daily allowance

    def now(self) -> float:
        return self.clock.now.timestamp()

    def account(self, kind: str = "visitor", deposit: str | None = "10.00") -> str:
        ref = uuid.uuid4().hex[:10]
        acct = self.accounts.open_account(kind, ref).id
        if deposit is not None:
            self.accounts.deposit(acct, USD(deposit), idempotency_key=f"{acct}:d")
        return acct

    def request(self, *payers: PayerRef) -> CallRequest:
        return CallRequest(
            call_id=f"call-{uuid.uuid4().hex[:12]}", node_id="node-1", plan="test",
            facility_id=self.facility.id, service="video", caller="kiosk-1",
            callee="5551234", setup_at=self.clock.now, payers=payers,
            free_minutes_per_day=self.free_minutes_per_day,
        )

    def start(self, *payers: PayerRef) -> ChargingSession:
        result = self.ledger.reserve(self.request(*payers), self.policy)
        assert not isinstance(result, Refusal), result
        session = ChargingSession(result.reservation, self.facility, self.policy, result.funds)
        session.answered(self.now())
        self.answered_at = self.now()
        return session

    def at(self, session: ChargingSession, media: float) -> Tick:
        """Move the clock to ``media`` seconds after the answer and tick."""
        self.clock.now = self.clock.now + timedelta(
            seconds=self.answered_at + media - self.now())
        tick = session.tick(self.now(), media)
        self.ticks.append(tick)
        if tick.has_io:
            session.applied(self.ledger.apply_tick(session.facts, tick))
        return tick

    def run(self, session: ChargingSession, until: float, step: float = 10.0) -> list[Tick]:
        out = []
        t = 0.0
        while t < until:
            t = min(until, t + step)
            out.append(self.at(session, t))
        return out

    def end(self, session: ChargingSession, media: float, ended_by: str = "caller",
            reason: str = "BYE", deliberate: bool = False) -> Cdr:
        self.clock.now = self.clock.now + timedelta(
            seconds=max(0.0, self.answered_at + media - self.now()))
        request = session.end(EndInfo(self.now(), reason, ended_by, None, deliberate), media)
        cdr, wrote = self.ledger.settle(request)
        assert wrote
        return cdr

    def paid_for(self, call_id: str, account: str) -> Money:
        """What the account's balance lost to the call (charges minus credits)."""
        total = 0
        for e in self.accounts.entries_for_call(call_id):
            if e.kind in ("charge", "credit"):
                total -= sum(p.amount for p in e.postings if p.account_id == account)
        return Money(total)


@pytest.fixture
def h(db: Database, clock: Any) -> Harness:
    return Harness(db, clock)


def family(acct: str, share: str = "100") -> PayerRef:
    return PayerRef(acct, Decimal(share))


# ---------------------------------------------------------------------- reservation


def test_a_call_reserves_its_first_block(h: Harness) -> None:
    a = h.account(deposit="10.00")
    s = h.start(family(a))
    bal = h.accounts.balance(a)
    assert (bal.held, bal.available) == (USD("0.95"), USD("9.05"))  # 5 minutes at $0.19
    assert s.affordable is not None and s.affordable == 52 * 60  # $10.00 buys 52 minutes
    assert [e.kind for e in h.accounts.entries_for_call(s.call_id)] == ["hold"]


def test_a_payer_who_cannot_cover_the_first_increment_is_refused(
    h: Harness, db: Database
) -> None:
    a = h.account(deposit="0.18")
    request = h.request(family(a))
    result = h.ledger.reserve(request, POLICY)
    assert isinstance(result, Refusal) and result.status == 402
    assert result.reason == "Insufficient funds" and "$0.18 available" in result.detail
    with db.read() as s:
        assert s.get(CallStart, request.call_id) is None
    assert h.accounts.balance(a).held == ZERO
    # Less than a block but enough for a minute: the call goes ahead, holding what there is.
    b = h.account(deposit="0.50")
    h.start(family(b))
    assert h.accounts.balance(b).held == USD("0.50")


def test_unknown_or_closed_payers_are_refused(h: Harness) -> None:
    result = h.ledger.reserve(h.request(family("no-such-account")), POLICY)
    assert isinstance(result, Refusal) and result.status == 480


# ---------------------------------------------------------------------- increments


def test_each_completed_increment_is_debited_once_under_its_key(h: Harness) -> None:
    a = h.account(deposit="10.00")
    s = h.start(family(a))
    assert not h.at(s, 59.9).charges  # the first minute is not complete yet
    tick = h.at(s, 60.0)
    assert [c.idempotency_key for c in tick.charges] == [increment_key(s.call_id, 1)]
    tick = h.at(s, 185.0)  # a late tick catches up, in order
    assert [c.index for c in tick.charges] == [2, 3]
    assert s.increments == 3 and h.paid_for(s.call_id, a) == USD("0.57")
    # The ledger answer to increment 3 was "lost": posting it again writes nothing.
    again = h.ledger.apply_tick(s.facts, replace(tick, extensions=()))
    assert again.debited == 2 and h.paid_for(s.call_id, a) == USD("0.57")
    cdr = h.end(s, 185.0)
    assert cdr.total == USD("0.76") and h.paid_for(s.call_id, a) == USD("0.76")  # 4 minutes
    bal = h.accounts.balance(a)
    assert (bal.held, bal.balance) == (ZERO, USD("9.24"))


def test_the_hold_is_extended_when_it_runs_low(h: Harness) -> None:
    a = h.account(deposit="20.00")
    s = h.start(family(a))
    extended = [t for t in h.run(s, 600) if t.extensions]
    assert extended, "a 10-minute call on a 5-minute hold must extend it"
    hold = h.accounts.hold(s.facts.holds[0][1])
    assert hold is not None and hold.active
    assert hold.amount >= USD("0.19") and hold.expires_at is not None
    assert hold.expires_at > h.clock.now + timedelta(seconds=POLICY.hold_ttl_seconds / 2)
    cdr = h.end(s, 600)
    assert cdr.total == USD("1.90") and h.accounts.balance(a).balance == USD("18.10")
    assert h.accounts.balance(a).held == ZERO


# ---------------------------------------------------------------------- warning and cut-off


def test_a_warning_comes_first_then_the_call_is_cut_off_at_zero(h: Harness) -> None:
    a = h.account(deposit="1.00")  # 5 minutes at $0.19 ($0.95), $0.05 left over
    s = h.start(family(a))
    assert s.affordable == 300
    assert h.at(s, 170).events == ()
    assert s.deadline(h.now(), 170) == pytest.approx(h.now() + 10)  # the warning, on time
    tick = h.at(s, 180)
    assert tick.events == (LowBalance(s.call_id, 120, (a,)),)
    assert s.deadline(h.now(), 180) == pytest.approx(h.now() + 120)  # the cut-off
    assert all(h.at(s, t).events == () for t in (200, 250, 299.9))
    tick = h.at(s, 300.2)
    assert tick.events == (OutOfFunds(s.call_id, 300),)
    assert h.at(s, 301).events == ()  # said once
    cdr = h.end(s, 302.5, "gateway", FUNDS_EXHAUSTED, deliberate=True)
    assert (cdr.media_seconds, cdr.metered_seconds, cdr.uncharged_seconds) == (300, 302, 2)
    assert cdr.total == USD("0.95") and cdr.credit_total == ZERO
    assert cdr.low_balance_warning == 120 and cdr.disconnect_cause == FUNDS_EXHAUSTED
    assert h.accounts.balance(a).balance == USD("0.05")
    r = receipt(cdr)
    assert r["summary"] == "5 minutes at $0.19/min = $0.95."
    assert r["how_it_ended"] == ("The call was ended because the prepaid balance ran out. "
                                 "A low-balance warning was given 2 minutes before.")
    assert "2 seconds after the balance ran out were not charged." in r["notes"]


def test_with_little_money_the_warning_comes_at_once(h: Harness) -> None:
    a = h.account(deposit="0.40")  # 2 minutes
    s = h.start(family(a))
    tick = h.at(s, 0.5)
    assert tick.events == (LowBalance(s.call_id, 119, (a,)),)
    tick = h.at(s, 120.0)
    assert [type(e) for e in tick.events] == [OutOfFunds]
    cdr = h.end(s, 120.0, "gateway", FUNDS_EXHAUSTED, deliberate=True)
    assert cdr.total == USD("0.38") and h.accounts.balance(a).balance == USD("0.02")


def test_a_deposit_during_the_call_moves_the_cut_off(h: Harness) -> None:
    a = h.account(deposit="0.40")
    s = h.start(family(a))
    h.at(s, 30)
    h.accounts.deposit(a, USD("5.00"), idempotency_key=f"{a}:top-up")
    h.at(s, 60)  # the increment's ledger round trip reads the new balance
    assert s.affordable is not None and s.affordable > 20 * 60
    assert not [e for e in h.at(s, 125).events if isinstance(e, OutOfFunds)]


def test_spending_elsewhere_never_takes_a_prepaid_account_below_zero(h: Harness) -> None:
    a = h.account(deposit="1.00")
    s = h.start(family(a))  # holds $0.95
    h.accounts.refund(a, USD("0.05"), idempotency_key=f"{a}:out")  # the rest is gone
    h.run(s, 600)  # past the funds: the session cut off at 300 s and debits no further
    cdr = h.end(s, 600, "gateway", FUNDS_EXHAUSTED, deliberate=True)
    assert cdr.total == USD("0.95") and h.accounts.balance(a).balance == ZERO
    assert h.accounts.verify().ok


# ---------------------------------------------------------------------- settlement


def test_settlement_makes_the_total_exactly_the_rating_of_the_whole_call(
    db: Database, clock: Any
) -> None:
    h = Harness(db, clock, TAXED, replace(POLICY, increment="per_second", increment_seconds=45))
    a, state = h.account(deposit="20.00"), h.account("agency", deposit=None)
    s = h.start(family(a, "65"), PayerRef(state, Decimal("35")))
    h.run(s, 187.4, step=7.3)
    cdr = h.end(s, 187.4)
    split = PayerSplit((SplitPeriod(date.min, ((Payer("family", a), Decimal(65)),
                                               (Payer("agency", state), Decimal(35)))),))
    expected = rate_call(TAXED, "video", s.facts.setup_at, 187, split=split,
                         increment="per_second")
    assert cdr.total == expected.total
    assert h.paid_for(s.call_id, a) == expected.amount_for(Payer("family", a))
    assert h.paid_for(s.call_id, state) == expected.amount_for(Payer("agency", state))
    assert cdr.amounts == {a: expected.amount_for(Payer("family", a)),
                           state: expected.amount_for(Payer("agency", state))}
    kinds = [e.kind for e in h.accounts.entries_for_call(s.call_id)]
    assert kinds.count("charge") == 4 + 1  # 4 increments of 45 s, then the settlement


def test_settling_twice_writes_nothing_the_second_time(h: Harness, db: Database) -> None:
    a = h.account()
    s = h.start(family(a))
    h.run(s, 130)
    request = s.end(EndInfo(h.now(), "BYE", "callee"), 130)
    first, wrote = h.ledger.settle(request)
    with db.read() as q:
        entries = q.scalar(select(func.count()).select_from(Entry))
    again, wrote_again = h.ledger.settle(request)
    with db.read() as q:
        assert q.scalar(select(func.count()).select_from(Entry)) == entries
    assert wrote and not wrote_again and again == first
    assert get_cdr(db, s.call_id) == first


def test_an_increment_whose_answer_was_lost_is_not_charged_again(h: Harness) -> None:
    a = h.account()
    s = h.start(family(a))
    tick = s.tick(h.now() + 125, 125)
    h.ledger.apply_tick(s.facts, tick)  # posted, but the session never heard back
    s.busy = False
    cdr = h.end(s, 125)
    assert cdr.total == USD("0.57") and h.paid_for(s.call_id, a) == USD("0.57")


def test_a_call_cancelled_before_the_answer_costs_nothing(h: Harness) -> None:
    a = h.account(deposit="3.00")
    result = h.ledger.reserve(h.request(family(a)), POLICY)
    assert not isinstance(result, Refusal)
    s = ChargingSession(result.reservation, FAC, POLICY, result.funds)
    cdr, _ = h.ledger.settle(s.end(EndInfo(h.now(), "487 Request Terminated", "caller"), 0))
    assert (cdr.total, cdr.media_seconds, cdr.answer_at) == (ZERO, 0, None)
    bal = h.accounts.balance(a)
    assert (bal.held, bal.available) == (ZERO, USD("3.00"))
    assert receipt(cdr)["how_it_ended"].startswith("The call did not connect")


# ---------------------------------------------------------------------- dropped calls


def test_a_dropped_call_is_credited_its_last_started_minute(h: Harness) -> None:
    a = h.account(deposit="10.00")
    s = h.start(family(a))
    h.run(s, 190)
    cdr = h.end(s, 190, "timeout", "session timer expired")
    assert cdr.total == USD("0.76") and cdr.credits == {a: USD("0.19")}
    assert h.paid_for(s.call_id, a) == USD("0.57")
    assert h.accounts.balance(a).balance == USD("9.43")
    r = receipt(cdr)
    assert r["summary"] == ("4 minutes at $0.19/min = $0.76; credited $0.19 because the call "
                            "dropped. Total after credit: $0.57.")
    assert r["payers"] == [{"account": a, "kind": "family", "share_percent": "100",
                            "charged": "$0.76", "credited": "$0.19", "paid": "$0.57"}]
    assert h.accounts.verify().ok


def test_a_short_dropped_call_is_credited_in_full(h: Harness) -> None:
    a = h.account(deposit="10.00")
    s = h.start(family(a))
    cdr = h.end(s, 40, "gateway", "no ACK")
    assert cdr.total == USD("0.19") and cdr.credit_total == USD("0.19")
    assert "less than 60 seconds" in cdr.credit_reason
    assert h.accounts.balance(a).balance == USD("10.00")


@pytest.mark.parametrize(("ended_by", "deliberate"), [("caller", False), ("callee", False),
                                                      ("gateway", True)])
def test_calls_ended_by_a_party_or_on_purpose_are_not_credited(
    h: Harness, ended_by: str, deliberate: bool
) -> None:
    a = h.account()
    s = h.start(family(a))
    cdr = h.end(s, 40, ended_by, "BYE", deliberate=deliberate)
    assert cdr.credit_total == ZERO and cdr.credits == {}


def test_the_credit_policy_is_configurable(db: Database, clock: Any) -> None:
    h = Harness(db, clock, policy=replace(POLICY, credit=CreditPolicy(False, 0)))
    s = h.start(family(h.account()))
    assert h.end(s, 40, "timeout", "lost").credit_total == ZERO


# ---------------------------------------------------------------------- payers


def test_an_agency_payer_always_passes_and_is_billed_postpaid(h: Harness) -> None:
    state = h.account("agency", deposit=None)
    s = h.start(PayerRef(state, Decimal(100)))
    assert s.facts.holds == () and s.affordable is None
    events = [e for t in h.run(s, 3600, step=60) for e in t.events]
    assert events == []
    cdr = h.end(s, 3600)
    assert cdr.total == USD("11.40") and h.accounts.balance(state).balance == USD("-11.40")
    assert receipt(cdr)["payers"][0]["kind"] == "agency"


def test_cost_sharing_reserves_and_cuts_off_on_the_family_share(h: Harness) -> None:
    a, state = h.account(deposit="0.50"), h.account("agency", deposit=None)
    s = h.start(family(a, "50"), PayerRef(state, Decimal(50)))
    # The family pays half of each minute's $0.19: 10 cents for the first, then 9, 10, ...
    assert s.affordable is not None and 300 <= s.affordable < 360
    h.run(s, 400)
    cdr = h.end(s, 400, "gateway", FUNDS_EXHAUSTED, deliberate=True)
    assert cdr.media_seconds == s.affordable
    assert h.accounts.balance(a).balance >= ZERO
    assert cdr.amounts[a] + cdr.amounts[state] == cdr.total


# ---------------------------------------------------------------------- recovery


def test_recovery_bills_up_to_the_last_heartbeat_and_credits_the_drop(h: Harness) -> None:
    a = h.account(deposit="10.00")
    s = h.start(family(a))
    h.run(s, 135, step=15)
    heartbeat = s.snapshot(h.now())
    assert heartbeat["media_ms"] == 135_000 and heartbeat["increments"] == 2
    # The gateway dies here.  At the next start:
    [open_call] = [c for c in h.ledger.open_calls("node-1") if c.facts.call_id == s.call_id]
    cdr, wrote = h.ledger.recover(open_call, POLICY, heartbeat)
    assert wrote and cdr.recovered and cdr.media_seconds == 135
    assert cdr.total == USD("0.57")  # 3 started minutes, never more than metered
    assert cdr.credits == {a: USD("0.19")}  # the gateway dropped it: last minute back
    assert h.accounts.balance(a).held == ZERO
    assert s.call_id not in [c.facts.call_id for c in h.ledger.open_calls("node-1")]
    again, wrote = h.ledger.recover(open_call, POLICY, heartbeat)
    assert not wrote and again == cdr
    assert receipt(cdr)["how_it_ended"].startswith("The call was cut off when the gateway")


def test_without_a_heartbeat_recovery_bills_only_the_increments_the_ledger_proves(
    h: Harness,
) -> None:
    a = h.account(deposit="10.00")
    s = h.start(family(a))
    h.run(s, 135, step=15)  # two increments posted; the in-process store is lost
    [open_call] = [c for c in h.ledger.open_calls("node-1") if c.facts.call_id == s.call_id]
    cdr, _ = h.ledger.recover(open_call, replace(POLICY, credit=CreditPolicy(False, 0)), None)
    assert (cdr.media_seconds, cdr.total, cdr.credit_total) == (120, USD("0.38"), ZERO)
    assert h.paid_for(s.call_id, a) == USD("0.38")


def test_recovery_only_takes_this_nodes_calls(h: Harness) -> None:
    a = h.account()
    s = h.start(family(a))
    ids = [c.facts.call_id for c in h.ledger.open_calls("another-node")]
    assert s.call_id not in ids
    assert isinstance(h.ledger.open_calls("node-1")[0], OpenCall)
    # What another node sees when it looks for calls left by gone nodes:
    assert s.call_id in [c.facts.call_id for c in h.ledger.open_calls("another-node",
                                                                      others=True)]
    assert s.call_id not in [c.facts.call_id for c in h.ledger.open_calls("node-1",
                                                                          others=True)]
    found = h.ledger.open_call(s.call_id)
    assert found is not None and found.facts.node_id == "node-1"


def test_once_another_node_settled_the_call_no_increment_follows(h: Harness) -> None:
    """The owner was cut off, another node took the call over and settled it: the
    owner's next increments are refused and say so; the CDR and balance stand."""
    a = h.account(deposit="10.00")
    s = h.start(family(a))
    h.run(s, 65, step=5)  # one increment (60 s) posted by the owner
    heartbeat = s.snapshot(h.now())
    open_call = h.ledger.open_call(s.call_id)
    assert open_call is not None
    cdr, wrote = h.ledger.recover(open_call, replace(POLICY, credit=CreditPolicy(False, 0)),
                                  heartbeat)
    assert wrote and cdr.media_seconds == 65 and cdr.total == USD("0.38")
    assert h.ledger.open_call(s.call_id) is None
    tick = h.at(s, 125)  # the owner, back, debits the next increment
    assert len(tick.charges) == 1
    assert s.last_error is not None and "already settled" in s.last_error
    assert h.paid_for(s.call_id, a) == USD("0.38")
    assert h.accounts.balance(a).balance == USD("9.62")
    # Its own settlement then finds the CDR and writes nothing.
    request = s.end(EndInfo(h.now(), "BYE", "caller"), 125)
    again, wrote = h.ledger.settle(request)
    assert not wrote and again == cdr


# ---------------------------------------------------------------------- the arithmetic


@settings(max_examples=60, deadline=None)
@given(
    seconds=st.integers(0, 4000),
    increment_seconds=st.sampled_from([1, 7, 30, 60, 90, 300]),
    mode=st.sampled_from(["per_minute_round_up", "per_second"]),
    share=st.sampled_from(["100", "65", "33.3", "50"]),
    free=st.sampled_from([0, 60, 123, 600]),
)
def test_increments_plus_settlement_telescope_to_the_rating(
    seconds: int, increment_seconds: int, mode: str, share: str, free: int
) -> None:
    """For any duration and increment: the debits sum to rate_call, line by line and payer
    by payer, and no partial debit is negative."""
    fam, agency = Payer("family", "F"), Payer("agency", "S")
    payers = ((fam, Decimal(100)),) if share == "100" else (
        (fam, Decimal(share)), (agency, Decimal(100) - Decimal(share)))
    facts = CallFacts("c", "n", "p", TAXED.id, "video", "k", "u",
                      STARTED, mode,  # type: ignore[arg-type]
                      increment_seconds, payers, (), "F" if free else None, free)
    pricer = Pricer(facts, TAXED)
    n = seconds // increment_seconds
    pieces = [pricer.lines_between(pricer.boundary(k - 1), pricer.boundary(k), "i")
              for k in range(1, n + 1)]
    pieces.append(pricer.lines_between(pricer.boundary(n), seconds, "s"))
    whole = pricer.rating(seconds)
    assert whole == rate_call(TAXED, "video", STARTED, seconds, split=facts.split,
                              increment=mode, free_minutes_remaining=Decimal(free) / 60)
    for i, line in enumerate(whole.lines):
        assert sum((p[i].amount for p in pieces), ZERO) == line.amount
        for j, (_, part) in enumerate(line.by_payer):
            assert sum((p[i].by_payer[j][1] for p in pieces), ZERO) == part
        assert all(p[i].amount >= ZERO for p in pieces)


# ---------------------------------------------------------------------- free minutes

CHICAGO = replace(FAC, id="chicago-jail", timezone="America/Chicago")


@pytest.fixture
def free10(db: Database, clock: Any) -> Harness:
    """A facility in Chicago (UTC-5 in May) whose plan gives 10 free minutes a day."""
    h = Harness(db, clock, facility=CHICAGO)
    h.free_minutes_per_day = 10
    return h


def test_free_minutes_are_used_first_and_tracked_per_local_day(free10: Harness) -> None:
    h = free10
    h.clock.now = datetime(2026, 5, 2, 15, 0, tzinfo=UTC)  # 10:00 in Chicago
    a = h.account(deposit="10.00")
    # First call: 6 min 40 s, billed as 7 minutes, all free; no increment costs anything.
    s1 = h.start(family(a))
    assert (s1.facts.free_account, s1.facts.free_seconds) == (a, 600)
    h.run(s1, 400)
    assert s1.increments == 6 and h.paid_for(s1.call_id, a) == ZERO
    cdr1 = h.end(s1, 400)
    assert (cdr1.free_seconds_used, cdr1.total) == (420, ZERO)
    assert h.accounts.balance(a).balance == USD("10.00")
    # Second call the same day: the 3 minutes left are free, the other 2 are charged.
    s2 = h.start(family(a))
    assert s2.facts.free_seconds == 180
    h.run(s2, 180)
    assert s2.increments == 3 and h.paid_for(s2.call_id, a) == ZERO
    h.run(s2, 300)
    assert h.paid_for(s2.call_id, a) == USD("0.38")  # increments 4 and 5 at $0.19
    cdr2 = h.end(s2, 300)
    expected = rate_call(CHICAGO, "video", s2.facts.setup_at, 300,
                         split=s2.facts.split, free_minutes_remaining=3)
    assert (cdr2.free_seconds_used, cdr2.total) == (180, expected.total) == (180, USD("0.38"))
    assert h.paid_for(s2.call_id, a) == USD("0.38")
    r = receipt(cdr2)
    assert r["summary"].startswith("First 3 minutes free today; 2 minutes at $0.19/min")
    assert "First 3 minutes free today (daily free-minute allowance)." in r["notes"]
    assert r["free_today"] == "3 minutes"
    # 23:30 in Chicago is still the same local day (04:30 UTC the next day): nothing free.
    h.clock.now = datetime(2026, 5, 3, 4, 30, tzinfo=UTC)
    s3 = h.start(family(a))
    assert s3.facts.free_seconds == 0
    cdr3 = h.end(s3, 60)
    assert (cdr3.free_seconds_used, cdr3.total) == (0, USD("0.19"))
    assert "free today" not in receipt(cdr3)["summary"] and receipt(cdr3)["notes"] == []
    # 00:30 the next local day: the full allowance again.
    h.clock.now = datetime(2026, 5, 3, 5, 30, tzinfo=UTC)
    s4 = h.start(family(a))
    assert s4.facts.free_seconds == 600
    cdr4 = h.end(s4, 600)
    assert (cdr4.free_seconds_used, cdr4.total) == (600, ZERO)
    assert receipt(cdr4)["summary"].startswith("First 10 minutes free today")
    assert h.accounts.balance(a).balance == USD("9.43")  # $0.38 + $0.19 in all


def test_calls_still_open_keep_their_free_minutes_and_recovery_uses_them(
        free10: Harness) -> None:
    h = free10
    h.clock.now = datetime(2026, 5, 2, 15, 0, tzinfo=UTC)
    a = h.account(deposit="10.00")
    s1 = h.start(family(a))
    s2 = h.start(family(a))  # while s1 is live: s1 may still use all 10 minutes
    assert (s1.facts.free_seconds, s2.facts.free_seconds) == (600, 0)
    [open1] = [c for c in h.ledger.open_calls("node-1") if c.facts.call_id == s1.call_id]
    assert open1.facts == s1.facts  # the grant is in billing_calls, for recovery
    h.end(s2, 60)
    h.end(s1, 90)  # used 2 minutes: 8 are left
    assert h.start(family(a)).facts.free_seconds == 480
    # A plan without free minutes draws on no allowance.
    h.free_minutes_per_day = 0
    s5 = h.start(family(h.account()))
    assert (s5.facts.free_account, s5.facts.free_seconds) == (None, 0)


def test_free_minutes_let_a_call_start_with_no_money(free10: Harness) -> None:
    h = free10
    a = h.account(deposit=None)
    s = h.start(family(a))  # the first increment is free: not refused
    assert s.facts.free_seconds == 600 and h.policy.first_block_seconds == 300
    cdr = h.end(s, 200)
    assert (cdr.total, cdr.free_seconds_used) == (ZERO, 240)
