"""SQLAlchemy models of the billing ledger (the migrations create the same tables).

Tables:

``billing_accounts``
    Who holds money: visitors' and incarcerated people's prepaid accounts,
    agencies (postpaid: a negative balance is what the agency owes) and the
    provider's system accounts (ids starting ``sys:``).  Rows are never deleted;
    only ``status`` and ``display_name`` may change.
``ledger_entries``
    The append-only journal.  ``id`` is gap-free and assigned under the chain
    lock; ``prev_hash``/``hash`` chain every entry to the one before.  Hold and
    release entries name their hold (``hold_id``, ``expires_at``), so an
    extension that moves no money still records the new expiry.
``ledger_postings``
    The double-entry legs of an entry, amounts in signed integer micro-dollars
    that sum to zero per entry.  A posting with a ``hold_id`` moves money into
    (positive) or out of (negative) that hold's reserved funds; without one it
    is the account's available money.
``ledger_chain_head``
    One row: the id and hash of the last entry.  Appends lock it, so concurrent
    writers (several gateway nodes) queue instead of forking the chain.
``ledger_balances``
    Per account, the sums of its postings (available and held), kept in the same
    transaction as each append so reading a balance is one row; ``verify``
    recomputes them from the postings.
``billing_calls``
    One row per billed call, written when its funds are reserved: what never
    changes during the call (facility, service, payers and shares, holds,
    increment rule, the daily free seconds granted).  A row with no CDR is a
    call still open, or one to recover after a crash.  Insert-only.
``billing_cdrs``
    One call detail record per call, written once, in the same transaction as
    the call's settlement entry (so a CDR exists exactly when the call is
    settled).  Insert-only.  It carries its CSV export row, rendered once when
    it is written (``export_csv``, see :mod:`gateway.billing.export`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

OWNER_KINDS = ("visitor", "incarcerated", "agency", "system")
PREPAID_KINDS = ("visitor", "incarcerated")
ACCOUNT_STATUSES = ("open", "closed")
ENTRY_KINDS = ("deposit", "hold", "release", "charge", "credit", "refund", "adjustment", "tax")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s",
    "pk": "pk_%(table_name)s",
}


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on both dialects (SQLite stores them naive, as UTC).

    The hash of an entry covers its timestamp, so what is read back must be
    exactly what was written: microseconds, UTC, aware.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime) or value.utcoffset() is None:
            raise ValueError(f"expected an aware datetime, got {value!r}")
        utc = value.astimezone(UTC)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Account(Base):
    __tablename__ = "billing_accounts"
    __table_args__ = (
        CheckConstraint(_in("owner_kind", OWNER_KINDS), name="owner_kind"),
        CheckConstraint(_in("status", ACCOUNT_STATUSES), name="status"),
        CheckConstraint("currency = 'USD'", name="currency"),
        Index("ix_billing_accounts_owner", "owner_kind", "owner_ref"),
    )

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    owner_kind: Mapped[str] = mapped_column(String(16))
    owner_ref: Mapped[str] = mapped_column(String(128))
    display_name: Mapped[str] = mapped_column(String(200))
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Entry(Base):
    __tablename__ = "ledger_entries"
    __table_args__ = (
        CheckConstraint("id > 0", name="id_positive"),
        CheckConstraint(_in("kind", ENTRY_KINDS), name="kind"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    txn_id: Mapped[str] = mapped_column(String(36), unique=True)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor: Mapped[str] = mapped_column(String(100))
    memo: Mapped[str] = mapped_column(String(500))
    call_id: Mapped[str | None] = mapped_column(String(128), index=True)
    hold_id: Mapped[str | None] = mapped_column(String(64), index=True)  # hold/release entries
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    prev_hash: Mapped[str] = mapped_column(String(64), unique=True)  # a fork is a DB error
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class Posting(Base):
    __tablename__ = "ledger_postings"
    __table_args__ = (CheckConstraint("amount <> 0", name="amount_nonzero"),)

    entry_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("ledger_entries.id"), primary_key=True
    )
    line_no: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    account_id: Mapped[str] = mapped_column(
        String(200), ForeignKey("billing_accounts.id"), index=True
    )
    hold_id: Mapped[str | None] = mapped_column(String(64), index=True)
    amount: Mapped[int] = mapped_column(BigInteger)


class ChainHead(Base):
    __tablename__ = "ledger_chain_head"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last_entry_id: Mapped[int] = mapped_column(BigInteger)
    head_hash: Mapped[str] = mapped_column(String(64))


class Balance(Base):
    __tablename__ = "ledger_balances"
    __table_args__ = (CheckConstraint("held >= 0", name="held_not_negative"),)

    account_id: Mapped[str] = mapped_column(
        String(200), ForeignKey("billing_accounts.id"), primary_key=True
    )
    available: Mapped[int] = mapped_column(BigInteger)
    held: Mapped[int] = mapped_column(BigInteger)
    last_entry_id: Mapped[int] = mapped_column(BigInteger)


class CallStart(Base):
    """A billed call's fixed facts, from reservation on (see the module docstring)."""

    __tablename__ = "billing_calls"
    __table_args__ = (
        # an account's calls of one day, for its free-minute allowance (0004)
        Index("ix_billing_calls_free_account_setup_at", "free_account", "setup_at"),
    )

    call_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    node_id: Mapped[str] = mapped_column(String(100), index=True)
    plan: Mapped[str] = mapped_column(String(100))
    facility_id: Mapped[str] = mapped_column(String(64))
    service: Mapped[str] = mapped_column(String(8))
    caller: Mapped[str] = mapped_column(String(128))
    callee: Mapped[str] = mapped_column(String(128))
    setup_at: Mapped[datetime] = mapped_column(UTCDateTime())
    increment: Mapped[str] = mapped_column(String(32))
    increment_seconds: Mapped[int] = mapped_column(Integer)
    # [[kind, account, share percent], ...]
    payers: Mapped[Any] = mapped_column(JSON, nullable=False)
    holds: Mapped[Any] = mapped_column(JSON, nullable=False)  # [[account, hold id], ...]
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # The account whose daily free minutes the call draws on (None: the plan gives
    # none) and the free seconds it was granted at reservation (0004).
    free_account: Mapped[str | None] = mapped_column(String(200))
    free_seconds: Mapped[int] = mapped_column(Integer, server_default="0")


