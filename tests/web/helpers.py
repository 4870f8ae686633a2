"""Running the web server in-process on a plain asyncio loop, and a small WebSocket client.

The gateway runs the same WebServer on Twisted's asyncio reactor; here it runs on the
loop ``asyncio.run`` makes, with real sockets on 127.0.0.1 (port 0: any free port).
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from web.fakes import FakeMediaEndpoint
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Origin

from gateway.config import Config, loads_config
from gateway.web.server import WebServer

SECRET = "web-tests-secret-0123456789"
ADMIN_KEY = "admin-key-for-the-tests-0123"
T = TypeVar("T")


def run(coro: Awaitable[T], timeout: float = 20.0) -> T:
    """Run one test's coroutine on a fresh loop, bounded in time."""
    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(bounded())


def web_config(tmp_path: Path, web: str = "", *, listen: str = '["http:127.0.0.1:0"]',
               admin_key: str | None = ADMIN_KEY) -> Config:
    key = f'admin_key = "{admin_key}"\n' if admin_key else ""
    text = (f'[gateway]\nsecret = "{SECRET}"\ndata_dir = "{tmp_path / "data"}"\n'
            f"[web]\nlisten = {listen}\n{key}{web}")
    return loads_config(text, base_dir=tmp_path)


@asynccontextmanager
async def running(config: Config, media: FakeMediaEndpoint | None = None, *,
                  clock: Callable[[], float] = time.time) -> AsyncIterator[WebServer]:
    server = WebServer(config, media or FakeMediaEndpoint(), clock=clock)
    server.start(asyncio.get_running_loop())
    try:
        yield server
    finally:
        await server.stop()


def http_url(server: WebServer, path: str = "/", scheme: str = "http") -> str:
    addr = next(a for a in server.bound if a.scheme == scheme)
    return f"{scheme}://{addr.hostport}{path}"


def ws_url(server: WebServer, scheme: str = "http") -> str:
    return http_url(server, "/ws", scheme).replace("http", "ws", 1)


def issue(server: WebServer, call_id: str = "call-1", *, ttl: int = 600,
          now: float | None = None) -> str:
    return server.context.tokens.issue(call_id, now=time.time() if now is None else now,
                                       ttl=ttl)


def http_client(**kw: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(trust_env=False, timeout=5.0, **kw)


class Browser:
    """The signalling half of a browser: JSON in, JSON out, close codes."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def send(self, message: dict[str, Any] | str) -> None:
        await self.ws.send(message if isinstance(message, str) else json.dumps(message))

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        text = await asyncio.wait_for(self.ws.recv(), timeout)
        message: dict[str, Any] = json.loads(text)
        return message

    async def expect(self, kind: str, timeout: float = 5.0) -> dict[str, Any]:
        message = await self.recv(timeout)
        assert message["type"] == kind, message
        return message

    async def closed(self, timeout: float = 5.0) -> tuple[int | None, str]:
        """Wait for the server to close; (code, reason). Fails if a message comes first."""
        try:
            extra = await asyncio.wait_for(self.ws.recv(), timeout)
        except ConnectionClosed as exc:
            rcvd = exc.rcvd
            return (rcvd.code, rcvd.reason) if rcvd else (None, "")
        raise AssertionError(f"expected a close, got {extra!r}")

    async def join(self, token: str, **extra: Any) -> dict[str, Any]:
        await self.send({"type": "join", "token": token, **extra})
        return await self.expect("joined")


@asynccontextmanager
async def browser(url: str, *, origin: str | None = None, **kw: Any) -> AsyncIterator[Browser]:
    async with connect(url, origin=Origin(origin) if origin else None, proxy=None,
                       open_timeout=5, close_timeout=2, **kw) as ws:
        yield Browser(ws)


def self_signed(tmp_path: Path, name: str = "gateway") -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1 and localhost, and its key (PEM files)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return cert_path, key_path
