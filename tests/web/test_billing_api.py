"""The billing API over real HTTP: staff keys and roles, streamed exports, statements,
receipts for staff and for families (join token), the family receipt page."""

from __future__ import annotations

import asyncio
import csv
import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from billing.billing_scenario import build
from web.helpers import http_client, http_url, run, running, web_config

from gateway.billing.db import open_database, upgrade
from gateway.billing.export import CdrExport, export_range
from gateway.cli import main
from gateway.config import Config, loads_config
from gateway.web.billing_api import stream_in_thread
from gateway.web.server import WebServer

ANN_KEY = "ann-billing-key-0123456789abcdef"  # billing role
BOB_KEY = "bob-no-roles-key-0123456789abcdef"  # a staff key without the role
_FAST = PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)  # tests only


def staff_toml(limit: int = 10) -> str:
    return (f'join_failure_limit = {limit}\n'
            f'[[web.staff]]\nname = "ann"\nkey_hash = "{_FAST.hash(ANN_KEY)}"\n'
            f'roles = ["billing"]\n'
            f'[[web.staff]]\nname = "bob"\nkey_hash = "{_FAST.hash(BOB_KEY)}"\nroles = []\n')


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = f"sqlite:///{tmp_path_factory.mktemp('billing-api') / 'billing.sqlite3'}"
    upgrade(url)
    db = open_database(url)
    build(db)
    db.dispose()
    yield url


def billing_config(tmp_path: Path, url: str, limit: int = 10) -> Config:
    return web_config(tmp_path, staff_toml(limit) +
                      f'[billing]\nenabled = true\n[database]\nurl = "{url}"\n')


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


Result = tuple[int, dict[str, str], Any]


def requests(config: Config, *calls: tuple[str, dict[str, str]]) -> list[Result]:
    """GET each (path, headers) on one running server: (status, headers, JSON or bytes)."""
    async def main() -> list[Result]:
        out: list[Result] = []
        async with running(config) as srv, http_client() as client:
            try:
                for path, headers in calls:
                    r = await client.get(http_url(srv, path), headers=headers)
                    is_json = r.headers.get("content-type", "").startswith("application/json")
                    out.append((r.status_code, dict(r.headers),
                                r.json() if is_json else r.content))
            finally:
                if srv.billing is not None:
                    srv.billing.close()
        return out
    return run(main())


def test_staff_export_streams_the_same_bytes_as_the_cli(tmp_path: Path, database: str) -> None:
    csv_r, json_r, fac_r = requests(
        billing_config(tmp_path, database),
        ("/api/billing/export?from=2026-05-01&to=2026-06-01", auth(ANN_KEY)),
        ("/api/billing/export?from=2026-05-01&to=2026-06-01&format=json", auth(ANN_KEY)),
        ("/api/billing/export?from=2026-05-01&to=2026-06-01&facility=state-prison",
         auth(ANN_KEY)),
    )
    db = open_database(database)
    try:
        may = export_range("2026-05-01", "2026-06-01")
        assert csv_r[0] == 200 and csv_r[2] == b"".join(CdrExport(db, may, "csv"))
        assert json_r[0] == 200 and json_r[2] == b"".join(CdrExport(db, may, "json"))
    finally:
        db.dispose()
    assert csv_r[1]["content-type"] == "text/csv; charset=utf-8"
    assert csv_r[1]["content-disposition"].startswith('attachment; filename="cdrs-20260501')
    assert csv_r[1]["cache-control"] == "no-store"
    assert json_r[1]["content-type"] == "application/x-ndjson"
    assert len(json_r[2].splitlines()) == 5
    rows = list(csv.DictReader(io.StringIO(fac_r[2].decode())))
    assert [r["call_id"] for r in rows] == ["call-may-4"]


def test_staff_authentication_and_roles(tmp_path: Path, database: str) -> None:
    path = "/api/billing/export?from=2026-05-01&to=2026-06-01"
    issued = WebServer(billing_config(tmp_path, database), _media()).context.tokens.issue(
        "call-may-1", now=time.time(), ttl=600)
    results = requests(
        billing_config(tmp_path, database),
        (path, {}), (path, auth("wrong-key-wrong-key-wrong")), (path, auth(BOB_KEY)),
        (path, {"Authorization": f"Basic {ANN_KEY}"}), (path, auth(issued)),
        ("/api/billing/export", {}),  # auth comes before parameter checks
    )
    (s0, h0, b0), (s1, _, b1), (s2, _, b2), (s3, _, _), (s4, _, _), (s5, _, _) = results
    assert (s0, b0["error"]) == (401, "unauthorized") and h0["www-authenticate"] == "Bearer"
    assert (s1, b1["message"]) == (401, "the staff key is wrong")
    assert (s2, b2["error"]) == (403, "forbidden") and "'billing' role" in b2["message"]
    assert s3 == s4 == s5 == 401  # a join token is not a staff key


