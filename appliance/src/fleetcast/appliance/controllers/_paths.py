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
    ``routed`` the router's value of the parameter. From the raw path: its remainder after
    those segments, percent-decoded as UTF-8 (the exact name), then, when that remainder
    ends in literal slashes, the same without them (``/history/ppml0001/`` still finds
    ``ppml0001``). Never the router's normalised form when there is a raw path: it cannot
    tell ``ppweb002%2F`` (the name ``ppweb002/``) from ``ppweb002/``, so ``DELETE
    /servers/qq%2F`` forgot the server ``qq``. Without a raw path (an ASGI server that gives
    none) only the normalised form.
    """
    raw = scope.get("raw_path")
    if raw:
        path = bytes(raw).split(b"?", 1)[0]  # some servers keep the query in raw_path
        parts = path.split(b"/", depth + 1)
        if len(parts) == depth + 2 and parts[depth + 1]:
            segment = parts[depth + 1]
            names = [unquote_to_bytes(segment).decode("utf-8", "replace")]
            bare = segment.rstrip(b"/")
            if bare and bare != segment:
                names.append(unquote_to_bytes(bare).decode("utf-8", "replace"))
            return names
        return []
    normalised = routed[1:] if routed.startswith("/") else routed
    return [normalised] if normalised else []
