"""The billing API for staff and families: CDR exports, statements, receipts.

Routes (present when ``[billing] enabled = true``; see docs/billing.md):

* ``GET /api/billing/export?from=&to=&facility=&format=csv|json``: the CDRs of a
  period, streamed (billing role);
* ``GET /api/billing/accounts/{account_id}/statement?month=YYYY-MM&format=csv|pdf``:
  a monthly statement (billing role);
* ``GET /api/billing/calls/{call_id}/receipt``: a call's receipt as JSON (billing
  role, or the family's join token for that call);
* ``GET /receipt/{call_id}``: a plain page for families that reads the join token
  from the URL fragment (``/receipt/CALL#token=...``; a fragment never reaches the
  server, so the token is in no log) and shows the receipt in words.

Staff authenticate with ``Authorization: Bearer <key>``, the key being one of the
``[[web.staff]]`` entries (its argon2 hash in the configuration; make one with
``gateway billing staff-key``).  :func:`require_role` is the FastAPI dependency:
401 without a valid key, 403 with a key that lacks the role.  argon2 is slow on
purpose, so a key is verified in a thread, and once verified it is remembered (by
an HMAC with a per-process secret, never the key itself) for the life of the
process; failed attempts count toward the same per-source blocking as failed
joins (``[web] join_failure_*``; 429 while blocked).

Nothing here blocks the event loop: database work and rendering run in threads,
and an export is produced by a worker thread that hands chunks to the response
through a small bounded queue (:func:`stream_in_thread`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import secrets
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from gateway.config import Config, StaffKey
from gateway.sip.ratelimit import AuthFailureLimiter

from .routes import ErrorBody
from .tokens import JoinTokens, TokenError

log = logging.getLogger("gateway.web.billing")

RECEIPT_TOKEN_GRACE = 30 * 86400  # a join token opens its call's receipt up to 30 days after
KNOWN_KEYS_MAX = 256
STREAM_DEPTH = 4  # export chunks queued between the worker thread and the response

_bearer = HTTPBearer(
    auto_error=False, scheme_name="staffKey",
    description="a [[web.staff]] key (see `gateway billing staff-key`); the receipt also "
    "accepts the family's join token for that call")


class ApiError(Exception):
    """An error answer with the API's usual body: ``{"error", "message", "field"?}``."""

    def __init__(self, status: int, error: str, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.field = field
        self.headers = headers


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    body = ErrorBody(error=exc.error, message=exc.message, field=exc.field)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=exc.status,
                        headers=exc.headers)


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


# ---------------------------------------------------------------------- staff auth


class StaffAuth:
    """Checks bearer keys against the ``[[web.staff]]`` argon2 hashes."""

    def __init__(self, staff: Sequence[StaffKey], limiter: AuthFailureLimiter | None,
                 clock: Callable[[], float]) -> None:
        from argon2 import PasswordHasher

        self.staff = {s.name: s for s in staff}
        self.limiter = limiter
        self.clock = clock
        self._hasher = PasswordHasher()
        self._secret = secrets.token_bytes(32)
        self._known: OrderedDict[bytes, str] = OrderedDict()
        self._lock = threading.Lock()

    def _fingerprint(self, key: str) -> bytes:
        return hmac.new(self._secret, key.encode("utf-8", "surrogatepass"),
                        hashlib.sha256).digest()

    def verify(self, key: str) -> StaffKey | None:
        """Blocking: the staff entry whose hash matches ``key`` (argon2 for each entry)."""
        from argon2.exceptions import InvalidHashError, VerificationError

        fp = self._fingerprint(key)
        with self._lock:
            name = self._known.get(fp)
            if name is not None:
                self._known.move_to_end(fp)
                return self.staff[name]
        for staff in self.staff.values():
            try:
                self._hasher.verify(staff.key_hash, key)
            except VerificationError:
                continue
            except InvalidHashError:
                log.warning("billing api: the key_hash of staff %s is not a valid argon2 hash",
                            staff.name)
                continue
            with self._lock:
                self._known[fp] = staff.name
                while len(self._known) > KNOWN_KEYS_MAX:
                    self._known.popitem(last=False)
            return staff
        return None

    async def require(self, creds: HTTPAuthorizationCredentials | None, role: str,
                      source: str) -> StaffKey:
        if not self.staff:
            raise ApiError(403, "staff_disabled", "no [[web.staff]] keys are configured, so "
                           "the staff API refuses every request")
        if creds is None or not creds.credentials:
            raise _unauthorized("Authorization: Bearer <staff key> is missing")
        now = self.clock()
        if self.limiter is not None and self.limiter.is_blocked(source, now):
            raise ApiError(429, "too_many_failures", "too many wrong keys from this address; "
                           "try again later")
        staff = await run_in_threadpool(self.verify, creds.credentials)
        if staff is None:
            if self.limiter is not None and self.limiter.record_failure(source, self.clock()):
                log.warning("billing api: %s blocked after repeated wrong staff keys", source)
            raise _unauthorized("the staff key is wrong")
        if role not in staff.roles:
            raise ApiError(403, "forbidden", f"staff key {staff.name!r} does not have the "
                           f"{role!r} role")
        return staff


