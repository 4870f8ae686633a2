"""An index for exporting CDRs by end time.

Revision ID: 0003
Revises: 0002
Create Date: 2026-05-20

``gateway billing export`` and ``GET /api/billing/export`` read call detail
records in (end time, call id) order, a page at a time (keyset pagination:
each page starts after the last key of the one before).  This index makes each
page one range scan instead of a sort of the whole table.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_billing_cdrs_end_at_call_id", "billing_cdrs", ["end_at", "call_id"])


def downgrade() -> None:
    op.drop_index("ix_billing_cdrs_end_at_call_id", table_name="billing_cdrs")
