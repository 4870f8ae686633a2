"""The web application: the family call page, the JSON API and the ``/ws`` endpoint.

FastAPI for the API because it validates input and publishes the OpenAPI document
(``/api/openapi.json``) from the same type hints.  Its default 422 body is replaced by
one that names the offending field plainly, and every error has the same shape::

    {"error": "invalid_request", "field": "call_id", "message": "call_id: ..."}
"""

from __future__ import annotations

import hmac
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.config import package_version

from .security import BodyLimitMiddleware, SecurityHeadersMiddleware
from .signalling import SignallingContext, serve_signalling
from .tokens import CALL_ID_PATTERN, MAX_TTL

log = logging.getLogger("gateway.web")

STATIC_DIR = Path(__file__).resolve().parent / "static"
_ERROR_NAMES = {401: "unauthorized", 403: "forbidden", 404: "not_found",
                405: "method_not_allowed", 413: "too_large", 415: "unsupported_media_type"}


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer of the API."""

    error: str = Field(description="machine-readable code, e.g. invalid_request")
    message: str = Field(description="what went wrong, for a person")
    field: str | None = Field(default=None, description="the request field at fault, if any")


class Health(BaseModel):
    status: Literal["ok"] = "ok"


def _json_number(value: Any) -> Any:
    """Integers as JSON Schema has them: 60 and 60.0, never true or "60"."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PydanticCustomError("int_type", "Input should be a valid integer")
    return value


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    call_id: str = Field(pattern=CALL_ID_PATTERN, max_length=128,
                         description="the call the token admits to (1-128 of A-Z a-z 0-9 _.:@-)")
    role: Literal["family"] = Field(default="family", description='"family" ("staff" later)')
    ttl: Annotated[int, Field(ge=1, le=MAX_TTL), BeforeValidator(_json_number)] | None = Field(
        default=None, description="seconds the token is valid (default: [web] token_ttl)")


class TokenResponse(BaseModel):
    token: str
    call_id: str
    role: str
    expires_at: datetime = Field(description="UTC, ISO 8601")
    ttl: int


def _error(status: int, error: str, message: str, field: str | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    body = ErrorBody(error=error, message=message, field=field)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)


def _field_of(loc: tuple[Any, ...]) -> str:
    parts = [str(x) for x in loc if x not in ("body", "query", "path", "header", "cookie")]
    return ".".join(parts) or "body"


_ERRORS: dict[int | str, dict[str, Any]] = {422: {"model": ErrorBody,
                                                   "description": "invalid request"}}


_bearer = HTTPBearer(auto_error=False, scheme_name="adminKey",
                     description="the [web] admin_key of the gateway configuration")


def _require_admin(
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Admin calls need ``Authorization: Bearer <[web] admin_key>``."""
    ctx: SignallingContext = request.app.state.ctx
    key = ctx.web.admin_key
    if key is None:
        raise HTTPException(403, detail={"error": "admin_disabled", "message":
                            "no [web] admin_key is configured, so the admin API is off"})
    if creds is None or not hmac.compare_digest(creds.credentials.encode(), key.encode()):
        raise HTTPException(401, detail={"error": "unauthorized", "message":
                            "Authorization: Bearer <admin key> is missing or wrong"},
                            headers={"WWW-Authenticate": "Bearer"})


def create_app(ctx: SignallingContext) -> FastAPI:
    """The ASGI application; ``ctx`` carries config, tokens, the hub and the media endpoint."""
    app = FastAPI(
        title="Video-visitation gateway",
        version=package_version(),
        description="HTTP API of the gateway's web side. Browser signalling is a WebSocket "
        "at /ws, described in docs/signalling.md.",
        openapi_url="/api/openapi.json",
        docs_url=None,  # Swagger UI loads scripts from a CDN, which our CSP forbids
        redoc_url=None,
    )
    app.state.ctx = ctx
    app.add_middleware(BodyLimitMiddleware, limit=ctx.web.max_message_bytes)
    app.add_middleware(SecurityHeadersMiddleware)  # outermost: also on 411/413

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
        field = _field_of(tuple(first.get("loc", ())))
        if first.get("type") == "json_invalid":  # loc is ("body", offset)
            field, message = "body", "the request body is not valid JSON"
        elif field == "body" and first.get("type") == "missing":
            message = "a JSON object body is required"
        else:
            message = f"{field}: {first.get('msg', 'invalid')}"
        return _error(422, "invalid_request", message, field)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers) if exc.headers else None
        detail: Any = exc.detail
        if isinstance(detail, dict):
            return _error(exc.status_code, str(detail.get("error", "error")),
                          str(detail.get("message", "")), headers=headers)
        if exc.status_code == 400:  # FastAPI could not decode the body (not UTF-8 JSON):
            return _error(422, "invalid_request",  # the same answer as for broken JSON
                          "the request body is not valid JSON", "body")
        name = _ERROR_NAMES.get(exc.status_code, "error")
        return _error(exc.status_code, name, str(detail), headers=headers)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("web: %s %s failed", request.method, request.url.path, exc_info=exc)
        return _error(500, "internal_error", "the gateway failed; see its log")

    @app.get("/api/health", response_model=Health, tags=["status"])
    async def health() -> Health:
        """Liveness for load balancers and monitoring."""
        return Health()

    @app.post(
        "/api/admin/tokens", response_model=TokenResponse, status_code=201, tags=["admin"],
        dependencies=[Depends(_require_admin)],
        responses={401: {"model": ErrorBody, "description": "admin key missing or wrong"},
                   403: {"model": ErrorBody, "description": "admin API not configured"},
                   **_ERRORS},
    )
    async def issue_token(body: TokenRequest) -> TokenResponse:
        """Issue a join token for one call (until scheduled visits issue them)."""
        ttl = body.ttl or ctx.web.token_ttl
        now = ctx.clock()
        token = ctx.tokens.issue(body.call_id, now=now, ttl=ttl, role=body.role)
        log.info("web: admin issued a %s token for call %s (%d s)", body.role, body.call_id,
                 ttl)
        return TokenResponse(token=token, call_id=body.call_id, role=body.role, ttl=ttl,
                             expires_at=datetime.fromtimestamp(int(now) + ttl, UTC))

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.websocket("/ws")
    async def signalling(websocket: WebSocket) -> None:
        await serve_signalling(websocket, ctx)

    return app
