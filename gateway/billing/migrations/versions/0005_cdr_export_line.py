"""Each CDR's export line, rendered once when the CDR is written.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27

A CDR never changes, so its CSV export row is rendered at settlement, in the
same transaction, as a telephone switch writes its CDR line at call end:
``export_csv`` is that row (without the line end) and ``export_version`` the
version of the export's column set it was rendered with.  The export streams
the stored lines and renders from the columns only rows without a line of the
current version, so there is no backfill: existing rows keep NULL.

Plain ``ADD COLUMN`` (nullable, no default) on both databases: SQLite alters
the table in place, so its insert-only triggers stay as they are (a batch
"move and copy" would drop them with the old table).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("billing_cdrs", sa.Column("export_csv", sa.Text(), nullable=True))
    op.add_column("billing_cdrs", sa.Column("export_version", sa.SmallInteger(), nullable=True))


def downgrade() -> None:
    # SQLite 3.35+ drops a column in place (no table copy, the triggers stay).
    op.drop_column("billing_cdrs", "export_version")
    op.drop_column("billing_cdrs", "export_csv")
