"""Browser-facing protections: security headers on every response, the WebSocket Origin
check.

The Origin check stops another web site from opening a signalling socket with a
visitor's browser (cross-site WebSocket hijacking); the token is still what lets
anyone into a call.  Clients that send no Origin are not browsers and are let through
to the token check.
"""

from __future__ import annotations

import json

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.config import normalize_origin

# The call page loads nothing from elsewhere and is never framed.
CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data: blob:",
    "media-src 'self' blob: mediastream:",
    "connect-src 'self'",  # same-origin ws:/wss: included (CSP level 3)
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
))
SECURITY_HEADERS = (
    ("content-security-policy", CONTENT_SECURITY_POLICY),
    ("referrer-policy", "no-referrer"),  # call URLs and tokens never leak to other sites
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
    ("permissions-policy",
     "camera=(self), microphone=(self), display-capture=(), geolocation=(), payment=(), "
     "usb=()"),
)
HSTS = ("strict-transport-security", "max-age=31536000")


class SecurityHeadersMiddleware:
    """Adds :data:`SECURITY_HEADERS` to every HTTP response (HSTS on HTTPS only) and
    ``Cache-Control: no-store`` to API responses, which may carry tokens."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        https = scope.get("scheme") == "https"
        api = str(scope.get("path", "")).startswith("/api/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS:
                    headers.setdefault(name, value)
                if https:
                    headers.setdefault(*HSTS)
                if api:
                    headers["cache-control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodyLimitMiddleware:
    """Refuses request bodies over ``limit`` bytes before the app reads them.

    Our API takes small JSON objects; without this a client could make the server
    buffer any amount.  Bodies must declare their length (411 otherwise), which every
    browser and HTTP library does for JSON.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        length = headers.get(b"content-length")
        chunked = b"chunked" in headers.get(b"transfer-encoding", b"").lower()
        if chunked and length is None:
            await self._refuse(send, 411, "length_required",
                               "send the body with a Content-Length")
            return
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await self._refuse(send, 413, "too_large",
                               f"the body is over {self.limit} bytes")
            return
        await self.app(scope, receive, send)

    @staticmethod
    async def _refuse(send: Send, status: int, error: str, message: str) -> None:
        body = json.dumps({"error": error, "message": message}).encode()
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]})
        await send({"type": "http.response.body", "body": body})


def origin_allowed(origin: str | None, host: str | None, scheme: str,
                   allowed: tuple[str, ...]) -> bool:
    """True if a WebSocket from a page at ``origin`` may connect.

    Allowed: no Origin (not a browser), an origin listed in ``allowed`` (normalised by
    config), or the same origin as the socket itself (``scheme`` is ``ws``/``wss``,
    ``host`` the Host header).  Refused: everything else, including ``null``.
    """
    if origin is None:
        return True
    norm = normalize_origin(origin)
    if norm is None:
        return False
    if norm in allowed:
        return True
    if not host:
        return False
    own = normalize_origin(f"{'https' if scheme in ('wss', 'https') else 'http'}://{host}")
    return own is not None and norm == own
