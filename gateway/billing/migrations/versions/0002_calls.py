"""Billed calls and call detail records.

Revision ID: 0002
Revises: 0001
Create Date: 2026-05-12

``billing_calls`` holds a call's fixed facts from the moment its funds are
reserved (so a crashed gateway can settle it from the database alone);
``billing_cdrs`` holds one record per call, written with its settlement.  Both
are insert-only, guarded by the same kind of triggers as the journal.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("billing_calls", "billing_cdrs")


def upgrade() -> None:
    op.create_table(
        "billing_calls",
        sa.Column("call_id", sa.String(128), nullable=False),
        sa.Column("node_id", sa.String(100), nullable=False),
        sa.Column("plan", sa.String(100), nullable=False),
        sa.Column("facility_id", sa.String(64), nullable=False),
        sa.Column("service", sa.String(8), nullable=False),
        sa.Column("caller", sa.String(128), nullable=False),
        sa.Column("callee", sa.String(128), nullable=False),
        sa.Column("setup_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("increment", sa.String(32), nullable=False),
        sa.Column("increment_seconds", sa.Integer(), nullable=False),
        sa.Column("payers", sa.JSON(), nullable=False),
        sa.Column("holds", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("call_id", name=op.f("pk_billing_calls")),
    )
    op.create_index(op.f("ix_billing_calls_node_id"), "billing_calls", ["node_id"])

    op.create_table(
        "billing_cdrs",
        sa.Column("call_id", sa.String(128), nullable=False),
        sa.Column("visit_id", sa.String(64), nullable=True),
        sa.Column("node_id", sa.String(100), nullable=False),
        sa.Column("facility_id", sa.String(64), nullable=False),
        sa.Column("tier", sa.String(200), nullable=False),
        sa.Column("cap_period", sa.String(64), nullable=False),
        sa.Column("service", sa.String(8), nullable=False),
        sa.Column("caller", sa.String(128), nullable=False),
        sa.Column("callee", sa.String(128), nullable=False),
        sa.Column("payers", sa.JSON(), nullable=False),
        sa.Column("setup_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answer_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("media_seconds", sa.Integer(), nullable=False),
        sa.Column("metered_seconds", sa.Integer(), nullable=False),
        sa.Column("uncharged_seconds", sa.Integer(), nullable=False),
        sa.Column("increment", sa.String(32), nullable=False),
        sa.Column("billed_units", sa.Integer(), nullable=False),
        sa.Column("billed_unit", sa.String(8), nullable=False),
        sa.Column("rate_per_minute", sa.BigInteger(), nullable=False),
        sa.Column("cap_per_minute", sa.BigInteger(), nullable=False),
        sa.Column("additive_per_minute", sa.BigInteger(), nullable=False),
        sa.Column("total", sa.BigInteger(), nullable=False),
        sa.Column("amounts", sa.JSON(), nullable=False),
        sa.Column("credit_total", sa.BigInteger(), nullable=False),
        sa.Column("credits", sa.JSON(), nullable=False),
        sa.Column("credit_reason", sa.String(500), nullable=False),
        sa.Column("lines", sa.JSON(), nullable=False),
        sa.Column("explanation", sa.Text(), nullable=False),
        sa.Column("disconnect_cause", sa.String(200), nullable=False),
        sa.Column("ended_by", sa.String(16), nullable=False),
        sa.Column("sip_status", sa.Integer(), nullable=True),
        sa.Column("low_balance_warning", sa.Integer(), nullable=True),
        sa.Column("quality", sa.JSON(), nullable=True),
        sa.Column("recovered", sa.Boolean(), nullable=False),
        sa.Column("settle_entry_id", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("media_seconds >= 0", name=op.f("ck_billing_cdrs_media_seconds")),
        sa.CheckConstraint("total >= 0 AND credit_total >= 0",
                           name=op.f("ck_billing_cdrs_amounts")),
        sa.ForeignKeyConstraint(["call_id"], ["billing_calls.call_id"],
                                name=op.f("fk_billing_cdrs_call_id")),
        sa.PrimaryKeyConstraint("call_id", name=op.f("pk_billing_cdrs")),
    )
    op.create_index(op.f("ix_billing_cdrs_facility_id"), "billing_cdrs", ["facility_id"])
    op.create_index(op.f("ix_billing_cdrs_setup_at"), "billing_cdrs", ["setup_at"])

    if op.get_bind().dialect.name == "postgresql":
        for table in TABLES:  # billing_reject_change() comes from revision 0001
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION billing_reject_change()"
            )
            op.execute(
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION billing_reject_change()"
            )
    else:
        for table in TABLES:
            for when in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_no_{when.lower()} BEFORE {when} ON {table} BEGIN "
                    f"SELECT RAISE(ABORT, 'billing call records are insert-only: {when} on "
                    f"{table} is not allowed'); END"
                )


def downgrade() -> None:
    # Deliberately impossible: CDRs are financial records.
    raise RuntimeError("billing call records cannot be downgraded (it would delete CDRs)")
