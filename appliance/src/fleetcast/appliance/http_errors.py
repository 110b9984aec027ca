"""Errors as the API returns them: ``{"error", "detail", "fix", "see"}``, never a traceback.

:class:`ApiError` is raised by controllers with the codex's four parts; the exception
handlers here turn it, Litestar's own HTTP exceptions (401, 404, 405, 413, 429, decode
errors) and anything unexpected (500, logged with its traceback server-side only) into
that body. Messages never contain file paths or tensors. :func:`send_error` answers one
from an ASGI middleware outside Litestar's exception handling; :func:`body_type_guard`
refuses a request body that is not of the endpoint's types (415).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from litestar import Request, Response
from litestar.exceptions import HTTPException

from fleetcast.appliance.schemas import ErrorBody, Rejected

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from litestar.connection import ASGIConnection
    from litestar.handlers.base import BaseRouteHandler
    from litestar.types import Receive, Scope, Send

__all__ = [
    "API_DOC",
    "CROSS_SITE_DOC",
    "JSON_TYPE",
    "ApiError",
    "body_type_guard",
    "exception_handlers",
    "send_error",
]

_log = logging.getLogger(__name__)

API_DOC = "docs/API.md"
CROSS_SITE_DOC = "docs/OPERATIONS.md#cross-site-requests"
JSON_TYPE = "application/json"

_DEFAULTS: dict[int, tuple[str, str, str]] = {
    400: (
        "bad request",
        "check the request's body and parameters against the schema at /schema",
        API_DOC,
    ),
    401: (
        "missing or wrong API key",
        "send the key in the X-API-Key header (see the appliance's FLEETCAST_API_KEY)",
        "docs/OPERATIONS.md#api-key",
    ),
    404: ("not found", "check the path and the name against GET /status", API_DOC),
    405: ("method not allowed", "use the method listed for this path in docs/API.md", API_DOC),
    413: (
        "request body too large",
        "split the batch into smaller POSTs (or raise --max-body-bytes)",
        "docs/OPERATIONS.md#limits",
    ),
    415: (
        "unsupported content type",
        f"send the body with `Content-Type: {JSON_TYPE}`",
        CROSS_SITE_DOC,
    ),
    429: (
        "rate limit exceeded",
        "wait for the reset time in the RateLimit-Reset header, batch records into fewer requests, "
        "or raise --rate-limit",
        "docs/OPERATIONS.md#limits",
    ),
}


class ApiError(HTTPException):
    """A 4xx/5xx with the four parts of a fleetcast error message."""

    def __init__(
        self,
        status_code: int,
        error: str,
        detail: str,
        fix: str,
        see: str = API_DOC,
        rejected: list[Rejected] | None = None,
    ) -> None:
        super().__init__(detail=detail, status_code=status_code)
        self.error = error
        self.fix = fix
        self.see = see
        self.rejected = rejected


def _body_response(
    body: ErrorBody, status: int, headers: dict[str, str] | None = None
) -> Response[ErrorBody]:
    return Response(
        content=body, status_code=status, headers=headers, media_type="application/json"
    )


def _api_error(_: Request[Any, Any, Any], exc: ApiError) -> Response[ErrorBody]:
    return _body_response(
        ErrorBody(
            error=exc.error, detail=exc.detail, fix=exc.fix, see=exc.see, rejected=exc.rejected
        ),
        exc.status_code,
    )


def _http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[ErrorBody]:
    status = exc.status_code
    error, fix, see = _DEFAULTS.get(
        status, ("request failed", "see the API documentation", API_DOC)
    )
    detail = str(exc.detail) if exc.detail else error
    extra = getattr(exc, "extra", None)
    if status == 400 and isinstance(extra, list) and extra:
        parts = [
            f"{item.get('key', '?')}: {item.get('message', '')}"
            if isinstance(item, dict)
            else str(item)
            for item in extra
        ]
        detail = f"{detail.split(':')[0]}: {'; '.join(parts)}"
    headers = {k: str(v) for k, v in (exc.headers or {}).items()}
    return _body_response(ErrorBody(error=error, detail=detail, fix=fix, see=see), status, headers)


def _internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorBody]:
    _log.error(
        "internal error on %s %r",
        request.method,
        request.url.path,
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    return _body_response(
        ErrorBody(
            error="internal error",
            detail=f"the appliance failed to answer ({type(exc).__name__}); it has been logged",
            fix="retry; if it persists, send the appliance log (journalctl -u fleetcast-appliance) to the operators",
            see="docs/OPERATIONS.md#troubleshooting",
        ),
        500,
    )


def exception_handlers() -> dict[type[Exception], Any]:
    """The handlers to pass to ``Litestar(exception_handlers=...)``."""
    return {ApiError: _api_error, HTTPException: _http_error, Exception: _internal_error}


async def send_error(exc: HTTPException, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer ``exc`` (four-part body, its headers) from an ASGI middleware that runs
    outside Litestar's exception handling, through the ``send`` it was given."""
    request: Request[Any, Any, Any] = Request(scope, receive, send)
    response = _api_error(request, exc) if isinstance(exc, ApiError) else _http_error(request, exc)
    await response.to_asgi_response(None, request)(scope, receive, send)


