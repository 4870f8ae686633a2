"""Property: any sequence of deposits, holds, charges, releases, credits, refunds and
retries keeps every entry balanced, the balances equal to a simple model, the
whole ledger summing to zero and ``verify`` passing, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import func, select

from gateway.billing.accounts import Accounts, default_hold_id
from gateway.billing.db import Database
from gateway.billing.ledger import InsufficientFunds, PostedEntry, verify
from gateway.billing.models import Balance
from gateway.billing.money import Money
from gateway.billing.rates import Facility, PassThroughTax, RateEntry
from gateway.billing.rating import Payer, PayerSplit, rate_call

FAC = Facility(
    id="prop-jail", facility_type="jail", adp=420,
    rates=(RateEntry("video", date(2026, 4, 6), Money.parse("0.19")),),
    apply_additive=True, taxes=(PassThroughTax("Tax", Decimal("7.5")),),
)
STARTED = datetime(2026, 5, 2, 15, 0, tzinfo=UTC)
ACCOUNTS = 2
CENT = 10_000

who = st.integers(0, ACCOUNTS - 1)
cents = st.integers(1, 3000)
percent = st.integers(1, 110)  # of the available balance: mostly fits, sometimes not


class LedgerMachine(RuleBasedStateMachine):
    """The API against a model: available per account, one open hold per account."""

    db: Database

    def __init__(self) -> None:
        super().__init__()
        self.acc = Accounts(self.db, actor="prop")
        self.run = uuid.uuid4().hex[:8]
        self.n = 0
        self.ids = [self.acc.open_account("visitor", f"{self.run}-{i}").id
                    for i in range(ACCOUNTS)]
        self.available = [0] * ACCOUNTS
        self.holds: list[tuple[str, int] | None] = [None] * ACCOUNTS
        self.paid: dict[str, tuple[int, int]] = {}  # call id -> (account index, net paid)
        self.last: tuple[Callable[[], PostedEntry | None], int] | None = None

    def share(self, i: int, pct: int) -> Money:
        """``pct`` % of account i's available balance, in whole cents (at least 1 cent)."""
        return Money(max(1, self.available[i] // CENT * pct // 100) * CENT)

    @initialize(first=st.lists(st.integers(100, 5000), min_size=ACCOUNTS, max_size=ACCOUNTS))
    def fund(self, first: list[int]) -> None:
        for i, c in enumerate(first):
            self.deposit(i, c)

    def key(self) -> str:
        self.n += 1
        return f"{self.run}:{self.n}"

    def attempt(self, call: Callable[[], PostedEntry | None], ok: bool) -> bool:
        """Run a request the model says succeeds (ok) or is refused for lack of funds."""
        if not ok:
            try:
                call()
            except InsufficientFunds:
                return False
            raise AssertionError("the ledger accepted what the model says it must refuse")
        entry = call()
        assert entry is not None and not entry.replayed
        assert sum(p.amount for p in entry.postings) == 0
        self.last = (call, entry.id)
        return True

    @rule(i=who, c=cents)
    def deposit(self, i: int, c: int) -> None:
        a, key, amount = self.ids[i], self.key(), Money(c * CENT)
        if self.attempt(lambda: self.acc.deposit(a, amount, idempotency_key=key), True):
            self.available[i] += amount.micros

    @rule(i=who, pct=percent)
    def refund(self, i: int, pct: int) -> None:
        a, key, amount = self.ids[i], self.key(), self.share(i, pct)
        ok = self.available[i] >= amount.micros
        if self.attempt(lambda: self.acc.refund(a, amount, idempotency_key=key), ok):
            self.available[i] -= amount.micros

    @rule(i=who, pct=percent)
    def hold(self, i: int, pct: int) -> None:
        a, key, amount = self.ids[i], self.key(), self.share(i, pct)
        current = self.holds[i]
        if current is None:
            def call() -> PostedEntry | None:
                return self.acc.place_hold(a, amount, idempotency_key=key).entry
        else:
            def call() -> PostedEntry | None:
                return self.acc.extend_hold(current[0], amount, idempotency_key=key).entry
        if self.attempt(call, self.available[i] >= amount.micros):
            self.available[i] -= amount.micros
            self.holds[i] = ((default_hold_id(key), amount.micros) if current is None
                             else (current[0], current[1] + amount.micros))

    @rule(i=who)
    def release(self, i: int) -> None:
        current = self.holds[i]
        if current is None:
            return
        key = self.key()
        if self.attempt(
            lambda: self.acc.release_hold(current[0], idempotency_key=key).entry, True
        ):
            self.available[i] += current[1]
            self.holds[i] = None

    @rule(i=who, seconds=st.integers(0, 1500), close=st.booleans())
    def charge(self, i: int, seconds: int, close: bool) -> None:
        a, key = self.ids[i], self.key()
        rating = rate_call(FAC, "video", STARTED, seconds,
                           split=PayerSplit.single(Payer("family", a)))
        current = self.holds[i]
        held = current[1] if current is not None else 0
        total = rating.total.micros
        take = min(total, held)
        rest = held - take if close else 0
        delta = rest - (total - take)
        holds = {a: current[0]} if current is not None else {}
        call_id = f"call-{key}"

        def call() -> PostedEntry:
            return self.acc.charge_rating(rating, call_id=call_id, idempotency_key=key,
                                          holds=holds, close_holds=close)

        if self.attempt(call, delta >= 0 or self.available[i] + delta >= 0):
            self.available[i] += delta
            if current is not None:
                left = held - take - rest
                self.holds[i] = (current[0], left) if left > 0 else None
            self.paid[call_id] = (i, total)

    @rule(i=who, pct=percent, seconds=st.integers(0, 900), close=st.booleans())
    def call(self, i: int, pct: int, seconds: int, close: bool) -> None:
        """The usual life of a call: reserve funds, then charge (the end closes the hold)."""
        self.hold(i, pct)
        self.charge(i, seconds, close)

    @precondition(lambda self: any(p > 0 for _, p in self.paid.values()))
    @rule(c=cents, data=st.data())
    def credit(self, c: int, data: st.DataObject) -> None:
        call_id = data.draw(st.sampled_from(sorted(k for k, v in self.paid.items() if v[1] > 0)))
        i, paid = self.paid[call_id]
        amount, key = Money(min(c * CENT, paid)), self.key()
        if self.attempt(lambda: self.acc.credit_call(call_id, self.ids[i], amount,
                                                     idempotency_key=key, memo="dropped"), True):
            self.available[i] += amount.micros
            self.paid[call_id] = (i, paid - amount.micros)

    @precondition(lambda self: self.last is not None)
    @rule()
    def retry(self) -> None:
        assert self.last is not None
        call, entry_id = self.last
        again = call()
        assert again is not None and again.replayed and again.id == entry_id

    @invariant()
    def balances_match_the_model(self) -> None:
        for i, a in enumerate(self.ids):
            bal = self.acc.balance(a)
            held = self.holds[i]
            assert bal.available.micros == self.available[i] >= 0
            assert bal.held.micros == (held[1] if held is not None else 0)

    def teardown(self) -> None:
        with self.db.read() as s:
            assert s.scalar(select(func.sum(Balance.available + Balance.held))) == 0
        report = verify(self.db)
        assert report.ok, report.format()


def test_random_operations_keep_the_ledger_balanced_and_verifiable(db: Database) -> None:
    machine = type("Machine", (LedgerMachine,), {"db": db})
    run_state_machine_as_test(
        machine, settings=settings(max_examples=15, stateful_step_count=20, deadline=None))
