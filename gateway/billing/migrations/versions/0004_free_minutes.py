"""Daily free-minute allowances: what each call was granted and used.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27

A plan may give its first payer account ``free_minutes_per_day`` free minutes a
day (the facility's local day of the call's start).  ``billing_calls`` records
which account's allowance a call draws on and how many free seconds it was
granted at reservation (fixed for the whole call, so increments and settlement
rate it the same way); ``billing_cdrs`` records the free seconds it used.  The
index finds an account's calls of one day at the next reservation.  Existing
rows get 0 (no allowance).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("billing_calls") as batch:
        batch.add_column(sa.Column("free_account", sa.String(200), nullable=True))
        batch.add_column(sa.Column("free_seconds", sa.Integer(), nullable=False,
                                   server_default="0"))
    op.create_index("ix_billing_calls_free_account_setup_at", "billing_calls",
                    ["free_account", "setup_at"])
    with op.batch_alter_table("billing_cdrs") as batch:
        batch.add_column(sa.Column("free_seconds_used", sa.Integer(), nullable=False,
                                   server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("billing_cdrs") as batch:
        batch.drop_column("free_seconds_used")
    op.drop_index("ix_billing_calls_free_account_setup_at", table_name="billing_calls")
    with op.batch_alter_table("billing_calls") as batch:
        batch.drop_column("free_seconds")
        batch.drop_column("free_account")