def _source(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _api(request: Request) -> BillingApi:
    api = getattr(request.app.state, "billing_api", None)
    if not isinstance(api, BillingApi):
        raise ApiError(404, "not_found", "billing is not enabled on this gateway")
    return api


def require_role(role: str) -> Callable[..., Awaitable[StaffKey]]:
    """A FastAPI dependency: the staff member making the request, who has ``role``."""

    async def dependency(
        request: Request,
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> StaffKey:
        return await _api(request).auth.require(creds, role, _source(request))

    return dependency


# ---------------------------------------------------------------------- the service


class BillingApi:
    """What the billing routes share: the configuration, database, staff keys, tokens."""

    def __init__(self, config: Config, tokens: JoinTokens, clock: Callable[[], float],
                 db: Any = None) -> None:
        web = config.web
        limiter = None
        if web.join_failure_limit > 0:
            limiter = AuthFailureLimiter(web.join_failure_limit, web.join_failure_window,
                                         web.join_block_seconds)
        self.config = config
        self.tokens = tokens
        self.clock = clock
        self.auth = StaffAuth(web.staff, limiter, clock)
        self.facility_ids = tuple(f.id for f in config.billing.facilities)
        self._db = db
        self._checked = False
        self._lock = asyncio.Lock()

    def _open(self) -> Any:
        from gateway.billing.db import DatabaseError, open_database, require_current

        try:
            if self._db is None:
                self._db = open_database(self.config.database.url, create=False)
            require_current(self._db)
        except DatabaseError as exc:
            log.error("billing api: %s", exc)
            raise ApiError(503, "billing_unavailable", "the billing database is not "
                           "available; see the gateway log") from None
        return self._db

    async def database(self) -> Any:
        """The billing database, opened and schema-checked once, off the event loop."""
        if self._checked:
            return self._db
        async with self._lock:
            if not self._checked:
                await run_in_threadpool(self._open)
                self._checked = True
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.dispose()


async def stream_in_thread(chunks: Iterable[bytes], *,
                           depth: int = STREAM_DEPTH) -> AsyncIterator[bytes]:
    """Run a blocking iterator in a thread of its own; yield its chunks on the loop.

    At most ``depth`` chunks wait in between (the worker blocks until the client
    has taken some), so a slow client does not make the export pile up in memory.
    The iterator is created, advanced and closed in the worker thread only (a
    database session never changes threads).  If the client goes away, the worker
    stops at its next chunk and closes the iterator (ending its transaction).
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue()
    room = threading.Semaphore(depth)
    stop = threading.Event()

    def put(item: bytes | BaseException | None) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            stop.set()

    def produce() -> None:
        try:
            with contextlib.closing(iter(chunks)) as it:  # type: ignore[type-var]
                for chunk in it:
                    while not room.acquire(timeout=0.25):
                        if stop.is_set():
                            return
                    if stop.is_set():
                        return
                    put(chunk)
            put(None)
        except BaseException as exc:  # handed to the response, which aborts
            put(exc)

    threading.Thread(target=produce, name="billing-stream", daemon=True).start()
    try:
        while True:
            item = await queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                log.error("billing api: a streamed export failed", exc_info=item)
                raise item
            room.release()
            yield item
    finally:
        stop.set()


# ---------------------------------------------------------------------- routes


router = APIRouter(tags=["billing"])
_BILLING_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "staff key missing or wrong"},
    403: {"model": ErrorBody, "description": "the key lacks the billing role, or no staff "
          "keys are configured"},
    422: {"model": ErrorBody, "description": "invalid request; field names the parameter"},
    429: {"model": ErrorBody, "description": "too many wrong keys from this address"},
    503: {"model": ErrorBody, "description": "the billing database is not available"},
}
Billing = Annotated[StaffKey, Depends(require_role("billing"))]


@router.get(
    "/api/billing/export", response_class=StreamingResponse,
    responses={200: {"description": "CSV (header row, then one row per call) or JSON Lines "
                     "(one object per line); columns in docs/billing.md",
                     "content": {"text/csv": {}, "application/x-ndjson": {}}},
               **_BILLING_ERRORS},
)
async def export_cdrs(
    request: Request,
    staff: Billing,
    start: Annotated[str, Query(alias="from", max_length=40,
                                description="YYYY-MM-DD (UTC) or an ISO 8601 time, inclusive")],
    end: Annotated[str, Query(alias="to", max_length=40,
                              description="YYYY-MM-DD (UTC) or an ISO 8601 time, exclusive")],
    facility: Annotated[str | None, Query(max_length=64,
                                          description="only this facility's calls")] = None,
    format: Annotated[Literal["csv", "json"], Query(description="csv or json (JSON Lines)")
                      ] = "csv",
) -> StreamingResponse:
    """The call detail records of calls that ended in [from, to), streamed."""
    from gateway.billing.export import (
        MEDIA_TYPES,
        CdrExport,
        ExportError,
        check_facility,
        export_range,
    )

    api = _api(request)
    try:
        where = export_range(start, end, facility)
        db = await api.database()
        await run_in_threadpool(check_facility, db, where.facility, api.facility_ids)
    except ExportError as exc:
        raise ApiError(422, "invalid_request", f"{exc.field}: {exc.message}", exc.field) \
            from None
    export = CdrExport(db, where, format)
    name = f"cdrs-{where.start:%Y%m%dT%H%M%SZ}-{where.end:%Y%m%dT%H%M%SZ}"
    if where.facility:
        name += f"-{where.facility}"
    log.info("billing api: %s exports %s as %s", staff.name, where.describe(), format)
    return StreamingResponse(
        stream_in_thread(export), media_type=MEDIA_TYPES[format],
        headers={"content-disposition":
                 f'attachment; filename="{name}.{"csv" if format == "csv" else "jsonl"}"'})


@router.get(
    "/api/billing/accounts/{account_id}/statement", response_class=Response,
    responses={200: {"description": "the statement (columns and layout in docs/billing.md)",
                     "content": {"text/csv": {}, "application/pdf": {}}},
               404: {"model": ErrorBody, "description": "no such account"},
               **_BILLING_ERRORS},
)
async def account_statement(
    request: Request,
    staff: Billing,
    account_id: Annotated[str, Path(min_length=1, max_length=200)],
    month: Annotated[str, Query(pattern=r"^[0-9]{4}-[0-9]{2}$",
                                description="the calendar month (UTC), e.g. 2026-05")],
    format: Annotated[Literal["csv", "pdf"], Query(description="csv or pdf")] = "csv",
) -> Response:
    """An account's monthly statement: balances, deposits, calls, credits, the ledger anchor."""
    from gateway.billing.statements import (
        MEDIA_TYPES,
        StatementError,
        build_statement,
        parse_month,
        render,
    )

    api = _api(request)
    try:
        parse_month(month)
        db = await api.database()
        st = await run_in_threadpool(build_statement, db, account_id, month)
    except StatementError as exc:
        if exc.not_found:
            raise ApiError(404, "not_found", exc.message, "account_id") from None
        raise ApiError(422, "invalid_request", f"{exc.field}: {exc.message}", exc.field) \
            from None
    data = await run_in_threadpool(render, st, format)
    log.info("billing api: %s got the %s statement of %s (anchor %s)", staff.name, st.month,
             st.account.id, st.anchor)
    filename = f"statement-{st.account.id}-{st.month}.{format}"
    return Response(data, media_type=MEDIA_TYPES[format],
                    headers={"content-disposition": f'attachment; filename="{filename}"'})


CallId = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$",
                             description="the call's id")]


