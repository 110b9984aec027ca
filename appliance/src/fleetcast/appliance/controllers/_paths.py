"""Server names in paths: ``/predictions/{server_name}`` and ``/history/{server_name}``.

A server name is any non-blank string (docs/DATA_CONTRACT.md#server_name), so it may hold
``/``, ``%``, ``?`` or spaces; clients percent-encode it as one path segment
(``/predictions/a%2Fb`` for ``a/b``). The routes take a ``path``-type parameter so such
names reach the handler at all, but the router matches the *decoded* path, which cannot
tell ``a%2Fb`` from ``a/b`` and normalises slashes (``a//b`` → ``a/b``, a trailing ``/``
dropped). The name is therefore read from the request's raw path, exactly as sent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["server_names"]


def server_names(scope: Mapping[str, Any], depth: int, routed: str) -> list[str]:
    """The name(s) to look up for a request routed to ``/<prefix>/{server_name:path}``.

    ``depth`` is the number of path segments before the name (1 for ``/history/...``);
    ``routed`` the router's value of the parameter. First the raw path's remainder after
    those segments, percent-decoded as UTF-8 (the exact name); then, when it differs, the
    router's normalised form (so ``/history/ppml0001/`` and ``//history//ppml0001`` still
    find ``ppml0001``), but only when the raw path holds no encoded slash: the router decodes
    ``%2F`` before it normalises, so it cannot tell ``qq%2F`` (the name ``qq/``) from
    ``qq/``, and ``DELETE /servers/qq%2F`` forgot the server ``qq``. Without a raw path (an
    ASGI server that gives none) only the normalised form.
    """
    names: list[str] = []
    raw = scope.get("raw_path")
    if raw:
        path = bytes(raw).split(b"?", 1)[0]  # some servers keep the query in raw_path
        parts = path.split(b"/", depth + 1)
        if len(parts) == depth + 2 and parts[depth + 1]:
            names.append(unquote_to_bytes(parts[depth + 1]).decode("utf-8", "replace"))
        if b"%2f" in path.lower():
            return names
    normalised = routed[1:] if routed.startswith("/") else routed
    if normalised and normalised not in names:
        names.append(normalised)
    return names
