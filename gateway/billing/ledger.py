"""The journal: append one balanced, hash-chained entry at a time; verify them all.

Why it is shaped this way:

* **Double entry.**  An entry is a set of postings (account, optional hold,
  signed µ$) that sum to exactly zero, so money is only ever moved, never
  created or lost.  :func:`post` refuses anything else and ``verify`` re-checks.
* **Append-only.**  There is no code path that updates or deletes an entry or
  posting; corrections are new entries (credit, refund, adjustment).  The
  database rejects UPDATE/DELETE with triggers as well.
* **Hash chain.**  Each entry's hash is SHA-256 over a canonical JSON of the
  previous entry's hash, its own fields and its sorted postings (see
  :func:`canonical_entry`).  Changing, removing or reordering any committed
  entry breaks every hash after it; ``verify`` recomputes them all.
* **One writer at a time.**  An append locks the single chain-head row
  (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` already
  holds the database write lock), then reads balances, then writes.  Several
  gateway nodes therefore queue rather than fork the chain, and a balance read
  for a funds check cannot be stale.  ``prev_hash`` is also UNIQUE, so even a
  writer that skipped the lock could not fork it.
* **Crash safety and idempotency.**  Entry, postings, balances and head are one
  database transaction: after a crash either all of it is there or none.  Every
  request carries an idempotency key, looked up *after* taking the lock: a
  retry of a committed request gets the original entry back and writes nothing;
  the same key with a different request is an error, never a second posting.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from gateway.billing.db import Database
from gateway.billing.export import check_stored_lines
from gateway.billing.models import (
    ENTRY_KINDS,
    PREPAID_KINDS,
    Account,
    Balance,
    ChainHead,
    Entry,
    Posting,
)
from gateway.billing.money import Money

GENESIS = "0" * 64
HASH_VERSION = 1
SYSTEM_PREFIX = "sys:"
CLEARING = "sys:clearing"  # money received from (or returned to) payment processors
ADJUSTMENTS = "sys:adjustments"  # staff corrections, each with a memo

# The append-only triggers the migrations install, by dialect (verify checks them).
EXPECTED_TRIGGERS: Mapping[str, tuple[str, ...]] = {
    "postgresql": (
        "ledger_entries_append_only",
        "ledger_entries_no_truncate",
        "ledger_postings_append_only",
        "ledger_postings_no_truncate",
        "billing_accounts_no_delete",
        "billing_accounts_no_truncate",
        "billing_accounts_identity",
        "billing_calls_append_only",  # call records are insert-only too (0002)
        "billing_calls_no_truncate",
        "billing_cdrs_append_only",
        "billing_cdrs_no_truncate",
    ),
    "sqlite": (
        "ledger_entries_no_update",
        "ledger_entries_no_delete",
        "ledger_postings_no_update",
        "ledger_postings_no_delete",
        "billing_accounts_no_delete",
        "billing_accounts_identity",
        "billing_calls_no_update",
        "billing_calls_no_delete",
        "billing_cdrs_no_update",
        "billing_cdrs_no_delete",
    ),
}

_KEY_RE = re.compile(r"^[\x21-\x7e]{1,200}$")  # printable ASCII, no spaces
MAX_MEMO = 500


# ---------------------------------------------------------------------- errors


class LedgerError(Exception):
    """A posting request was refused; nothing was written."""


class InvalidRequest(LedgerError, ValueError):
    """Bad input: an amount, id, key or memo that cannot be posted."""


class UnknownAccount(LedgerError):
    """No account with that id."""


class AccountClosed(LedgerError):
    """The account exists but is closed."""


class InsufficientFunds(LedgerError):
    """A prepaid account would go below zero available."""


class HoldError(LedgerError):
    """The hold does not exist, is closed, expired, or belongs to another account."""


class IdempotencyConflict(LedgerError):
    """The idempotency key was already used for a different request."""


class UnbalancedEntry(LedgerError):
    """The postings of an entry do not sum to zero (a bug in the caller)."""


class ChainDamaged(LedgerError):
    """The chain head row is missing: the database was altered outside the gateway."""


# ---------------------------------------------------------------------- value types


@dataclass(frozen=True, slots=True)
class Leg:
    """One posting: a signed amount in µ$ on an account, optionally inside a hold."""

    account_id: str
    amount: int
    hold_id: str | None = None


@dataclass(frozen=True)
class Draft:
    """What a request wants to append, computed under the chain lock."""

    legs: tuple[Leg, ...]
    memo: str = ""
    call_id: str | None = None
    hold_id: str | None = None  # required for hold and release entries
    expires_at: datetime | None = None


@dataclass(frozen=True)
class PostedEntry:
    """A committed journal entry (``replayed``: returned for a repeated key)."""

    id: int
    txn_id: str
    idempotency_key: str
    request_hash: str
    kind: str
    created_at: datetime
    actor: str
    memo: str
    call_id: str | None
    hold_id: str | None
    expires_at: datetime | None
    prev_hash: str
    hash: str
    postings: tuple[Leg, ...]
    replayed: bool = False

    def net(self, account_id: str) -> Money:
        """What this entry changed on an account's balance (available + held)."""
        return Money(sum(p.amount for p in self.postings if p.account_id == account_id))


