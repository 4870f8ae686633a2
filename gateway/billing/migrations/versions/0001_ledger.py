"""The append-only, hash-chained, double-entry ledger.

Revision ID: 0001
Revises:
Create Date: 2026-05-10

Besides the tables, this installs the database-side guards: triggers that
reject UPDATE and DELETE (and TRUNCATE on PostgreSQL) on the journal tables,
and DELETE or identity changes on accounts.  They stop mistakes and casual
edits; deliberate tampering by someone who can drop triggers is caught by
``gateway billing verify`` (hash chain), which also reports missing triggers.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GENESIS = "0" * 64
# Frozen copies (a revision must not change when the models do later).
OWNER_KINDS = ("visitor", "incarcerated", "agency", "system")
ENTRY_KINDS = ("deposit", "hold", "release", "charge", "credit", "refund", "adjustment", "tax")
JOURNAL_TABLES = ("ledger_entries", "ledger_postings")
# Columns of billing_accounts that identify an account and so never change.
ACCOUNT_IDENTITY = ("id", "owner_kind", "owner_ref", "currency", "created_at")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    op.create_table(
        "billing_accounts",
        sa.Column("id", sa.String(200), nullable=False),
        sa.Column("owner_kind", sa.String(16), nullable=False),
        sa.Column("owner_ref", sa.String(128), nullable=False),
        sa.Column("display_name", sa.String(200), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            _in("owner_kind", OWNER_KINDS), name=op.f("ck_billing_accounts_owner_kind")
        ),
        sa.CheckConstraint("status IN ('open', 'closed')", name=op.f("ck_billing_accounts_status")),
        sa.CheckConstraint("currency = 'USD'", name=op.f("ck_billing_accounts_currency")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_accounts")),
    )
    op.create_index("ix_billing_accounts_owner", "billing_accounts", ["owner_kind", "owner_ref"])

    op.create_table(
        "ledger_entries",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("txn_id", sa.String(36), nullable=False),
        sa.Column("idempotency_key", sa.String(200), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("memo", sa.String(500), nullable=False),
        sa.Column("call_id", sa.String(128), nullable=True),
        sa.Column("hold_id", sa.String(64), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.CheckConstraint("id > 0", name=op.f("ck_ledger_entries_id_positive")),
        sa.CheckConstraint(_in("kind", ENTRY_KINDS), name=op.f("ck_ledger_entries_kind")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_entries")),
        sa.UniqueConstraint("txn_id", name=op.f("uq_ledger_entries_txn_id")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_ledger_entries_idempotency_key")),
        sa.UniqueConstraint("prev_hash", name=op.f("uq_ledger_entries_prev_hash")),
        sa.UniqueConstraint("hash", name=op.f("uq_ledger_entries_hash")),
    )
    op.create_index(op.f("ix_ledger_entries_call_id"), "ledger_entries", ["call_id"])
    op.create_index(op.f("ix_ledger_entries_hold_id"), "ledger_entries", ["hold_id"])

    op.create_table(
        "ledger_postings",
        sa.Column("entry_id", sa.BigInteger(), nullable=False),
        sa.Column("line_no", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("account_id", sa.String(200), nullable=False),
        sa.Column("hold_id", sa.String(64), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("amount <> 0", name=op.f("ck_ledger_postings_amount_nonzero")),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["ledger_entries.id"], name=op.f("fk_ledger_postings_entry_id")
        ),
        sa.ForeignKeyConstraint(
            ["account_id"], ["billing_accounts.id"], name=op.f("fk_ledger_postings_account_id")
        ),
        sa.PrimaryKeyConstraint("entry_id", "line_no", name=op.f("pk_ledger_postings")),
    )
    op.create_index(op.f("ix_ledger_postings_account_id"), "ledger_postings", ["account_id"])
    op.create_index(op.f("ix_ledger_postings_hold_id"), "ledger_postings", ["hold_id"])

    op.create_table(
        "ledger_chain_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("last_entry_id", sa.BigInteger(), nullable=False),
        sa.Column("head_hash", sa.String(64), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_ledger_chain_head_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_chain_head")),
    )
    op.execute(
        sa.text(
            "INSERT INTO ledger_chain_head (id, last_entry_id, head_hash) VALUES (1, 0, :h)"
        ).bindparams(h=GENESIS)
    )

    op.create_table(
        "ledger_balances",
        sa.Column("account_id", sa.String(200), nullable=False),
        sa.Column("available", sa.BigInteger(), nullable=False),
        sa.Column("held", sa.BigInteger(), nullable=False),
        sa.Column("last_entry_id", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("held >= 0", name=op.f("ck_ledger_balances_held_not_negative")),
        sa.ForeignKeyConstraint(
            ["account_id"], ["billing_accounts.id"], name=op.f("fk_ledger_balances_account_id")
        ),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_ledger_balances")),
    )

    if op.get_bind().dialect.name == "postgresql":
        _postgresql_guards()
    else:
        _sqlite_guards()


def _postgresql_guards() -> None:
    op.execute(
        """
        CREATE FUNCTION billing_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'billing ledger is append-only: % on % is not allowed',
                TG_OP, TG_TABLE_NAME USING ERRCODE = 'integrity_constraint_violation';
        END
        $$
        """
    )
    for table in JOURNAL_TABLES:
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION billing_reject_change()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION billing_reject_change()"
        )
    op.execute(
        "CREATE TRIGGER billing_accounts_no_delete BEFORE DELETE ON billing_accounts "
        "FOR EACH ROW EXECUTE FUNCTION billing_reject_change()"
    )
    op.execute(
        "CREATE TRIGGER billing_accounts_no_truncate BEFORE TRUNCATE ON billing_accounts "
        "FOR EACH STATEMENT EXECUTE FUNCTION billing_reject_change()"
    )
    op.execute(
        f"CREATE TRIGGER billing_accounts_identity BEFORE UPDATE OF {', '.join(ACCOUNT_IDENTITY)} "
        "ON billing_accounts FOR EACH ROW EXECUTE FUNCTION billing_reject_change()"
    )


def _sqlite_guards() -> None:
    def trigger(name: str, when: str, table: str, op_name: str) -> None:
        op.execute(
            f"CREATE TRIGGER {name} {when} ON {table} BEGIN "
            f"SELECT RAISE(ABORT, 'billing ledger is append-only: {op_name} on {table} "
            "is not allowed'); END"
        )

    for table in JOURNAL_TABLES:
        trigger(f"{table}_no_update", "BEFORE UPDATE", table, "UPDATE")
        trigger(f"{table}_no_delete", "BEFORE DELETE", table, "DELETE")
    trigger("billing_accounts_no_delete", "BEFORE DELETE", "billing_accounts", "DELETE")
    trigger(
        "billing_accounts_identity",
        f"BEFORE UPDATE OF {', '.join(ACCOUNT_IDENTITY)}",
        "billing_accounts",
        "UPDATE",
    )


def downgrade() -> None:
    # Deliberately impossible: dropping the journal destroys financial records.
    raise RuntimeError("the billing ledger cannot be downgraded (it would delete the journal)")