def test_wrong_keys_block_the_source(tmp_path: Path, database: str) -> None:
    path = "/api/billing/export?from=2026-05-01&to=2026-06-01"
    bad = auth("wrong-key-wrong-key-wrong")
    results = requests(billing_config(tmp_path, database, limit=2),
                       (path, bad), (path, bad), (path, auth(ANN_KEY)))
    assert [r[0] for r in results] == [401, 401, 429]
    assert results[2][2]["error"] == "too_many_failures"


def test_no_staff_configured_and_billing_off(tmp_path: Path, database: str) -> None:
    config = web_config(tmp_path, f'[billing]\nenabled = true\n[database]\nurl = "{database}"\n')
    (status, _, body), = requests(
        config, ("/api/billing/export?from=2026-05-01&to=2026-06-01", auth(ANN_KEY)))
    assert (status, body["error"]) == (403, "staff_disabled")
    (status, _, _), (_, _, doc) = requests(
        web_config(tmp_path), ("/api/billing/export?from=2026-05-01&to=2026-06-01",
                               auth(ANN_KEY)), ("/api/openapi.json", {}))
    assert status == 404 and not any(p.startswith("/api/billing") for p in doc["paths"])


def test_bad_parameters_are_422_naming_the_field(tmp_path: Path, database: str) -> None:
    base = "/api/billing/export?"
    cases = [("from=May&to=2026-06-01", "from"), ("from=2026-06-01&to=2026-05-01", "to"),
             ("from=2026-05-01&to=2026-06-01&facility=atlantis", "facility"),
             ("from=2026-05-01&to=2026-06-01&format=xml", "format"),
             ("to=2026-06-01", "from"),
             ("from=2026-05-01&to=2026-06-01&facility=a/b", "facility")]
    results = requests(billing_config(tmp_path, database),
                       *[(base + q, auth(ANN_KEY)) for q, _ in cases])
    for (query, field), (status, _, body) in zip(cases, results, strict=True):
        assert (status, body["error"], body["field"]) == (422, "invalid_request", field), query
        assert body["message"].startswith(field), body


def test_statements(tmp_path: Path, database: str) -> None:
    base = "/api/billing/accounts"
    csv_r, pdf_r, missing, bad_month, no_auth = requests(
        billing_config(tmp_path, database),
        (f"{base}/jane/statement?month=2026-05", auth(ANN_KEY)),
        (f"{base}/jane/statement?month=2026-05&format=pdf", auth(ANN_KEY)),
        (f"{base}/nobody/statement?month=2026-05", auth(ANN_KEY)),
        (f"{base}/jane/statement?month=2026-13", auth(ANN_KEY)),
        (f"{base}/jane/statement?month=2026-05", {}),
    )
    assert csv_r[0] == 200 and csv_r[1]["content-type"] == "text/csv; charset=utf-8"
    rows = list(csv.DictReader(io.StringIO(csv_r[2].decode())))
    assert next(r for r in rows if r["kind"] == "closing_balance")["balance_usd"] == "25.46"
    assert pdf_r[0] == 200 and pdf_r[1]["content-type"] == "application/pdf"
    assert pdf_r[2].startswith(b"%PDF")
    assert pdf_r[1]["content-disposition"] == 'attachment; filename="statement-jane-2026-05.pdf"'
    assert (missing[0], missing[2]["field"]) == (404, "account_id")
    assert (bad_month[0], bad_month[2]["field"]) == (422, "month")
    assert no_auth[0] == 401


def _media() -> Any:
    from web.fakes import FakeMediaEndpoint

    return FakeMediaEndpoint()


def test_receipts_for_staff_and_families(tmp_path: Path, database: str) -> None:
    config = billing_config(tmp_path, database)
    tokens = WebServer(config, _media()).context.tokens
    now = time.time()
    fresh = tokens.issue("call-may-2", now=now, ttl=600)
    old = tokens.issue("call-may-2", now=now - 10 * 86400, ttl=600)  # expired 10 days ago
    ancient = tokens.issue("call-may-2", now=now - 40 * 86400, ttl=600)
    other = tokens.issue("call-may-1", now=now, ttl=600)
    path = "/api/billing/calls/call-may-2/receipt"
    results = requests(
        config, (path, auth(ANN_KEY)), (path, auth(fresh)), (path, auth(old)),
        (path, auth(ancient)), (path, auth(other)), (path, {}), (path, auth(BOB_KEY)),
        ("/api/billing/calls/call-none/receipt", auth(ANN_KEY)),
    )
    staff, family, late, expired, wrong, anonymous, no_role, unknown = results
    assert staff[0] == family[0] == late[0] == 200
    assert staff[2] == family[2] == late[2]
    receipt = family[2]
    assert receipt["summary"] == ("2 minutes at $0.19/min = $0.38; credited $0.19 because "
                                  "the call dropped. Total after credit: $0.19.")
    assert receipt["total_after_credits"] == "$0.19"
    assert (expired[0], "expired" in expired[2]["message"]) == (401, True)
    assert (wrong[0], wrong[2]["error"]) == (403, "forbidden")
    assert anonymous[0] == 401 and no_role[0] == 403
    assert (unknown[0], unknown[2]["field"]) == (404, "call_id")


