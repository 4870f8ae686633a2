"""A small client for baresip's ``ctrl_tcp`` module (netstring-framed JSON).

Commands go out as ``{"command": ..., "params": ..., "token": ...}``; baresip answers
each with ``{"response": true, "ok": ..., "data": ..., "token": ...}`` and pushes
events (``REGISTER_OK``, ``CALL_ESTABLISHED``, ...) as ``{"event": true, ...}`` at any
time.  A reader thread keeps every event, so a test can wait for one that arrived
before it started waiting.  Every wait is bounded.
"""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

Event = dict[str, Any]


class CtrlError(AssertionError):
    pass


def netstring(data: bytes) -> bytes:
    return str(len(data)).encode() + b":" + data + b","


def split_netstrings(buf: bytes) -> tuple[list[bytes], bytes]:
    """Complete netstrings in ``buf`` and the unconsumed rest."""
    out: list[bytes] = []
    while True:
        colon = buf.find(b":")
        if colon < 0:
            return out, buf
        size = int(buf[:colon])
        end = colon + 1 + size
        if len(buf) < end + 1:
            return out, buf
        if buf[end : end + 1] != b",":
            raise CtrlError(f"bad netstring from baresip: {buf[:80]!r}")
        out.append(buf[colon + 1 : end])
        buf = buf[end + 1 :]


class BaresipCtrl:
    """One ctrl_tcp connection: commands with responses, and the event log."""

    def __init__(self, port: int, name: str = "baresip", connect_timeout: float = 10.0,
                 alive: Callable[[], bool] | None = None) -> None:
        self.name = name
        self.events: list[Event] = []
        self._responses: dict[str, Event] = {}
        self._cond = threading.Condition()
        self._tokens = itertools.count(1)
        self._closed = False
        deadline = time.monotonic() + connect_timeout
        while True:
            try:
                self.sock = socket.create_connection(("127.0.0.1", port), timeout=1.0)
                break
            except OSError:
                if time.monotonic() > deadline or (alive is not None and not alive()):
                    raise CtrlError(f"{name}: ctrl_tcp on 127.0.0.1:{port} never came up") from None
                time.sleep(0.05)
        self.sock.settimeout(None)
        self._reader = threading.Thread(target=self._read, daemon=True,
                                        name=f"ctrl-{name}")
        self._reader.start()

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                with self._cond:
                    self._closed = True
                    self._cond.notify_all()
                return
            buf += data
            msgs, buf = split_netstrings(buf)
            with self._cond:
                for raw in msgs:
                    msg = json.loads(raw)
                    if msg.get("response"):
                        self._responses[str(msg.get("token"))] = msg
                    if msg.get("event"):
                        self.events.append(msg)
                self._cond.notify_all()

    def command(self, command: str, params: str = "", timeout: float = 5.0) -> Event:
        """Send a command and return its response (``ok``, ``data``)."""
        token = f"{self.name}-{next(self._tokens)}"
        msg = {"command": command, "params": params, "token": token}
        self.sock.sendall(netstring(json.dumps(msg).encode()))
        deadline = time.monotonic() + timeout
        with self._cond:
            while token not in self._responses:
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    raise CtrlError(f"{self.name}: no response to {command!r} in {timeout}s")
                self._cond.wait(left)
            return self._responses.pop(token)

    def wait_event(self, types: str | tuple[str, ...], timeout: float = 10.0,
                   where: Callable[[Event], bool] | None = None, since: int = 0,
                   fail_on: tuple[str, ...] = ()) -> Event:
        """The first event (from index ``since`` on) of one of ``types`` that matches;
        an event of a ``fail_on`` type seen first fails at once."""
        if isinstance(types, str):
            types = (types,)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for ev in self.events[since:]:
                    if ev.get("type") in types and (where is None or where(ev)):
                        return ev
                    if ev.get("type") in fail_on:
                        raise CtrlError(f"{self.name}: got {ev} while waiting for {types}")
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    seen = [e.get("type") for e in self.events]
                    raise CtrlError(f"{self.name}: no {'/'.join(types)} within {timeout}s; "
                                    f"events seen: {seen}")
                self._cond.wait(left)

    def types(self) -> list[str]:
        with self._cond:
            return [str(e.get("type")) for e in self.events]

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