@dataclass(frozen=True)
class HoldInfo:
    hold_id: str
    account_id: str
    amount: int
    call_id: str | None
    expires_at: datetime | None
    placed_entry_id: int


# ---------------------------------------------------------------------- hashing


def _ts(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _dumps(doc: object) -> bytes:
    return json.dumps(
        doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def sorted_legs(legs: Iterable[Leg]) -> list[Leg]:
    """The canonical posting order: account, hold, amount."""
    return sorted(legs, key=lambda p: (p.account_id, p.hold_id or "", p.amount))


def canonical_entry(
    *,
    entry_id: int,
    prev_hash: str,
    txn_id: str,
    idempotency_key: str,
    request_hash: str,
    kind: str,
    created_at: datetime,
    actor: str,
    memo: str,
    call_id: str | None,
    hold_id: str | None,
    expires_at: datetime | None,
    postings: Iterable[Leg],
) -> bytes:
    """The exact bytes an entry's hash covers (format version ``v``: 1).

    Compact JSON, keys sorted, ASCII only, times as UTC with microseconds,
    amounts as integers, postings sorted by (account, hold, amount).  Anyone can
    re-implement it from this docstring to audit an export of the journal.
    """
    doc = {
        "v": HASH_VERSION,
        "id": entry_id,
        "prev": prev_hash,
        "txn": txn_id,
        "key": idempotency_key,
        "req": request_hash,
        "kind": kind,
        "at": _ts(created_at),
        "actor": actor,
        "memo": memo,
        "call": call_id,
        "hold": hold_id,
        "exp": _ts(expires_at) if expires_at is not None else None,
        "postings": [[p.account_id, p.hold_id, p.amount] for p in sorted_legs(postings)],
    }
    return _dumps(doc)


def hash_entry(**fields: Any) -> str:
    return hashlib.sha256(canonical_entry(**fields)).hexdigest()


def _json_default(value: object) -> object:
    if isinstance(value, Money):
        return value.micros
    if isinstance(value, datetime):
        return _ts(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, tuple | frozenset):
        return list(value)
    raise TypeError(f"cannot hash {type(value).__name__} in a request")


def request_hash(kind: str, request: Mapping[str, object]) -> str:
    """A fingerprint of what was asked (not of the resulting postings).

    A retry must be recognised even though the state it would be computed from
    has since changed (the first attempt's own postings changed it).
    """
    body = json.dumps(
        {"kind": kind, "request": request}, sort_keys=True, separators=(",", ":"),
        default=_json_default, ensure_ascii=True,
    )
    return hashlib.sha256(body.encode("ascii")).hexdigest()


def entry_fields_hash(entry: Entry, postings: Iterable[Leg]) -> str:
    """Recompute the hash of a stored entry from its columns and postings."""
    return hash_entry(
        entry_id=entry.id, prev_hash=entry.prev_hash, txn_id=entry.txn_id,
        idempotency_key=entry.idempotency_key, request_hash=entry.request_hash,
        kind=entry.kind, created_at=entry.created_at, actor=entry.actor, memo=entry.memo,
        call_id=entry.call_id, hold_id=entry.hold_id, expires_at=entry.expires_at,
        postings=postings,
    )


# ---------------------------------------------------------------------- checks


def check_key(key: object) -> str:
    if not isinstance(key, str) or not _KEY_RE.match(key):
        raise InvalidRequest(
            f"idempotency key: expected 1 to 200 printable ASCII characters without spaces, "
            f"got {key!r}"
        )
    return key


def check_memo(memo: object) -> str:
    if not isinstance(memo, str):
        raise InvalidRequest(f"memo: expected text, got {memo!r}")
    if len(memo) > MAX_MEMO:
        raise InvalidRequest(f"memo: at most {MAX_MEMO} characters, got {len(memo)}")
    return memo


def is_system(account_id: str) -> bool:
    return account_id.startswith(SYSTEM_PREFIX)


def consolidate(legs: Iterable[Leg]) -> list[Leg]:
    """Merge legs on the same (account, hold) and drop zeros; canonical order."""
    sums: dict[tuple[str, str | None], int] = defaultdict(int)
    for leg in legs:
        if isinstance(leg.amount, bool) or not isinstance(leg.amount, int):
            raise InvalidRequest(f"posting amount: expected integer µ$, got {leg.amount!r}")
        sums[(leg.account_id, leg.hold_id)] += leg.amount
    return sorted_legs(Leg(a, amt, h) for (a, h), amt in sums.items() if amt != 0)


# ---------------------------------------------------------------------- reading


class LedgerView:
    """Reads used to build a draft, inside the append's transaction (under the lock)."""

    def __init__(self, session: Session, now: datetime) -> None:
        self.session = session
        self.now = now

    def account(self, account_id: str) -> Account | None:
        return self.session.get(Account, account_id)

    def require_account(self, account_id: str) -> Account:
        if not isinstance(account_id, str) or not account_id:
            raise InvalidRequest(f"account: expected an account id, got {account_id!r}")
        acct = self.account(account_id)
        if acct is None:
            raise UnknownAccount(f"account {account_id!r}: no such account")
        return acct

    def require_open(self, account_id: str) -> Account:
        acct = self.require_account(account_id)
        if acct.status != "open":
            raise AccountClosed(f"account {account_id!r} is {acct.status}")
        return acct

    def balance(self, account_id: str) -> tuple[int, int]:
        """(available, held) in µ$."""
        row = self.session.get(Balance, account_id)
        return (row.available, row.held) if row is not None else (0, 0)

    def ensure_system_account(self, account_id: str, display_name: str) -> None:
        """Create a provider-side account the first time it is posted to."""
        if not is_system(account_id):
            raise InvalidRequest(f"{account_id!r} is not a system account id")
        if self.account(account_id) is None:
            create_account_row(self.session, account_id, "system", account_id, display_name,
                               self.now)

    def hold(self, hold_id: str) -> HoldInfo | None:
        return load_hold(self.session, hold_id)

    def call_postings(self, call_id: str, kinds: Sequence[str]) -> list[tuple[str, Leg]]:
        rows = self.session.execute(
            select(Entry.kind, Posting.account_id, Posting.amount, Posting.hold_id)
            .join(Posting, Posting.entry_id == Entry.id)
            .where(Entry.call_id == call_id, Entry.kind.in_(kinds))
            .order_by(Entry.id, Posting.line_no)
        ).all()
        return [(k, Leg(a, amt, h)) for k, a, amt, h in rows]


def create_account_row(
    session: Session, account_id: str, owner_kind: str, owner_ref: str, display_name: str,
    now: datetime,
) -> Account:
    acct = Account(
        id=account_id, owner_kind=owner_kind, owner_ref=owner_ref,
        display_name=display_name, currency="USD", status="open", created_at=now,
    )
    session.add(acct)
    session.add(Balance(account_id=account_id, available=0, held=0, last_entry_id=0))
    session.flush()
    return acct


def load_hold(session: Session, hold_id: str) -> HoldInfo | None:
    """A hold's state, derived from its postings (there is no mutable hold row)."""
    rows = session.execute(
        select(Posting.account_id, func.sum(Posting.amount), func.min(Posting.entry_id))
        .where(Posting.hold_id == hold_id)
        .group_by(Posting.account_id)
    ).all()
    if not rows:
        return None
    if len(rows) > 1:
        raise ChainDamaged(f"hold {hold_id!r} has postings on more than one account")
    account_id, amount, first_id = rows[0]
    placed = session.get(Entry, first_id)
    assert placed is not None
    expires_at = session.scalar(
        select(Entry.expires_at)
        .where(Entry.hold_id == hold_id, Entry.kind == "hold")
        .order_by(Entry.id.desc())
        .limit(1)
    )
    return HoldInfo(hold_id, account_id, int(amount), placed.call_id, expires_at, first_id)


def load_entry(session: Session, entry: Entry, *, replayed: bool = False) -> PostedEntry:
    legs = tuple(
        Leg(p.account_id, p.amount, p.hold_id)
        for p in session.scalars(
            select(Posting).where(Posting.entry_id == entry.id).order_by(Posting.line_no)
        )
    )
    return PostedEntry(
        id=entry.id, txn_id=entry.txn_id, idempotency_key=entry.idempotency_key,
        request_hash=entry.request_hash, kind=entry.kind, created_at=entry.created_at,
        actor=entry.actor, memo=entry.memo, call_id=entry.call_id, hold_id=entry.hold_id,
        expires_at=entry.expires_at, prev_hash=entry.prev_hash, hash=entry.hash,
        postings=legs, replayed=replayed,
    )


# ---------------------------------------------------------------------- appending


def lock_head(session: Session) -> ChainHead:
    """Take the chain lock for the rest of this transaction."""
    head = session.scalar(select(ChainHead).where(ChainHead.id == 1).with_for_update())
    if head is None:
        raise ChainDamaged("the ledger chain head row is missing; run `gateway billing verify`")
    return head


def post(
    session: Session,
    *,
    kind: str,
    idempotency_key: str,
    request: Mapping[str, object],
    build: Callable[[LedgerView], Draft],
    now: datetime,
    actor: str,
) -> PostedEntry:
    """Append one entry (or return the one already posted under this key).

    ``build`` computes the postings from the current state; it runs after the
    chain lock and the idempotency check, so what it reads cannot change before
    the entry is written.  Any exception leaves the transaction to be rolled
    back by the caller: nothing is written.
    """
    if kind not in ENTRY_KINDS:
        raise InvalidRequest(f"kind: expected one of {', '.join(ENTRY_KINDS)}, got {kind!r}")
    check_key(idempotency_key)
    if not isinstance(now, datetime) or now.utcoffset() is None:
        raise InvalidRequest(f"now: expected an aware datetime, got {now!r}")
    now = now.astimezone(UTC)
    rhash = request_hash(kind, request)

    head = lock_head(session)
    existing = session.scalar(select(Entry).where(Entry.idempotency_key == idempotency_key))
    if existing is not None:
        if existing.request_hash != rhash or existing.kind != kind:
            raise IdempotencyConflict(
                f"idempotency key {idempotency_key!r} was already used by entry {existing.id} "
                f"({existing.kind}) for a different request; nothing was written"
            )
        return load_entry(session, existing, replayed=True)

    view = LedgerView(session, now)
    draft = build(view)
    memo = check_memo(draft.memo)
    legs = consolidate(draft.legs)
    total = sum(leg.amount for leg in legs)
    if total != 0:
        raise UnbalancedEntry(f"{kind}: postings sum to {Money(total)}, not $0.00")
    _check_hold_entry(kind, draft.hold_id, legs)
    _apply(session, view, legs, head.last_entry_id + 1)

    entry_id = head.last_entry_id + 1
    txn_id = str(uuid.uuid4())
    expires_at = draft.expires_at.astimezone(UTC) if draft.expires_at is not None else None
    digest = hash_entry(
        entry_id=entry_id, prev_hash=head.head_hash, txn_id=txn_id,
        idempotency_key=idempotency_key, request_hash=rhash, kind=kind, created_at=now,
        actor=actor, memo=memo, call_id=draft.call_id, hold_id=draft.hold_id,
        expires_at=expires_at, postings=legs,
    )
    session.add(Entry(
        id=entry_id, txn_id=txn_id, idempotency_key=idempotency_key, request_hash=rhash,
        kind=kind, created_at=now, actor=actor, memo=memo, call_id=draft.call_id,
        hold_id=draft.hold_id, expires_at=expires_at, prev_hash=head.head_hash, hash=digest,
    ))
    session.flush()  # the entry row first: postings reference it
    session.add_all(
        Posting(entry_id=entry_id, line_no=i, account_id=leg.account_id,
                hold_id=leg.hold_id, amount=leg.amount)
        for i, leg in enumerate(legs)
    )
    prev_hash = head.head_hash
    head.last_entry_id = entry_id
    head.head_hash = digest
    session.flush()
    return PostedEntry(
        id=entry_id, txn_id=txn_id, idempotency_key=idempotency_key, request_hash=rhash,
        kind=kind, created_at=now, actor=actor, memo=memo, call_id=draft.call_id,
        hold_id=draft.hold_id, expires_at=expires_at, prev_hash=prev_hash, hash=digest,
        postings=tuple(legs),
    )


def _check_hold_entry(kind: str, hold_id: str | None, legs: Sequence[Leg]) -> None:
    """Hold and release entries are about one hold, and only that hold."""
    if kind in ("hold", "release"):
        if hold_id is None:
            raise InvalidRequest(f"{kind}: the entry must name its hold")
        if any(leg.hold_id not in (None, hold_id) for leg in legs):
            raise InvalidRequest(f"{kind}: postings may only move hold {hold_id!r}")
    elif hold_id is not None:
        raise InvalidRequest(f"{kind}: only hold and release entries name a hold")


def _apply(session: Session, view: LedgerView, legs: Sequence[Leg], entry_id: int) -> None:
    """Check the funds rules for these legs and update the cached balances."""
    deltas: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    hold_deltas: dict[str, tuple[str, int]] = {}
    for leg in legs:
        acct = view.require_account(leg.account_id)
        if acct.status != "open":
            raise AccountClosed(f"account {acct.id!r} is {acct.status}")
        if leg.hold_id is None:
            deltas[acct.id][0] += leg.amount
        else:
            deltas[acct.id][1] += leg.amount
            if leg.hold_id in hold_deltas:  # legs are consolidated: same hold, other account
                raise HoldError(f"hold {leg.hold_id!r} cannot be on two accounts")
            hold_deltas[leg.hold_id] = (acct.id, leg.amount)
    for hold_id, (account_id, delta) in hold_deltas.items():
        info = view.hold(hold_id)
        if info is not None and info.account_id != account_id:
            raise HoldError(f"hold {hold_id!r} belongs to account {info.account_id!r}")
        after = (info.amount if info is not None else 0) + delta
        if after < 0:
            raise HoldError(
                f"hold {hold_id!r}: only {Money(after - delta)} is held, cannot take "
                f"{Money(-delta)}"
            )
    for account_id, (d_avail, d_held) in deltas.items():
        row = session.get(Balance, account_id)
        if row is None:
            raise ChainDamaged(f"account {account_id!r} has no balance row")
        acct = view.require_account(account_id)
        available = row.available + d_avail
        if d_avail < 0 and available < 0 and acct.owner_kind in PREPAID_KINDS:
            raise InsufficientFunds(
                f"account {account_id!r}: available {Money(row.available)}, "
                f"needs {Money(-d_avail)}; nothing was written"
            )
        row.available = available
        row.held += d_held
        row.last_entry_id = entry_id


# ---------------------------------------------------------------------- verifying


@dataclass
class VerifyReport:
    """What ``verify`` checked and every problem it found."""

    database: str
    entries: int = 0
    postings: int = 0
    accounts: int = 0
    system_accounts: int = 0
    head_id: int = 0
    head_hash: str = GENESIS
    active_holds: int = 0
    held_total: int = 0
    triggers_checked: int = 0
    anchors_checked: int = 0
    cdr_lines_checked: int = 0  # stored CDR export lines compared with their columns
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def problem(self, text: str) -> None:
        self.problems.append(text)

    def format(self, limit: int = 100) -> str:
        lines = [
            f"ledger: {self.database}",
            f"entries: {self.entries}, postings: {self.postings}",
            f"chain head: entry {self.head_id} {self.head_hash}",
            f"accounts: {self.accounts} ({self.system_accounts} system)",
            f"active holds: {self.active_holds}, {Money(self.held_total)} held",
            f"append-only triggers checked: {self.triggers_checked}",
            f"CDR export lines checked: {self.cdr_lines_checked}",
        ]
        if self.anchors_checked:
            lines.append(f"anchors checked: {self.anchors_checked}")
        if self.ok:
            lines.append("OK: hash chain intact, every entry balances, balances match postings, "
                         "CDR export lines match their records")
        else:
            lines.append(f"FAILED: {len(self.problems)} problem(s)")
            lines.extend(f"  - {p}" for p in self.problems[:limit])
            if len(self.problems) > limit:
                lines.append(f"  ... and {len(self.problems) - limit} more")
        return "\n".join(lines)


def _installed_triggers(session: Session, dialect: str) -> dict[str, bool]:
    """Trigger name -> enabled."""
    if dialect == "postgresql":
        rows = session.execute(text(
            "SELECT t.tgname, t.tgenabled <> 'D' FROM pg_trigger t "
            "JOIN pg_class c ON c.oid = t.tgrelid "
            "WHERE NOT t.tgisinternal AND c.relname IN "
            "('ledger_entries', 'ledger_postings', 'billing_accounts', 'billing_calls', "
            "'billing_cdrs') "
            "AND pg_table_is_visible(c.oid)"
        )).all()
    else:
        rows = session.execute(text(
            "SELECT name, 1 FROM sqlite_master WHERE type = 'trigger'"
        )).all()
    return {str(name): bool(enabled) for name, enabled in rows}


def verify(
    db: Database, *, anchors: Sequence[tuple[int, str]] = (), batch: int = 1000
) -> VerifyReport:
    """Recompute chain and balances, re-render stored CDR lines; report, never repair."""
    report = VerifyReport(database=db.url)
    anchor_map = dict(anchors)
    with db.read() as s:
        accounts = {a.id: a for a in s.scalars(select(Account))}
        report.accounts = len(accounts)
        report.system_accounts = sum(1 for a in accounts.values() if a.owner_kind == "system")

        triggers = _installed_triggers(s, db.dialect)
        for name in EXPECTED_TRIGGERS.get(db.dialect, ()):
            report.triggers_checked += 1
            if name not in triggers:
                report.problem(f"append-only trigger {name} is missing")
            elif not triggers[name]:
                report.problem(f"append-only trigger {name} is disabled")

        running: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        holds: dict[str, int] = defaultdict(int)
        hold_owner: dict[str, str] = {}
        prev = GENESIS
        expected_id = 1
        last_id = 0
        while True:
            entries = list(s.scalars(
                select(Entry).where(Entry.id > last_id).order_by(Entry.id).limit(batch)
            ))
            if not entries:
                break
            by_entry: dict[int, list[Leg]] = defaultdict(list)
            for p in s.scalars(
                select(Posting)
                .where(Posting.entry_id.between(entries[0].id, entries[-1].id))
                .order_by(Posting.entry_id, Posting.line_no)
            ):
                by_entry[p.entry_id].append(Leg(p.account_id, p.amount, p.hold_id))
            for e in entries:
                legs = by_entry.get(e.id, [])
                _verify_entry(report, e, legs, prev, expected_id, accounts, running, holds,
                              hold_owner)
                if e.id in anchor_map:
                    report.anchors_checked += 1
                    if anchor_map.pop(e.id) != e.hash:
                        report.problem(f"entry {e.id}: hash differs from the recorded anchor")
                prev = e.hash
                expected_id = e.id + 1
                report.entries += 1
                report.postings += len(legs)
                report.head_id, report.head_hash = e.id, e.hash
            last_id = entries[-1].id

        for missing in sorted(anchor_map):
            report.problem(f"anchor entry {missing} is not in the ledger (entries removed?)")
        stored_postings = s.scalar(select(func.count()).select_from(Posting)) or 0
        if stored_postings != report.postings:
            report.problem(
                f"{stored_postings - report.postings} posting(s) belong to no entry"
            )
        _verify_head(report, s.get(ChainHead, 1))
        _verify_balances(report, s, accounts, running)
        report.active_holds = sum(1 for v in holds.values() if v > 0)
        report.held_total = sum(v for v in holds.values() if v > 0)
        # The export writes a CDR's stored line as it is: it must say what the record says.
        stored = check_stored_lines(s, batch)
        report.cdr_lines_checked = stored.checked
        for call_id in stored.differ:
            report.problem(f"CDR {call_id!r}: its stored export line (export_csv) differs "
                           "from the rendering of its columns")
    return report


def _verify_entry(
    report: VerifyReport,
    e: Entry,
    legs: list[Leg],
    prev: str,
    expected_id: int,
    accounts: Mapping[str, Account],
    running: dict[str, list[int]],
    holds: dict[str, int],
    hold_owner: dict[str, str],
) -> None:
    if e.id != expected_id:
        report.problem(f"entry ids jump from {expected_id - 1} to {e.id} (entries missing)")
    if e.prev_hash != prev:
        report.problem(f"entry {e.id}: prev_hash does not match the previous entry's hash")
    recomputed = entry_fields_hash(e, legs)
    if recomputed != e.hash:
        report.problem(
            f"entry {e.id} ({e.kind}): hash mismatch (stored {e.hash[:16]}..., recomputed "
            f"{recomputed[:16]}...): the entry or its postings were changed"
        )
    total = sum(leg.amount for leg in legs)
    if total != 0:
        report.problem(f"entry {e.id} ({e.kind}): postings sum to {Money(total)}, not $0.00")
    try:
        _check_hold_entry(e.kind, e.hold_id, legs)
    except InvalidRequest as exc:
        report.problem(f"entry {e.id}: {exc}")
    touched: set[str] = set()
    for leg in legs:
        if leg.account_id not in accounts:
            report.problem(f"entry {e.id}: posting to unknown account {leg.account_id!r}")
            continue
        touched.add(leg.account_id)
        if leg.hold_id is None:
            running[leg.account_id][0] += leg.amount
            continue
        running[leg.account_id][1] += leg.amount
        owner = hold_owner.setdefault(leg.hold_id, leg.account_id)
        if owner != leg.account_id:
            report.problem(f"entry {e.id}: hold {leg.hold_id!r} used on two accounts")
        holds[leg.hold_id] += leg.amount
        if holds[leg.hold_id] < 0:
            report.problem(f"entry {e.id}: hold {leg.hold_id!r} goes below zero")
    for account_id in sorted(touched):
        acct = accounts[account_id]
        if acct.owner_kind in PREPAID_KINDS and running[account_id][0] < 0:
            report.problem(
                f"entry {e.id}: prepaid account {account_id!r} has available "
                f"{Money(running[account_id][0])} (below zero)"
            )


def _verify_head(report: VerifyReport, head: ChainHead | None) -> None:
    if head is None:
        report.problem("the chain head row is missing")
    elif head.last_entry_id != report.head_id or head.head_hash != report.head_hash:
        report.problem(
            f"chain head says entry {head.last_entry_id} {head.head_hash[:16]}..., the journal "
            f"ends at entry {report.head_id} {report.head_hash[:16]}... (entries removed or "
            "head altered)"
        )


def _verify_balances(
    report: VerifyReport, s: Session, accounts: Mapping[str, Account],
    running: Mapping[str, list[int]],
) -> None:
    stored = {b.account_id: b for b in s.scalars(select(Balance))}
    for account_id in sorted(accounts):
        available, held = running.get(account_id, [0, 0])
        row = stored.get(account_id)
        if row is None:
            report.problem(f"account {account_id!r} has no balance row")
            continue
        if (row.available, row.held) != (available, held):
            report.problem(
                f"account {account_id!r}: stored balance available {Money(row.available)} "
                f"held {Money(row.held)}, postings give available {Money(available)} "
                f"held {Money(held)}"
            )
        if held < 0:
            report.problem(f"account {account_id!r}: held {Money(held)} is below zero")
    for account_id in sorted(set(stored) - set(accounts)):
        report.problem(f"balance row for unknown account {account_id!r}")