async def _receipt_reader(
    request: Request, call_id: CallId,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """``family`` (a join token for this very call) or the name of a billing staff key."""
    api = _api(request)
    if creds is not None and "." in creds.credentials:  # join tokens are BODY.SIGNATURE
        try:
            # Genuine, for this call, and expired at most RECEIPT_TOKEN_GRACE ago.
            api.tokens.verify(creds.credentials, now=api.clock() - RECEIPT_TOKEN_GRACE,
                              call_id=call_id)
            return "family"
        except TokenError as exc:
            if exc.reason == "wrong_call":
                raise ApiError(403, "forbidden", "this link is for another call") from None
            if exc.reason == "expired":
                raise _unauthorized("this receipt link has expired; ask the facility for "
                                    "the receipt") from None
    staff = await api.auth.require(creds, "billing", _source(request))
    return staff.name


@router.get(
    "/api/billing/calls/{call_id}/receipt",
    responses={200: {"description": "the receipt: the charge explained in words and figures"},
               404: {"model": ErrorBody, "description": "no record of this call (yet)"},
               **_BILLING_ERRORS},
)
async def call_receipt(
    request: Request, call_id: CallId,
    reader: Annotated[str, Depends(_receipt_reader)],
) -> dict[str, Any]:
    """A call's receipt (billing staff, or the family with their join token for the call)."""
    from gateway.billing.cdr import get_cdr, receipt

    db = await _api(request).database()
    cdr = await run_in_threadpool(get_cdr, db, call_id)
    if cdr is None:
        raise ApiError(404, "not_found", "there is no receipt for this call yet (it was not "
                       "billed, or it has not ended)", "call_id")
    if reader != "family":
        log.info("billing api: %s read the receipt of call %s", reader, call_id)
    return receipt(cdr)


@router.get("/receipt/{call_id}", include_in_schema=False, response_class=HTMLResponse)
async def receipt_page(call_id: str) -> HTMLResponse:
    return HTMLResponse(RECEIPT_HTML, headers={"cache-control": "no-store"})


@router.get("/receipt-assets/receipt.js", include_in_schema=False)
async def receipt_script() -> Response:
    return Response(RECEIPT_JS, media_type="text/javascript; charset=utf-8")


@router.get("/receipt-assets/receipt.css", include_in_schema=False)
async def receipt_style() -> Response:
    return Response(RECEIPT_CSS, media_type="text/css; charset=utf-8")


def install_billing_api(app: FastAPI, config: Config, *, db: Any = None) -> BillingApi | None:
    """Add the billing routes to the web app when billing is enabled; else nothing."""
    if not config.billing.enabled:
        return None
    ctx = app.state.ctx
    api = BillingApi(config, ctx.tokens, ctx.clock, db)
    app.state.billing_api = api
    app.add_exception_handler(ApiError, _api_error)
    app.include_router(router)
    return api


# ---------------------------------------------------------------------- the family page
# Served from here (not /static) so the page, its script and style ship with the API.
# No inline script or style: the CSP allows 'self' only.

RECEIPT_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>Call receipt</title>
<link rel="stylesheet" href="/receipt-assets/receipt.css">
<script src="/receipt-assets/receipt.js" defer></script>
</head>
<body>
<main>
<h1 id="title" tabindex="-1">Call receipt</h1>
<p id="status" role="status" aria-live="polite">Loading the receipt&hellip;</p>
<noscript><p>This page needs JavaScript to read the code in its link. You can also ask
the facility for a printed receipt.</p></noscript>
<section id="receipt" hidden aria-labelledby="title">
<p id="summary" class="summary"></p>
<p id="ended"></p>
<h2>Details</h2>
<dl id="details"></dl>
<h2>Charges</h2>
<ul id="charges"></ul>
<div id="notes-block" hidden><h2>Notes</h2><ul id="notes"></ul></div>
<p><button type="button" id="print">Print this receipt</button></p>
</section>
</main>
</body>
</html>
"""

RECEIPT_JS = """"use strict";
(function () {
  var status = document.getElementById("status");
  var parts = location.pathname.split("/");
  var callId = decodeURIComponent(parts[parts.length - 1] || "");
  var hash = location.hash.replace(/^#/, "");
  var token = new URLSearchParams(hash).get("token") || hash;

  function fail(text) {
    status.textContent = text;
    status.className = "error";
  }
  function text(id, value) { document.getElementById(id).textContent = value || ""; }
  function when(iso) {
    if (!iso) { return "not answered"; }
    var d = new Date(iso);
    return isNaN(d) ? iso : d.toLocaleString([], {dateStyle: "long", timeStyle: "short"});
  }
  function item(list, value) {
    var li = document.createElement("li");
    li.textContent = value;
    list.appendChild(li);
  }
  function render(r) {
    text("summary", r.summary);
    text("ended", r.how_it_ended);
    var dl = document.getElementById("details");
    var rows = [
      ["Started", when(r.started_at)], ["Ended", when(r.ended_at)],
      ["From", r.from], ["To", r.to], ["Call time", r.call_time], ["Billed", r.billed],
      ["Rate", r.rate], ["Legal maximum (FCC cap)", r.fcc_cap && r.fcc_cap.per_minute],
      ["Total", r.total], ["Total after credits", r.total_after_credits],
      ["Call reference", r.call_id]
    ];
    rows.forEach(function (row) {
      var dt = document.createElement("dt");
      var dd = document.createElement("dd");
      dt.textContent = row[0];
      dd.textContent = row[1] || "";
      dl.appendChild(dt);
      dl.appendChild(dd);
    });
    var charges = document.getElementById("charges");
    (r.charges || []).forEach(function (c) { item(charges, c.explanation || c.amount); });
    (r.credits || []).forEach(function (c) { item(charges, "Credit: " + c.amount); });
    (r.payers || []).forEach(function (p) {
      item(charges, "Account " + p.account + " paid " + p.paid + " (charged " + p.charged +
           ", credited " + p.credited + ")");
    });
    var notes = document.getElementById("notes");
    (r.notes || []).forEach(function (n) { item(notes, n); });
    document.getElementById("notes-block").hidden = !(r.notes && r.notes.length);
    document.getElementById("receipt").hidden = false;
    status.textContent = "";
    document.getElementById("title").focus();
  }

  document.getElementById("print").addEventListener("click", function () { window.print(); });
  if (!callId || !token) {
    fail("This link is incomplete: it should end with #token= and a code. " +
         "Please use the whole link you were given.");
    return;
  }
  fetch("/api/billing/calls/" + encodeURIComponent(callId) + "/receipt", {
    headers: {"Authorization": "Bearer " + token}, cache: "no-store", credentials: "omit"
  }).then(function (resp) {
    return resp.json().then(function (body) { return {ok: resp.ok, body: body}; });
  }).then(function (res) {
    if (res.ok) { render(res.body); return; }
    fail(res.body.message || "The receipt could not be shown.");
  }).catch(function () {
    fail("The receipt could not be loaded. Check your connection and reload the page.");
  });
})();
"""

RECEIPT_CSS = """body { font-family: system-ui, sans-serif; font-size: 1.125rem; line-height: 1.5;
  color: #111; background: #fff; margin: 0; }
main { max-width: 40rem; margin: 0 auto; padding: 1rem 1.25rem 3rem; }
h1 { font-size: 1.75rem; margin: 0.5rem 0 1rem; }
h2 { font-size: 1.25rem; margin-top: 1.75rem; }
.summary { font-size: 1.35rem; font-weight: 600; }
.error { color: #8a1c1c; font-weight: 600; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 0.25rem 1rem; }
dt { font-weight: 600; }
dd { margin: 0; }
button { font: inherit; padding: 0.5rem 1rem; border: 2px solid #1d3f72; border-radius: 0.4rem;
  background: #fff; color: #1d3f72; cursor: pointer; }
button:focus-visible, h1:focus-visible { outline: 3px solid #1d3f72; outline-offset: 2px; }
@media print { button { display: none; } }
"""