class CallRecord(Base):
    """The call detail record: what happened on a call and what it cost, once."""

    __tablename__ = "billing_cdrs"
    __table_args__ = (
        CheckConstraint("media_seconds >= 0", name="media_seconds"),
        CheckConstraint("total >= 0 AND credit_total >= 0", name="amounts"),
        Index("ix_billing_cdrs_end_at_call_id", "end_at", "call_id"),  # exports (0003)
    )

    call_id: Mapped[str] = mapped_column(
        String(128), ForeignKey("billing_calls.call_id"), primary_key=True
    )
    visit_id: Mapped[str | None] = mapped_column(String(64))  # once visits exist
    node_id: Mapped[str] = mapped_column(String(100))
    facility_id: Mapped[str] = mapped_column(String(64), index=True)
    tier: Mapped[str] = mapped_column(String(200))
    cap_period: Mapped[str] = mapped_column(String(64))
    service: Mapped[str] = mapped_column(String(8))
    caller: Mapped[str] = mapped_column(String(128))
    callee: Mapped[str] = mapped_column(String(128))
    # [[kind, account, share percent], ...]
    payers: Mapped[Any] = mapped_column(JSON, nullable=False)
    setup_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    answer_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    end_at: Mapped[datetime] = mapped_column(UTCDateTime())
    media_seconds: Mapped[int] = mapped_column(Integer)  # billed media time
    metered_seconds: Mapped[int] = mapped_column(Integer)
    uncharged_seconds: Mapped[int] = mapped_column(Integer)  # metered beyond the funds
    increment: Mapped[str] = mapped_column(String(32))
    billed_units: Mapped[int] = mapped_column(Integer)
    billed_unit: Mapped[str] = mapped_column(String(8))
    rate_per_minute: Mapped[int] = mapped_column(BigInteger)  # µ$
    cap_per_minute: Mapped[int] = mapped_column(BigInteger)  # µ$, the FCC cap applied
    additive_per_minute: Mapped[int] = mapped_column(BigInteger)  # µ$
    total: Mapped[int] = mapped_column(BigInteger)  # µ$, before credits
    amounts: Mapped[Any] = mapped_column(JSON, nullable=False)  # {account: µ$ charged}
    credit_total: Mapped[int] = mapped_column(BigInteger)  # µ$
    credits: Mapped[Any] = mapped_column(JSON, nullable=False)  # {account: µ$ credited}
    credit_reason: Mapped[str] = mapped_column(String(500))
    # [{kind, label, amount, explanation}]
    lines: Mapped[Any] = mapped_column(JSON, nullable=False)
    explanation: Mapped[str] = mapped_column(Text)
    disconnect_cause: Mapped[str] = mapped_column(String(200))
    ended_by: Mapped[str] = mapped_column(String(16))
    sip_status: Mapped[int | None] = mapped_column(Integer)
    low_balance_warning: Mapped[int | None] = mapped_column(Integer)  # seconds left when warned
    quality: Mapped[Any | None] = mapped_column(JSON, nullable=True)  # media quality summary, later
    recovered: Mapped[bool] = mapped_column(Boolean)
    settle_entry_id: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # free seconds of the daily allowance the call used, not charged (0004)
    free_seconds_used: Mapped[int] = mapped_column(Integer, server_default="0")
    # The CSV export row, rendered once at settlement (no line end), and the version
    # of the export's columns it was rendered with (0005); NULL on older rows.
    export_csv: Mapped[str | None] = mapped_column(Text)
    export_version: Mapped[int | None] = mapped_column(SmallInteger)
