"""Alembic migrations of the billing tables, shipped in the package.

Run them with :func:`gateway.billing.db.upgrade` (or ``gateway billing migrate``);
no ``alembic.ini`` is needed.  To write a new revision during development::

    .venv/bin/python -c "from alembic import command; \\
        from gateway.billing.db import alembic_config; \\
        command.revision(alembic_config(), message='what changes', rev_id='0002')"

Revisions must work on SQLite and PostgreSQL alike (use ``op.batch_alter_table``
for SQLite ALTERs) and never rewrite journal rows: the ledger is append-only.
"""