def _has_body(headers: Mapping[str, str]) -> bool:
    length = headers.get("content-length")
    if length is not None:
        return length.strip() not in ("", "0")
    return "transfer-encoding" in headers


def _refuse_encoded(connection: ASGIConnection[Any, Any, Any, Any]) -> None:
    """415 for a body the appliance would misread: compressed (``Content-Encoding``), or in a
    charset other than UTF-8 (JSON is UTF-8, RFC 8259). Both were read as plain UTF-8 and
    refused as "JSON is malformed: invalid character (byte 0)", which names neither."""
    encoding = connection.headers.get("content-encoding", "identity").strip().lower()
    declared = connection.headers.get("content-type") or ""
    charset = next(
        (p.split("=", 1)[1].strip().strip('"').lower() for p in declared.split(";")[1:]
         if p.strip().lower().startswith("charset=")),
        "utf-8",
    )  # fmt: skip
    if encoding not in ("", "identity"):
        sent, fix = f"Content-Encoding {encoding[:40]!r}", "send the body uncompressed"
    elif charset not in ("utf-8", "utf8", "us-ascii", "ascii"):  # ASCII is UTF-8
        sent, fix = f"charset {charset[:40]!r}", "encode the body as UTF-8 (or drop the charset)"
    else:
        return
    raise ApiError(
        415,
        "unsupported body encoding",
        f"{connection.scope.get('method', 'POST')} {connection.url.path} reads its body as "
        f"uncompressed UTF-8, but the request declares {sent}",
        fix,
        "docs/API.md",
    )


def body_type_guard(
    *accepted: str,
) -> Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], None]:
    """A guard refusing with 415 a request whose ``Content-Type`` is not one of
    ``accepted`` (parameters such as ``charset`` aside), or that has a body without one.

    A bodyless request without ``Content-Type`` passes (``POST /admin/reload`` alone).
    Why: a browser sends a cross-site POST of a "simple" type (``text/plain``, a form)
    without asking the server first; a JSON or MessagePack body needs a CORS preflight,
    which the appliance never grants, so a web page in an operator's browser cannot
    write to an appliance it can reach (docs/OPERATIONS.md#cross-site-requests).
    """
    allowed = frozenset(t.lower() for t in accepted)
    named = " or ".join(filter(None, (", ".join(accepted[:-1]), accepted[-1])))

    def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        _refuse_encoded(connection)
        declared = connection.headers.get("content-type")
        if declared is None:
            if not _has_body(connection.headers):
                return
            sent = "a body without a Content-Type"
        else:
            if declared.split(";", 1)[0].strip().lower() in allowed:
                return
            sent = f"Content-Type {declared[:100]!r}"
        raise ApiError(
            415,
            "unsupported content type",
            f"{connection.scope.get('method', 'POST')} {connection.url.path} takes a body of "
            f"type {named}, but the request has {sent}; other types are refused because a web "
            "page can send them from a browser without the appliance's consent (a cross-site "
            "request)",
            f"send the body with `Content-Type: {accepted[0]}` (curl: -H 'content-type: "
            f"{accepted[0]}'; curl -d alone sends a form type)",
            CROSS_SITE_DOC,
        )

    return guard
