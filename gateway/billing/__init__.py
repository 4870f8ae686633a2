"""Billing: exact money, FCC rate caps, facility rates, call rating, and the ledger.

Pure parts (no I/O): :mod:`gateway.billing.money` (the one rounding rule),
:mod:`gateway.billing.rates` (caps and facility rate tables) and
:mod:`gateway.billing.rating` (pricing a call).  The append-only, hash-chained,
double-entry ledger lives in :mod:`gateway.billing.ledger` and
:mod:`gateway.billing.accounts` (SQLAlchemy; SQLite or PostgreSQL), with its
Alembic migrations in ``gateway/billing/migrations``.

Charging calls: :mod:`gateway.billing.session` (sans-IO: reserve, debit per
increment, warn, cut off, settle exactly, credit dropped calls),
:mod:`gateway.billing.calls` (its ledger transactions and crash recovery),
:mod:`gateway.billing.meter` (media seconds per call), :mod:`gateway.billing.cdr`
(call detail records and receipts), :mod:`gateway.billing.service` (the Twisted
service) and :mod:`gateway.billing.settings` (``[billing]``).
"""
