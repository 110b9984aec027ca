"""URLs the appliance calls: the credentials they carry are sent, never shown.

An operator may put credentials in a URL: ``http://user:password@prometheus:9090`` for a
Prometheus or an Alertmanager behind HTTP Basic auth, or a webhook whose path is its token
(``https://hooks.example/services/T000/B000/XXXX``). :func:`split_credentials` turns the
user information into an ``Authorization`` header (urllib would otherwise read
``user:password@host`` as the host name); :func:`shown` is the form every message, log line
and ``/status`` uses (docs/OPERATIONS.md#security). Standard library only.
"""

from __future__ import annotations

import base64
import urllib.parse
import urllib.request

__all__ = ["REDIRECTS", "opener", "redirect_target", "shown", "split_credentials"]

REDIRECTS = (301, 302, 303, 307, 308)
"""HTTP redirect codes: :func:`opener` answers them with an HTTPError instead of following."""


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Refuses to follow redirects. urllib follows a 301/302/303 to a POST with a GET
    without the body: Alertmanager answers that GET with its alert list (HTTP 200), so an
    Alertmanager behind an http→https redirect counted every alert delivered that it
    never got, and Prometheus answered "no expression found" for a correct expression."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # urllib then raises HTTPError with the redirect's code


def opener() -> urllib.request.OpenerDirector:
    """A urllib opener that does not follow redirects (see :data:`REDIRECTS`)."""
    return urllib.request.build_opener(_NoRedirects)


def redirect_target(headers: object) -> str:
    """The ``Location`` of a redirect as :func:`shown` shows it (without its path: it may
    hold a webhook's token), or ``?`` when it has none."""
    location = getattr(headers, "get", lambda _k: None)("Location")
    return shown(str(location), path=False) if location else "?"


def split_credentials(url: str) -> tuple[str, dict[str, str]]:
    """``url`` without its ``user:password@`` part, and the headers that carry it instead
    (``{"Authorization": "Basic …"}``; empty when the URL has none)."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url, {}
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    token = f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password)}"
    header = "Basic " + base64.b64encode(token.encode("utf-8")).decode("ascii")
    bare = urllib.parse.urlunsplit(parts._replace(netloc=hostport))
    return bare, {"Authorization": header}


def shown(url: str, *, path: bool = True) -> str:
    """``url`` as it may be shown: scheme, host and port, and the path when ``path`` (a
    base path such as ``/prometheus``); never the user, password, query or fragment. With
    ``path=False`` a path is shown as ``/…`` (a webhook's path may be its secret)."""
    try:
        parts = urllib.parse.urlsplit(str(url))
    except ValueError:  # an unbalanced IPv6 bracket: refused at start (url_problem)
        return "(invalid URL)"
    hostport = parts.netloc.rpartition("@")[2]  # the port as written, even a bad one
    tail = parts.path if path else ("/…" if parts.path.strip("/") else parts.path)
    return urllib.parse.urlunsplit((parts.scheme, hostport, tail, "", ""))