def test_family_receipt_page(tmp_path: Path, database: str) -> None:
    page, script, style = requests(
        billing_config(tmp_path, database), ("/receipt/call-may-2", {}),
        ("/receipt-assets/receipt.js", {}), ("/receipt-assets/receipt.css", {}))
    assert page[0] == 200 and page[1]["content-type"].startswith("text/html")
    html = page[2].decode()
    assert '<script src="/receipt-assets/receipt.js" defer></script>' in html
    assert 'role="status"' in html and '<html lang="en">' in html and "<main>" in html
    assert "script-src 'self'" in page[1]["content-security-policy"]
    assert "<script>" not in html and "style=" not in html  # nothing inline
    js = script[2].decode()
    assert script[1]["content-type"].startswith("text/javascript")
    assert "location.hash" in js and "Authorization" in js and "innerHTML" not in js
    assert style[0] == 200 and style[1]["content-type"].startswith("text/css")


def test_openapi_lists_the_billing_api(tmp_path: Path, database: str) -> None:
    (_, _, doc), = requests(billing_config(tmp_path, database), ("/api/openapi.json", {}))
    paths = doc["paths"]
    assert {"/api/billing/export", "/api/billing/accounts/{account_id}/statement",
            "/api/billing/calls/{call_id}/receipt"} <= set(paths)
    export = paths["/api/billing/export"]["get"]
    assert {p["name"] for p in export["parameters"]} == {"from", "to", "facility", "format"}
    assert {"200", "401", "403", "422"} <= set(export["responses"])
    assert doc["components"]["securitySchemes"]["staffKey"]["scheme"] == "bearer"


def test_stream_in_thread_keeps_the_loop_free_and_stops_early() -> None:
    closed = threading.Event()
    produced: list[int] = []

    def slow() -> Iterator[bytes]:
        try:
            for i in range(1000):
                time.sleep(0.02)  # blocking work, as a database read is
                produced.append(i)
                yield str(i).encode()
        finally:
            closed.set()

    async def main() -> tuple[int, list[bytes]]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.005)
                ticks += 1

        task = asyncio.ensure_future(ticker())
        got: list[bytes] = []
        stream = stream_in_thread(slow(), depth=2)
        async for chunk in stream:
            got.append(chunk)
            if len(got) == 10:
                break
        await stream.aclose()  # the client went away
        task.cancel()
        return ticks, got

    ticks, got = run(main())
    assert got == [str(i).encode() for i in range(10)]
    assert ticks >= 20  # the loop ran all along (10 chunks took >= 0.2 s)
    assert closed.wait(2)  # the worker closed the iterator
    assert len(produced) <= 10 + 2 + 1  # and stopped: at most the queue's depth ahead


def test_staff_key_command_makes_a_working_entry(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["billing", "staff-key", "--name", "jane-billing"]) == 0
    out = capsys.readouterr().out
    key = out.splitlines()[1].removeprefix("# ")
    table = "\n".join(line for line in out.splitlines() if not line.startswith("#"))
    config = loads_config(f"[web]\n{table}\n")
    (staff,) = config.web.staff
    assert (staff.name, staff.roles) == ("jane-billing", ("billing",))
    assert PasswordHasher().verify(staff.key_hash, key)
    assert main(["billing", "staff-key", "--name", "x", "--role", "root"]) == 2
    assert "unknown role 'root'" in capsys.readouterr().err


def test_a_failure_mid_stream_cuts_the_response_off() -> None:
    """A client must never take half an export for a whole one."""
    import httpx
    from fastapi import FastAPI
    from fastapi.responses import StreamingResponse

    def failing() -> Iterator[bytes]:
        yield b"call_id\n" + b"x" * 70_000 + b"\n"
        raise RuntimeError("the database went away")

    app = FastAPI()

    @app.get("/export")
    async def export() -> StreamingResponse:
        return StreamingResponse(stream_in_thread(failing()), media_type="text/csv")

    async def main() -> type[BaseException] | None:
        import socket

        import uvicorn

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(app, http="h11", lifespan="off",
                                               log_config=None, access_log=False))
        task = asyncio.ensure_future(server.serve(sockets=[sock]))
        while not server.started:
            await asyncio.sleep(0.01)
        try:
            async with http_client() as client:
                await client.get(f"http://127.0.0.1:{port}/export")
            return None
        except httpx.HTTPError as exc:
            return type(exc)
        finally:
            server.should_exit = True
            await task

    assert run(main()) is httpx.RemoteProtocolError
