"""The family-facing web side: HTTP(S) pages and API, WebSocket signalling, join tokens.

Runs inside the gateway process on the one asyncio loop (see :mod:`gateway.web.server`).
Importing this package imports no web framework; :mod:`gateway.web.tokens` is pure
standard library so that the ``gateway token`` command stays fast.
"""
