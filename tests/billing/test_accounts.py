"""Accounts API on SQLite and PostgreSQL: deposits, holds, charges from ratings, credits.

The facility is a medium jail billing video at the FCC 25-75 cap ($0.19/min)
plus the $0.02/min facility-cost additive and a 5% pass-through tax, so a
10-minute call is $1.90 usage + $0.20 additive + $0.10 tax = $2.20.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select

from gateway.billing.accounts import (
    AccountExists,
    Accounts,
    BillingPolicy,
    additive_account,
    default_hold_id,
    revenue_account,
    tax_account,
)
from gateway.billing.db import Database
from gateway.billing.ledger import (
    HoldError,
    InsufficientFunds,
    InvalidRequest,
    UnknownAccount,
)
from gateway.billing.models import Entry
from gateway.billing.money import Money
from gateway.billing.rates import Facility, PassThroughTax, RateEntry
from gateway.billing.rating import Payer, PayerSplit, Rating, rate_call

USD = Money.parse
FAC = Facility(
    id="county-jail", facility_type="jail", adp=420,
    rates=(RateEntry("video", date(2026, 4, 6), USD("0.19")),),
    apply_additive=True, taxes=(PassThroughTax("State tax", Decimal("5")),),
)
STARTED = datetime(2026, 5, 2, 15, 0, tzinfo=UTC)


def rating(account: str, seconds: int, *, agency: str | None = None) -> Rating:
    family = Payer("family", account)
    split = (PayerSplit.single(family) if agency is None else
             PayerSplit.dated((date(2026, 1, 1), {Payer("agency", agency): "35", family: "65"})))
    return rate_call(FAC, "video", STARTED, seconds, split=split)


def entries(db: Database) -> int:
    with db.read() as s:
        return int(s.scalar(select(func.count()).select_from(Entry)) or 0)


def system_balance(accounts: Accounts, account_id: str) -> Money:
    try:
        return accounts.balance(account_id).balance
    except UnknownAccount:
        return Money(0)


# ---------------------------------------------------------------------- accounts


def test_open_account_checks_its_input(accounts: Accounts) -> None:
    info = accounts.open_account("incarcerated", "DOC-12345", "J. Doe")
    assert (info.owner_kind, info.status, info.currency, info.prepaid) == (
        "incarcerated", "open", "USD", True)
    assert accounts.balance(info.id).balance == Money(0)
    with pytest.raises(AccountExists):
        accounts.open_account("visitor", "x", account_id=info.id)
    with pytest.raises(InvalidRequest, match="reserved for system"):
        accounts.open_account("visitor", "x", account_id="sys:clearing")
    with pytest.raises(InvalidRequest, match="owner kind"):
        accounts.open_account("system", "x")
    with pytest.raises(InvalidRequest, match="account id"):
        accounts.open_account("visitor", "x", account_id="has space")
    with pytest.raises(InvalidRequest, match="owner"):
        accounts.open_account("visitor", " ")


# ---------------------------------------------------------------------- deposits


def test_deposits_have_no_minimum_and_a_configurable_maximum(
    accounts: Accounts, new_account: Callable[..., str]
) -> None:
    a = new_account()
    accounts.deposit(a, USD("0.01"), idempotency_key=f"{a}:1c")
    accounts.deposit(a, USD("50.00"), idempotency_key=f"{a}:50")
    accounts.deposit(a, USD("1000.00"), idempotency_key=f"{a}:max")
    assert accounts.balance(a).available == USD("1050.01")


@pytest.mark.parametrize(("amount", "message"), [
    (USD("0"), "more than \\$0.00"),
    (USD("-5.00"), "more than \\$0.00"),
    (USD("1000.01"), "at most \\$1,000.00 per deposit"),
    (USD("99999999.00"), "at most \\$1,000.00 per deposit"),
    (USD("0.005"), "whole cents"),
    (Decimal("5.00"), "expected a Money"),
])
def test_bad_deposits_are_refused_and_nothing_is_written(
    accounts: Accounts, db: Database, new_account: Callable[..., str], amount: Any, message: str
) -> None:
    a = new_account()
    before = entries(db)
    with pytest.raises(InvalidRequest, match=message):
        accounts.deposit(a, amount, idempotency_key=f"{a}:bad")
    assert entries(db) == before
    assert accounts.balance(a).balance == Money(0)


def test_the_maximum_deposit_may_not_refuse_fifty_dollars(db: Database) -> None:
    with pytest.raises(ValueError, match="deposits of \\$50 or less"):
        BillingPolicy(max_deposit=USD("49.99"))
    strict = Accounts(db, policy=BillingPolicy(max_deposit=USD("50.00")))
    a = strict.open_account("visitor", "strict").id
    strict.deposit(a, USD("50.00"), idempotency_key=f"{a}:50")
    with pytest.raises(InvalidRequest, match="at most \\$50.00"):
        strict.deposit(a, USD("50.01"), idempotency_key=f"{a}:5001")


def test_refund_and_adjustment(accounts: Accounts, new_account: Callable[..., str]) -> None:
    a = new_account()
    accounts.deposit(a, USD("10.00"), idempotency_key=f"{a}:d")
    accounts.refund(a, USD("4.00"), idempotency_key=f"{a}:r", memo="account closed")
    with pytest.raises(InsufficientFunds, match="available \\$6.00"):
        accounts.refund(a, USD("6.01"), idempotency_key=f"{a}:r2")
    with pytest.raises(InvalidRequest, match="memo saying why"):
        accounts.adjust(a, USD("1.00"), idempotency_key=f"{a}:adj", memo=" ")
    accounts.adjust(a, USD("-1.50"), idempotency_key=f"{a}:adj", memo="duplicate card payment")
    with pytest.raises(InsufficientFunds):
        accounts.adjust(a, USD("-5.00"), idempotency_key=f"{a}:adj2", memo="too much")
    assert accounts.balance(a).available == USD("4.50")


# ---------------------------------------------------------------------- holds


def test_holds_reserve_funds_until_released(
    accounts: Accounts, db: Database, new_account: Callable[..., str]
) -> None:
    a = new_account()
    accounts.deposit(a, USD("10.00"), idempotency_key=f"{a}:d")
    h = accounts.place_hold(a, USD("4.00"), idempotency_key=f"{a}:h", call_id=f"call-{a}")
    assert h.active and h.amount == USD("4.00") and h.call_id == f"call-{a}"
    bal = accounts.balance(a)
    assert (bal.balance, bal.held, bal.available) == (USD("10.00"), USD("4.00"), USD("6.00"))

    same = accounts.place_hold(a, USD("4.00"), idempotency_key=f"{a}:h", call_id=f"call-{a}")
    assert same.hold_id == h.hold_id and same.entry is not None and same.entry.replayed

    before = entries(db)
    with pytest.raises(InsufficientFunds, match="available \\$6.00"):
        accounts.extend_hold(h.hold_id, USD("6.01"), idempotency_key=f"{a}:x1")
    assert entries(db) == before
    h = accounts.extend_hold(h.hold_id, USD("1.00"), idempotency_key=f"{a}:x2")
    assert h.amount == USD("5.00")
    assert [x.hold_id for x in accounts.active_holds(a)] == [h.hold_id]
    assert accounts.balance(a).available == USD("5.00")

    released = accounts.release_hold(h.hold_id, idempotency_key=f"{a}:rel")
    assert not released.active
    assert accounts.balance(a).available == USD("10.00")
    with pytest.raises(HoldError, match="closed"):
        accounts.release_hold(h.hold_id, idempotency_key=f"{a}:rel2")
    with pytest.raises(HoldError, match="no such hold"):
        accounts.extend_hold("hold_nope", USD("1.00"), idempotency_key=f"{a}:x3")
    assert accounts.active_holds(a) == []


def test_a_hold_larger_than_the_available_balance_is_refused(
    accounts: Accounts, new_account: Callable[..., str]
) -> None:
    a = new_account()
    accounts.deposit(a, USD("2.00"), idempotency_key=f"{a}:d")
    with pytest.raises(InsufficientFunds):
        accounts.place_hold(a, USD("2.01"), idempotency_key=f"{a}:h")
    assert accounts.hold(default_hold_id(f"{a}:h")) is None
    assert accounts.balance(a).held == Money(0)


def test_expired_holds_are_released_by_the_sweep(
    accounts: Accounts, clock: Any, new_account: Callable[..., str]
) -> None:
    a = new_account()
    accounts.deposit(a, USD("10.00"), idempotency_key=f"{a}:d")
    h = accounts.place_hold(a, USD("3.00"), idempotency_key=f"{a}:h",
                            ttl=timedelta(minutes=10))
    clock.advance(minutes=5)
    assert h.hold_id not in [x.hold_id for x in accounts.release_expired_holds()]
    # The call goes on: pushing the expiry alone moves no money but is recorded.
    pushed = accounts.extend_hold(h.hold_id, Money(0), idempotency_key=f"{a}:push",
                                  ttl=timedelta(minutes=10))
    assert pushed.entry is not None and pushed.entry.postings == ()
    assert pushed.expires_at == clock.now + timedelta(minutes=10)
    clock.advance(minutes=6)
    assert h.hold_id not in [x.hold_id for x in accounts.release_expired_holds()]
    clock.advance(minutes=5)
    with pytest.raises(HoldError, match="expired"):
        accounts.extend_hold(h.hold_id, USD("1.00"), idempotency_key=f"{a}:late")
    swept = accounts.release_expired_holds()
    assert h.hold_id in [x.hold_id for x in swept]
    assert h.hold_id not in [x.hold_id for x in accounts.release_expired_holds()]
    assert accounts.balance(a).available == USD("10.00")


# ---------------------------------------------------------------------- charges


def test_a_call_is_charged_from_its_hold_and_the_rest_released(
    accounts: Accounts, new_account: Callable[..., str]
) -> None:
    a = new_account()
    call = f"call-{a}"
    accounts.deposit(a, USD("10.00"), idempotency_key=f"{a}:d")
    h = accounts.place_hold(a, USD("5.00"), idempotency_key=f"{a}:h", call_id=call)
    revenue0 = system_balance(accounts, revenue_account(FAC.id))
    additive0 = system_balance(accounts, additive_account(FAC.id))
    tax0 = system_balance(accounts, tax_account(FAC.id, "State tax"))

    r = rating(a, 570)  # 9.5 minutes, billed as 10
    assert r.total == USD("2.20")
    e = accounts.charge_rating(r, call_id=call, idempotency_key=f"{call}:final",
                               holds={a: h.hold_id}, close_holds=True)
    assert e.kind == "charge" and e.call_id == call and e.net(a) == USD("-2.20")
    bal = accounts.balance(a)
    assert (bal.balance, bal.held, bal.available) == (USD("7.80"), Money(0), USD("7.80"))
    assert system_balance(accounts, revenue_account(FAC.id)) - revenue0 == USD("1.90")
    assert system_balance(accounts, additive_account(FAC.id)) - additive0 == USD("0.20")
    assert system_balance(accounts, tax_account(FAC.id, "State tax")) - tax0 == USD("0.10")
    hold = accounts.hold(h.hold_id)
    assert hold is not None and not hold.active

    again = accounts.charge_rating(r, call_id=call, idempotency_key=f"{call}:final",
                                   holds={a: h.hold_id}, close_holds=True)
    assert again.replayed and accounts.balance(a).balance == USD("7.80")


def test_a_long_call_is_charged_per_increment_and_retries_do_not_double(
    accounts: Accounts, new_account: Callable[..., str]
) -> None:
    a = new_account()
    call = f"call-{a}"
    accounts.deposit(a, USD("3.00"), idempotency_key=f"{a}:d")
    h = accounts.place_hold(a, USD("1.00"), idempotency_key=f"{a}:h", call_id=call)
    minute = rating(a, 60)
    assert minute.total == USD("0.22")
    for n in range(1, 4):
        accounts.charge_rating(minute, call_id=call, idempotency_key=f"{call}:{n}",
                               holds={a: h.hold_id})
        accounts.charge_rating(minute, call_id=call, idempotency_key=f"{call}:{n}",
                               holds={a: h.hold_id})  # a retry after a timeout
    hold = accounts.hold(h.hold_id)
    assert hold is not None and hold.amount == USD("0.34")
    accounts.charge_rating(rating(a, 0), call_id=call, idempotency_key=f"{call}:end",
                           holds={a: h.hold_id}, close_holds=True)
    assert accounts.balance(a).balance == USD("2.34")
    assert [e.kind for e in accounts.entries_for_call(call)] == ["hold"] + ["charge"] * 4


def test_a_charge_beyond_the_funds_is_refused_and_nothing_is_written(
    accounts: Accounts, db: Database, new_account: Callable[..., str]
) -> None:
    a = new_account()
    accounts.deposit(a, USD("1.00"), idempotency_key=f"{a}:d")
    h = accounts.place_hold(a, USD("0.50"), idempotency_key=f"{a}:h")
    before = entries(db)
    with pytest.raises(InsufficientFunds):
        accounts.charge_rating(rating(a, 600), call_id=f"c-{a}", idempotency_key=f"c-{a}",
                               holds={a: h.hold_id}, close_holds=True)
    assert entries(db) == before
    bal = accounts.balance(a)
    assert (bal.held, bal.available) == (USD("0.50"), USD("0.50"))


def test_cost_sharing_bills_the_agency_postpaid(
    accounts: Accounts, new_account: Callable[..., str]
) -> None:
    a, state = new_account(), new_account("agency")
    accounts.deposit(a, USD("5.00"), idempotency_key=f"{a}:d")
    r = rating(a, 600, agency=state)
    e = accounts.charge_rating(r, call_id=f"c-{a}", idempotency_key=f"c-{a}")
    assert e.net(a) + e.net(state) == -r.total
    assert accounts.balance(state).balance == -r.amount_for(Payer("agency", state))
    assert accounts.balance(a).balance == USD("5.00") - r.amount_for(Payer("family", a))
    rep = accounts.verify()
    assert rep.ok, rep  # an agency below zero is what it owes, not an error


def test_a_payer_kind_must_match_the_account(
    accounts: Accounts, new_account: Callable[..., str]
) -> None:
    state = new_account("agency")
    with pytest.raises(InvalidRequest, match="family payer cannot be charged to agency"):
        accounts.charge_rating(rating(state, 60), call_id="c-kind", idempotency_key="c-kind")


# ---------------------------------------------------------------------- credits


def test_a_dropped_call_is_credited_back_at_most_once_in_full(
    accounts: Accounts, new_account: Callable[..., str]
) -> None:
    a = new_account()
    call = f"call-{a}"
    accounts.deposit(a, USD("10.00"), idempotency_key=f"{a}:d")
    sinks = (revenue_account(FAC.id), additive_account(FAC.id),
             tax_account(FAC.id, "State tax"))
    before = [system_balance(accounts, s) for s in sinks]
    accounts.charge_rating(rating(a, 600), call_id=call, idempotency_key=f"{call}:c")
    part = accounts.credit_call(call, a, USD("1.00"), idempotency_key=f"{call}:cr1",
                                memo="dropped call")
    assert part.kind == "credit" and part.call_id == call and part.net(a) == USD("1.00")
    with pytest.raises(InvalidRequest, match="more than the \\$1.20 account"):
        accounts.credit_call(call, a, USD("1.21"), idempotency_key=f"{call}:cr2", memo="x")
    accounts.credit_call(call, a, USD("1.20"), idempotency_key=f"{call}:cr3", memo="rest")
    assert accounts.balance(a).balance == USD("10.00")
    assert [system_balance(accounts, s) for s in sinks] == before  # exactly reversed
    with pytest.raises(InvalidRequest, match="nothing left to credit"):
        accounts.credit_call(call, a, USD("0.01"), idempotency_key=f"{call}:cr4", memo="x")
    with pytest.raises(InvalidRequest, match="nothing was charged"):
        accounts.credit_call("no-such-call", a, USD("0.01"), idempotency_key="cr5", memo="x")
    with pytest.raises(InvalidRequest, match="memo saying why"):
        accounts.credit_call(call, a, USD("0.01"), idempotency_key="cr6", memo="")
    assert accounts.verify().ok


def test_system_accounts_cannot_be_used_directly(accounts: Accounts,
                                                 new_account: Callable[..., str]) -> None:
    a = new_account()
    accounts.deposit(a, USD("1.00"), idempotency_key=f"{a}:d")  # creates sys:clearing
    with pytest.raises(InvalidRequest, match="'sys:clearing' is a system account"):
        accounts.deposit("sys:clearing", USD("1.00"), idempotency_key=f"{a}:sys")
    with pytest.raises(InvalidRequest, match="is a system account"):
        accounts.place_hold("sys:clearing", USD("1.00"), idempotency_key=f"{a}:sysh")
