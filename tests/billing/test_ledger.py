"""The journal on SQLite and PostgreSQL: double entry, idempotency, append-only, crash safety."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import event, func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from gateway.billing.accounts import Accounts
from gateway.billing.db import (
    VERSION_TABLE,
    Database,
    DatabaseError,
    current_revision,
    head_revision,
    normalize_url,
    open_database,
    require_current,
    upgrade,
)
from gateway.billing.ledger import (
    GENESIS,
    ChainHead,
    Draft,
    IdempotencyConflict,
    InvalidRequest,
    LedgerView,
    Leg,
    UnbalancedEntry,
    UnknownAccount,
    canonical_entry,
    post,
)
from gateway.billing.models import Base, Entry, Posting
from gateway.billing.money import Money

USD = Money.parse


def count(db: Database, model: type[Any]) -> int:
    with db.read() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def head(db: Database) -> tuple[int, str]:
    with db.read() as s:
        h = s.get(ChainHead, 1)
        assert h is not None
        return h.last_entry_id, h.head_hash


# ---------------------------------------------------------------------- schema


def test_models_match_migrations_and_upgrade_is_idempotent(db: Database) -> None:
    with db.engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn, opts={"compare_type": True, "version_table": VERSION_TABLE})
        assert compare_metadata(ctx, Base.metadata) == []
    upgrade(db)  # again: nothing to do, nothing breaks
    assert current_revision(db) == head_revision()
    require_current(db)


def test_a_database_without_the_schema_is_refused_with_a_hint(tmp_path: Any) -> None:
    db = open_database(f"sqlite:///{tmp_path / 'empty.sqlite3'}")
    try:
        with pytest.raises(DatabaseError, match="gateway billing migrate"):
            require_current(db)
    finally:
        db.dispose()


def test_urls_from_the_config_get_the_shipped_driver() -> None:
    assert normalize_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("postgres://u@h/db").drivername == "postgresql+psycopg"
    with pytest.raises(DatabaseError, match="file path"):
        normalize_url("sqlite://")
    with pytest.raises(DatabaseError, match="sqlite:/// or postgresql://"):
        normalize_url("mysql://u@h/db")


# ---------------------------------------------------------------------- double entry


def test_every_entry_balances_and_the_chain_links(
    accounts: Accounts, db: Database, new_account: Callable[..., str]
) -> None:
    a = new_account()
    e1 = accounts.deposit(a, USD("20.00"), idempotency_key=f"{a}:d1")
    e2 = accounts.deposit(a, USD("0.01"), idempotency_key=f"{a}:d2")
    for e in (e1, e2):
        assert sum(p.amount for p in e.postings) == 0
        assert len(e.postings) == 2
    assert e2.id == e1.id + 1 and e2.prev_hash == e1.hash
    assert head(db) == (e2.id, e2.hash)
    assert accounts.balance(a).available == USD("20.01")
    assert accounts.verify().ok


def test_an_unbalanced_draft_is_refused_and_nothing_is_written(
    db: Database, new_account: Callable[..., str], clock: Any
) -> None:
    a = new_account()
    before = count(db, Entry), count(db, Posting), head(db)

    def lopsided(view: LedgerView) -> Draft:
        return Draft((Leg(a, 5_000_000),))  # money from nowhere

    with pytest.raises(UnbalancedEntry, match="sum to"), db.write() as s:
        post(s, kind="adjustment", idempotency_key=f"{a}:bad", request={}, build=lopsided,
             now=clock(), actor="test")
    assert (count(db, Entry), count(db, Posting), head(db)) == before


def test_the_hash_covers_a_documented_canonical_form(accounts: Accounts,
                                                    new_account: Callable[..., str]) -> None:
    a = new_account()
    e = accounts.deposit(a, USD("1.00"), idempotency_key=f"{a}:canon")
    raw = canonical_entry(
        entry_id=e.id, prev_hash=e.prev_hash, txn_id=e.txn_id, idempotency_key=e.idempotency_key,
        request_hash=e.request_hash, kind=e.kind, created_at=e.created_at, actor=e.actor,
        memo=e.memo, call_id=e.call_id, hold_id=e.hold_id, expires_at=e.expires_at,
        postings=reversed(e.postings),
    )
    assert hashlib.sha256(raw).hexdigest() == e.hash
    doc = json.loads(raw)
    assert doc["v"] == 1 and doc["prev"] == e.prev_hash and doc["at"].endswith("Z")
    assert doc["postings"] == sorted(doc["postings"], key=lambda p: (p[0], p[1] or "", p[2]))
    assert sorted(p[2] for p in doc["postings"]) == [-1_000_000, 1_000_000]


def test_the_first_entry_links_to_the_genesis_hash(fresh_db: Database) -> None:
    acc = Accounts(fresh_db)
    a = acc.open_account("visitor", "first").id
    e = acc.deposit(a, USD("1.00"), idempotency_key="first")
    assert (e.id, e.prev_hash) == (1, GENESIS)


# ---------------------------------------------------------------------- idempotency


def test_reposting_the_same_key_returns_the_entry_and_writes_nothing(
    accounts: Accounts, db: Database, new_account: Callable[..., str]
) -> None:
    a = new_account()
    first = accounts.deposit(a, USD("10.00"), idempotency_key=f"pay:{a}", memo="card")
    entries, postings = count(db, Entry), count(db, Posting)
    again = accounts.deposit(a, USD("10.00"), idempotency_key=f"pay:{a}", memo="card")
    assert again.replayed and not first.replayed
    assert (again.id, again.hash, again.postings) == (first.id, first.hash, first.postings)
    assert (count(db, Entry), count(db, Posting)) == (entries, postings)
    assert accounts.balance(a).available == USD("10.00")


def test_the_same_key_with_a_different_request_is_an_error(
    accounts: Accounts, db: Database, new_account: Callable[..., str]
) -> None:
    a, b = new_account(), new_account()
    accounts.deposit(a, USD("10.00"), idempotency_key=f"k:{a}")
    entries = count(db, Entry)
    for attempt in (
        lambda: accounts.deposit(a, USD("10.01"), idempotency_key=f"k:{a}"),
        lambda: accounts.deposit(b, USD("10.00"), idempotency_key=f"k:{a}"),
        lambda: accounts.refund(a, USD("10.00"), idempotency_key=f"k:{a}"),
    ):
        with pytest.raises(IdempotencyConflict, match="already used by entry"):
            attempt()
    assert count(db, Entry) == entries
    assert accounts.balance(b).available == USD("0.00")


def test_bad_keys_are_refused(accounts: Accounts, new_account: Callable[..., str]) -> None:
    a = new_account()
    for key in ("", "has space", "x" * 201, "caf\u00e9"):
        with pytest.raises(InvalidRequest, match="idempotency key"):
            accounts.deposit(a, USD("1.00"), idempotency_key=key)


def test_unknown_account_is_a_clear_error_and_nothing_is_written(
    accounts: Accounts, db: Database
) -> None:
    before = count(db, Entry), head(db)
    with pytest.raises(UnknownAccount, match="'nobody': no such account"):
        accounts.deposit("nobody", USD("5.00"), idempotency_key="to-nobody")
    assert (count(db, Entry), head(db)) == before


# ---------------------------------------------------------------------- append-only


@pytest.mark.parametrize("statement", [
    "UPDATE ledger_entries SET memo = 'edited'",
    "DELETE FROM ledger_entries",
    "UPDATE ledger_postings SET amount = amount * 2",
    "DELETE FROM ledger_postings",
    "DELETE FROM billing_accounts",
    "UPDATE billing_accounts SET owner_ref = 'someone else'",
])
def test_the_database_rejects_changes_to_the_journal(
    accounts: Accounts, db: Database, new_account: Callable[..., str], statement: str
) -> None:
    a = new_account()
    accounts.deposit(a, USD("3.00"), idempotency_key=f"{a}:ao")
    with pytest.raises(DBAPIError, match="append-only"), db.engine.begin() as conn:
        conn.execute(text(statement))
    assert accounts.verify().ok


def test_truncating_the_journal_is_rejected(db: Database) -> None:
    # SQLite's TRUNCATE is an unqualified DELETE (its fast path is off when triggers exist).
    statement = ("TRUNCATE ledger_postings, ledger_entries CASCADE"
                 if db.dialect == "postgresql" else "DELETE FROM ledger_postings")
    with pytest.raises(DBAPIError, match="append-only"), db.engine.begin() as conn:
        conn.execute(text(statement))


def test_account_status_and_name_may_change(
    accounts: Accounts, db: Database, new_account: Callable[..., str]
) -> None:
    a = new_account()
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE billing_accounts SET display_name = 'Renamed' WHERE id = :a"),
                     {"a": a})
    assert accounts.account(a).display_name == "Renamed"


# ---------------------------------------------------------------------- crash safety


class CrashSwitch:
    """While armed, every flush that writes postings fails: the writer 'dies' mid-append."""

    def __init__(self) -> None:
        self.armed = False
        self.crashes = 0

    def __call__(self, session: Session, ctx: Any, instances: Any) -> None:
        if self.armed and any(isinstance(o, Posting) for o in session.new):
            self.crashes += 1
            raise RuntimeError("simulated crash after the entry row, before commit")


@pytest.fixture
def crash() -> Iterator[CrashSwitch]:
    switch = CrashSwitch()
    event.listen(Session, "before_flush", switch)
    yield switch
    event.remove(Session, "before_flush", switch)


def test_a_crash_mid_append_leaves_nothing_and_the_retry_posts_once(
    accounts: Accounts, db: Database, new_account: Callable[..., str], crash: CrashSwitch
) -> None:
    a = new_account()
    accounts.deposit(a, USD("5.00"), idempotency_key=f"{a}:before")
    before = count(db, Entry), count(db, Posting), head(db)
    crash.armed = True
    with pytest.raises(RuntimeError, match="simulated crash"):
        accounts.deposit(a, USD("7.00"), idempotency_key=f"{a}:crashy")
    assert crash.crashes == 1
    assert (count(db, Entry), count(db, Posting), head(db)) == before
    assert accounts.balance(a).available == USD("5.00")

    crash.armed = False
    retried = accounts.deposit(a, USD("7.00"), idempotency_key=f"{a}:crashy")
    again = accounts.deposit(a, USD("7.00"), idempotency_key=f"{a}:crashy")
    assert not retried.replayed and again.replayed and again.id == retried.id
    assert accounts.balance(a).available == USD("12.00")
    assert accounts.verify().ok
