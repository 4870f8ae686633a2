"""``verify`` catches edits made behind the gateway's back (triggers dropped or disabled).

Each test gets a database of its own, fills it through the API, then edits it
with raw SQL as an insider with database rights would.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from billing.billing_scenario import build
from sqlalchemy import Connection, select, text

from gateway.billing.accounts import Accounts
from gateway.billing.db import Database
from gateway.billing.ledger import (
    EXPECTED_TRIGGERS,
    Leg,
    entry_fields_hash,
    verify,
)
from gateway.billing.models import Entry, Posting
from gateway.billing.money import Money

USD = Money.parse
JOURNAL = ("ledger_entries", "ledger_postings", "billing_accounts", "billing_cdrs")


def populate(db: Database) -> tuple[Accounts, str]:
    """Six entries: two deposits, a hold, its release, a refund, an adjustment."""
    acc = Accounts(db, actor="test")
    a = acc.open_account("visitor", "tamper").id
    acc.deposit(a, USD("20.00"), idempotency_key="e1")
    acc.deposit(a, USD("5.00"), idempotency_key="e2")
    h = acc.place_hold(a, USD("3.00"), idempotency_key="e3")
    acc.release_hold(h.hold_id, idempotency_key="e4")
    acc.refund(a, USD("1.00"), idempotency_key="e5")
    acc.adjust(a, USD("0.50"), idempotency_key="e6", memo="goodwill")
    report = verify(db)
    assert report.ok and report.entries == 6, report.format()
    return acc, a


@contextmanager
def triggers_off(db: Database) -> Iterator[Connection]:
    """A transaction in which the append-only triggers do not fire."""
    with db.engine.begin() as conn:
        if db.dialect == "postgresql":
            for table in JOURNAL:
                conn.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
            yield conn
            for table in JOURNAL:
                conn.execute(text(f"ALTER TABLE {table} ENABLE TRIGGER USER"))
        else:  # SQLite cannot disable a trigger: drop it and put it back afterwards
            saved = conn.execute(text(
                "SELECT name, sql FROM sqlite_master WHERE type = 'trigger'")).all()
            for name, _ in saved:
                conn.execute(text(f"DROP TRIGGER {name}"))
            yield conn
            for _, sql in saved:
                conn.execute(text(sql))


def run(db: Database, *statements: str, **params: Any) -> None:
    with triggers_off(db) as conn:
        for statement in statements:
            conn.execute(text(statement), params)


def problems(db: Database, anchors: Sequence[tuple[int, str]] = ()) -> str:
    report = verify(db, anchors=anchors)
    assert not report.ok, report.format()
    assert report.triggers_checked == len(EXPECTED_TRIGGERS[db.dialect])
    return "\n".join(report.problems)


def test_a_changed_amount_is_caught_even_when_balanced_and_balances_fixed(
    fresh_db: Database,
) -> None:
    _, a = populate(fresh_db)
    # Skim $1 from the first deposit: both legs changed (still balanced) and the
    # cached balance adjusted to match, so only the hash chain can tell.
    run(fresh_db,
        "UPDATE ledger_postings SET amount = amount - 1000000 WHERE entry_id = 1 AND amount > 0",
        "UPDATE ledger_postings SET amount = amount + 1000000 WHERE entry_id = 1 AND amount < 0",
        "UPDATE ledger_balances SET available = available - 1000000 WHERE account_id = :a",
        "UPDATE ledger_balances SET available = available + 1000000 "
        "WHERE account_id = 'sys:clearing'",
        a=a)
    found = problems(fresh_db)
    assert "entry 1 (deposit): hash mismatch" in found
    assert "sum to" not in found and "stored balance" not in found


def test_a_one_sided_edit_is_unbalanced_and_disagrees_with_the_balances(
    fresh_db: Database,
) -> None:
    _, a = populate(fresh_db)
    run(fresh_db, "UPDATE ledger_postings SET amount = 99000000 WHERE entry_id = 2 "
                  "AND account_id = :a", a=a)
    found = problems(fresh_db)
    assert "entry 2 (deposit): hash mismatch" in found
    assert "entry 2 (deposit): postings sum to $94.00, not $0.00" in found
    assert f"account '{a}': stored balance" in found


def test_an_edited_memo_is_caught(fresh_db: Database) -> None:
    populate(fresh_db)
    run(fresh_db, "UPDATE ledger_entries SET memo = 'nothing to see' WHERE id = 6")
    assert "entry 6 (adjustment): hash mismatch" in problems(fresh_db)


def test_a_removed_entry_breaks_the_chain(fresh_db: Database) -> None:
    populate(fresh_db)
    run(fresh_db, "DELETE FROM ledger_postings WHERE entry_id = 5",
        "DELETE FROM ledger_entries WHERE id = 5")
    found = problems(fresh_db)
    assert "entry ids jump from 4 to 6" in found
    assert "entry 6: prev_hash does not match" in found
    assert "stored balance" in found  # the refund is still in the cached balances


def test_a_removed_last_entry_disagrees_with_the_chain_head(fresh_db: Database) -> None:
    populate(fresh_db)
    run(fresh_db, "DELETE FROM ledger_postings WHERE entry_id = 6",
        "DELETE FROM ledger_entries WHERE id = 6",
        "UPDATE ledger_balances SET available = available - 500000 WHERE account_id NOT LIKE "
        "'sys:%'",
        "UPDATE ledger_balances SET available = available + 500000 "
        "WHERE account_id = 'sys:adjustments'")
    assert "chain head says entry 6" in problems(fresh_db)


def test_a_recomputed_chain_passes_alone_but_not_against_a_recorded_anchor(
    fresh_db: Database,
) -> None:
    populate(fresh_db)
    anchor = verify(fresh_db)
    recorded = (anchor.head_id, anchor.head_hash)  # e.g. printed on last month's statement
    # An insider who edits entry 3 and re-hashes everything after it, head included.
    with triggers_off(fresh_db) as conn:
        conn.execute(text("UPDATE ledger_entries SET memo = 'rewritten' WHERE id = 3"))
        prev = conn.execute(select(Entry.hash).where(Entry.id == 2)).scalar_one()
        for entry_id in range(3, 7):
            e = conn.execute(select(Entry).where(Entry.id == entry_id)).one()
            legs = [Leg(p.account_id, p.amount, p.hold_id) for p in conn.execute(
                select(Posting).where(Posting.entry_id == entry_id))]
            fields = Entry(**{c: getattr(e, c) for c in e._fields})
            fields.prev_hash = prev
            new = entry_fields_hash(fields, legs)
            conn.execute(text("UPDATE ledger_entries SET prev_hash = :p, hash = :h WHERE id = :i"),
                         {"p": prev, "h": new, "i": entry_id})
            prev = new
        conn.execute(text("UPDATE ledger_chain_head SET head_hash = :h"), {"h": prev})
    assert verify(fresh_db).ok  # self-consistent: the hash chain alone cannot tell
    assert "entry 6: hash differs from the recorded anchor" in problems(fresh_db, [recorded])


def test_an_edited_cached_balance_is_caught(fresh_db: Database) -> None:
    _, a = populate(fresh_db)
    with fresh_db.engine.begin() as conn:  # not a journal table: no trigger in the way
        conn.execute(text("UPDATE ledger_balances SET available = available + 100000000 "
                          "WHERE account_id = :a"), {"a": a})
    assert f"account '{a}': stored balance available $124.50" in problems(fresh_db)


def test_missing_or_disabled_triggers_are_reported(fresh_db: Database) -> None:
    populate(fresh_db)
    with fresh_db.engine.begin() as conn:
        if fresh_db.dialect == "postgresql":
            conn.execute(text("DROP TRIGGER ledger_entries_append_only ON ledger_entries"))
            conn.execute(text(
                "ALTER TABLE ledger_postings DISABLE TRIGGER ledger_postings_append_only"))
        else:
            conn.execute(text("DROP TRIGGER ledger_entries_no_update"))
    found = problems(fresh_db)
    if fresh_db.dialect == "postgresql":
        assert "append-only trigger ledger_entries_append_only is missing" in found
        assert "append-only trigger ledger_postings_append_only is disabled" in found
    else:
        assert "append-only trigger ledger_entries_no_update is missing" in found


def test_an_edited_cdr_export_line_is_caught(fresh_db: Database) -> None:
    build(fresh_db)  # a month of calls, each CDR with its export line
    report = verify(fresh_db)
    assert report.ok and report.cdr_lines_checked == 7, report.format()
    # The line an export hands the auditor says less than the record does.
    run(fresh_db, "UPDATE billing_cdrs SET export_csv = replace(export_csv, ',0.38,', "
                  "',0.19,') WHERE call_id = 'call-may-2'")
    found = problems(fresh_db)
    assert "CDR 'call-may-2': its stored export line (export_csv) differs" in found
    assert "call-may-1" not in found and "hash mismatch" not in found
