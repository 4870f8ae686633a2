"""Billing: exact money, FCC rate caps, facility rates and call rating (pure, no I/O).

See :mod:`gateway.billing.money` for the one rounding rule,
:mod:`gateway.billing.rates` for caps and facility rate tables, and
:mod:`gateway.billing.rating` for pricing a call.
"""
