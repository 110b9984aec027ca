"""API key guards: ``X-API-Key`` on writes (when a key is configured) and optionally reads.

The key is compared in constant time (``hmac.compare_digest``) on its UTF-8 bytes. A
missing or wrong key is a 401 with the JSON error body. The key itself is never logged.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Any

from fleetcast.appliance.http_errors import ApiError

if TYPE_CHECKING:
    from litestar.connection import ASGIConnection
    from litestar.handlers.base import BaseRouteHandler

__all__ = ["API_KEY_HEADER", "key_matches", "read_guard", "write_guard"]

API_KEY_HEADER = "X-API-Key"
_SEE = "docs/OPERATIONS.md#api-key"


def key_matches(expected: str, given: str | None) -> bool:
    """Constant-time comparison of the configured key with the one a client sent."""
    if given is None:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8"))


def _check(connection: ASGIConnection[Any, Any, Any, Any], what: str) -> None:
    settings = connection.app.state.runtime.settings
    if settings.api_key is None:
        return
    given = connection.headers.get(API_KEY_HEADER)
    if key_matches(settings.api_key, given):
        return
    raise ApiError(
        401,
        "missing API key" if given is None else "wrong API key",
        f"{what} requires the {API_KEY_HEADER} header with the appliance's API key"
        + ("" if given is None else "; the key sent does not match"),
        f"send `{API_KEY_HEADER}: <key>` (the key is FLEETCAST_API_KEY or --api-key-file on the appliance)",
        _SEE,
    )


def write_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard of every write endpoint: the key is required whenever one is configured."""
    _check(connection, "this write endpoint")


def read_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard of read endpoints: the key is required only with ``--read-key-required``."""
    if connection.app.state.runtime.settings.read_key_required:
        _check(connection, "reading (the appliance runs with --read-key-required)")
