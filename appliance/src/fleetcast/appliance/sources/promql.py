"""Prometheus HTTP API client, the default PromQL and the evaluation-time rule.

How results become contract records (server names, profiles, partial steps) is in
:mod:`fleetcast.appliance.sources.records`; its names are re-exported here.

Shared by the appliance's live source (:mod:`fleetcast.appliance.sources.prometheus`) and
the trainer's importer (``fleetcast import prometheus``), so a model is trained on exactly
the numbers it is later served: same expressions, same evaluation times, same names.
Standard library + numpy + msgspec only (no appliance runtime imports).

Time rule (docs/PROMETHEUS.md#time): step ``k`` (``timestamp = k * 300``) is represented by
the expressions evaluated at the step's **last second**, ``k * 300 + 299``
(:func:`eval_time`). For gauges that is the newest sample inside the step; for
``rate(x[5m])`` it is the rate over the step itself.
"""

from __future__ import annotations

import contextlib
import http.client
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec
import numpy as np

from fleetcast.appliance.sources.records import (
    DEFAULT_COVERAGE,
    REQUIRED_METRICS,
    LabelMapping,
    Samples,
    assemble,
    resolve_coverage,
)
from fleetcast.appliance.urls import REDIRECTS, opener, redirect_target, shown, split_credentials
from fleetcast.contract.encoder import parse_profile_rules
from fleetcast.contract.schema import METRIC_COLUMNS, STEP_SECONDS

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "DEFAULT_COVERAGE",
    "DEFAULT_QUERIES",
    "EVAL_OFFSET",
    "MAX_POINTS_PER_SERIES",
    "REQUIRED_METRICS",
    "LabelMapping",
    "PromClient",
    "PromError",
    "Samples",
    "Series",
    "assemble",
    "eval_time",
    "parse_profile_rules",
    "parse_response",
    "resolve_coverage",
    "resolve_queries",
    "url_problem",
]

DEFAULT_QUERIES: dict[str, str | None] = {
    "cpu_pct": '100 * (1 - avg by (instance) (rate(node_cpu_seconds_total{mode="idle"}[5m])))',
    "mem_pct": "100 * (1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes)",
    "disk_io_mb_s": "sum by (instance) (rate(node_disk_read_bytes_total[5m])"
    " + rate(node_disk_written_bytes_total[5m])) / 1e6",
    "latency_ms": None,
}
"""PromQL per contract metric for a plain node_exporter. node_exporter has no latency:
``None`` means "not measured", filled with ``latency_fill`` (docs/PROMETHEUS.md#latency)."""

EVAL_OFFSET = STEP_SECONDS - 1
"""Seconds after a step's start at which it is evaluated (its last second)."""

MAX_POINTS_PER_SERIES = 11_000
"""Prometheus refuses a query_range with more points per series than this."""

_SEE = "docs/PROMETHEUS.md"


def eval_time(step: int) -> int:
    """Epoch seconds at which step number ``step`` (``ts // 300``) is evaluated."""
    return int(step) * STEP_SECONDS + EVAL_OFFSET


class PromError(RuntimeError):
    """A Prometheus request failed. ``kind``: unreachable, timeout, http, bad_query,
    bad_response. The message says what, why and how to fix it, in the appliance's words.

    ``detail``: the bare cause (the socket error, ``HTTP 503``, Prometheus' error text),
    so that another caller (``fleetcast import prometheus``) can word its own message.
    """

    def __init__(self, kind: str, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.detail = detail

    @property
    def retryable(self) -> bool:
        """False for errors a retry cannot fix (a PromQL expression Prometheus refuses)."""
        return self.kind != "bad_query"


@dataclass(frozen=True)
class Series:
    """One result series: its labels, epoch-second times (n,) float64, values (n,) float64."""

    labels: dict[str, str]
    times: np.ndarray
    values: np.ndarray


class _Result(msgspec.Struct):
    metric: dict[str, str] = {}
    value: tuple[float, str] | None = None
    values: list[tuple[float, str]] = []


class _Data(msgspec.Struct):
    resultType: str  # Prometheus' field names
    result: msgspec.Raw


class _Body(msgspec.Struct):
    status: str
    data: _Data | None = None
    errorType: str | None = None
    error: str | None = None


_DECODER = msgspec.json.Decoder(_Body)
_RESULTS = msgspec.json.Decoder(list[_Result])


def parse_response(body: bytes, expr: str = "") -> list[Series]:
    """Series of a ``/api/v1/query`` or ``/api/v1/query_range`` JSON body.

    ``vector`` and ``matrix`` results give one Series per label set; ``scalar`` gives one
    Series without labels. Values are Prometheus' strings ("NaN", "+Inf" included).
    Raises PromError(bad_query) for ``status: error`` and PromError(bad_response) for a
    body that is not the Prometheus API's JSON.
    """
    try:
        parsed = _DECODER.decode(body)
    except msgspec.DecodeError as exc:
        raise PromError(
            "bad_response",
            f"The answer to {expr!r} is not Prometheus API JSON ({exc}). Why it matters: no "
            "sample can be read from it. Fix: point the URL at Prometheus itself "
            f"(http://host:9090), not at an exporter or a proxy login page. See {_SEE}#configure.",
            detail=str(exc),
        ) from exc
    if parsed.status != "success" or parsed.data is None:
        if "too many samples" in str(parsed.error):
            # Prometheus' --query.max-samples: the expression is right, the read too big.
            fix = (
                "the expression reads more samples than Prometheus' --query.max-samples "
                "allows: raise that limit, or read a cheaper series (a recording rule)"
            )
        else:
            fix = "correct the expression (try it in Prometheus' graph page)"
        raise PromError(
            "bad_query",
            f"Prometheus refused {expr!r}: {parsed.errorType}: {parsed.error}. Why it matters: "
            f"this metric cannot be read. Fix: {fix}. See {_SEE}#queries.",
            detail=f"{parsed.errorType}: {parsed.error}",
        )
    kind = parsed.data.resultType
    if kind == "scalar":
        t, v = msgspec.json.decode(parsed.data.result, type=tuple[float, str])
        return [Series({}, np.array([float(t)]), np.array([v], dtype=np.float64))]
    if kind not in ("vector", "matrix"):
        raise PromError(
            "bad_query",
            f"{expr!r} returns a {kind}, not an instant vector. Fix: use an expression that "
            f"yields one series per server. See {_SEE}#queries.",
            detail=f"it returns a {kind}, not an instant vector",
        )
    out = []
    try:
        items = _RESULTS.decode(parsed.data.result)
    except msgspec.DecodeError as exc:
        raise PromError(
            "bad_response",
            f"Malformed result for {expr!r} ({exc}). See {_SEE}#troubleshooting.",
            detail=f"malformed result: {exc}",
        ) from exc
    for item in items:
        pairs = [item.value] if item.value is not None else item.values
        if not pairs:
            continue
        times = np.fromiter((p[0] for p in pairs), dtype=np.float64, count=len(pairs))
        values = np.array([p[1] for p in pairs], dtype=np.float64)
        out.append(Series(dict(item.metric), times, values))
    return out


def url_problem(url: str) -> str | None:
    """Why ``url`` is not a usable http(s) URL (a sentence), or None when it is.

    Checks what ``urllib`` would otherwise only find at the first request: the scheme
    (http or https), a host, a numeric port in 1..65535 when one is given, and no
    whitespace or control characters.
    """
    text = str(url)
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in text):
        return "it contains whitespace or control characters"
    try:
        parts = urllib.parse.urlsplit(text)
    except ValueError as exc:  # e.g. an unbalanced IPv6 bracket
        return f"it cannot be parsed ({exc})"
    if parts.scheme not in ("http", "https"):
        return f"its scheme is {parts.scheme or 'missing'!r}, not http or https"
    try:
        port = parts.port
        host = parts.hostname
    except ValueError:
        _, _, tail = parts.netloc.rpartition("@")[2].rpartition(":")
        return f"its port {tail!r} is not a number in 1..65535"
    if not host:
        return "it names no host"
    if port is not None and not 1 <= port <= 65535:
        return f"its port {port} is not in 1..65535"
    return None


def _short(exc: BaseException) -> str:
    """``Type: text`` of an exception on one line, cut to 120 characters."""
    text = " ".join(str(exc).split())
    if len(text) > 120:
        text = text[:117] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class PromClient:
    """Blocking client of the Prometheus HTTP API (``urllib``; call it from a worker thread).

    ``url``: Prometheus' base URL (``http://host:9090``, a path prefix is kept;
    ``user:password@`` is sent as HTTP Basic auth and never shown: :mod:`fleetcast.appliance.urls`).
    """

    def __init__(
        self, url: str, timeout_s: float = 10.0, headers: Mapping[str, str] | None = None
    ) -> None:
        problem = url_problem(url)
        if problem is not None:
            raise ValueError(
                f"Expected a Prometheus URL like http://host:9090, but got {shown(url)!r}: "
                f"{problem}. Why it matters: the appliance cannot read metrics without it. "
                f"Fix: pass --prometheus-url http://HOST:9090. See {_SEE}#configure."
            )
        self.url, auth = split_credentials(url.rstrip("/"))
        self.shown = shown(self.url)
        """The URL as messages show it (no credentials)."""
        self.timeout_s = float(timeout_s)
        self.headers = {"Accept": "application/json", **auth, **dict(headers or {})}
        self._opener = opener()

    def _post(self, path: str, form: Mapping[str, str], expr: str) -> list[Series]:
        data = urllib.parse.urlencode(form).encode("ascii")
        request = urllib.request.Request(
            f"{self.shown}{path}",
            data=data,
            headers={**self.headers, "Content-Type": "application/x-www-form-urlencoded"},
            method="POST",
        )
        try:
            with self._opener.open(request, timeout=self.timeout_s) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            if exc.code in REDIRECTS:
                raise self._redirected(path, exc) from exc
            body = exc.read()
            if exc.code in (400, 422):  # Prometheus' answer to a bad expression
                return parse_response(body, expr)
            raise self._http_error(path, exc.code, body) from exc
        except TimeoutError as exc:
            raise PromError(
                "timeout",
                f"Prometheus at {self.shown} did not answer {path} within {self.timeout_s:g} s. "
                "Why it matters: no samples this cycle (retried with backoff). Fix: check its "
                f"load, or raise the timeout. See {_SEE}#troubleshooting.",
                detail=f"no answer within {self.timeout_s:g} s",
            ) from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, TimeoutError):
                raise PromError(
                    "timeout",
                    f"Prometheus at {self.shown} did not answer {path} within "
                    f"{self.timeout_s:g} s (retried with backoff). See {_SEE}#troubleshooting.",
                    detail=f"no answer within {self.timeout_s:g} s",
                ) from exc
            raise PromError(
                "unreachable",
                f"Cannot reach Prometheus at {self.shown} ({reason}). Why it matters: no samples "
                "until it is back (retried with backoff; the last forecasts stay served). Fix: "
                f"start Prometheus or correct --prometheus-url. See {_SEE}#troubleshooting.",
                detail=str(reason),
            ) from exc
        except (http.client.HTTPException, ValueError) as exc:
            # Not an HTTP answer (BadStatusLine: the port is SSH or a database), a body cut
            # short (IncompleteRead), a URL urllib cannot use (InvalidURL).
            raise PromError(
                "bad_response",
                f"Prometheus at {self.shown} gave no valid HTTP answer to {path} "
                f"({_short(exc)}). Why it matters: no samples until it does (retried with "
                "backoff; the last forecasts stay served). Fix: check that --prometheus-url "
                "points at Prometheus itself (http://host:9090), not at another service or a "
                f"proxy that cuts answers short. See {_SEE}#troubleshooting.",
                detail=_short(exc),
            ) from exc
        return parse_response(body, expr)

    def _redirected(self, path: str, exc: urllib.error.HTTPError) -> PromError:
        location = exc.headers.get("Location") if exc.headers is not None else None
        target = shown(str(location)) if location else redirect_target(None)
        base = target.removesuffix(path) if target.endswith(path) else None
        return PromError(
            "http",
            f"Prometheus at {self.shown} redirects {path} to {target} (HTTP {exc.code}). Why "
            "it matters: a redirected query loses its expression, so no samples are read. "
            "Fix: set --prometheus-url to the URL it redirects to"
            + (f" ({base})" if base else "")
            + f". See {_SEE}#configure.",
            detail=f"HTTP {exc.code}",
        )

    def _http_error(self, path: str, code: int, body: bytes) -> PromError:
        """The PromError of a non-2xx answer other than 400/422: credentials refused
        (401/403/407), or Prometheus' own error (a query timeout is HTTP 503), else bare."""
        if code in (401, 403, 407):
            sent = "Authorization" in self.headers
            return PromError(
                "http",
                f"Prometheus at {self.shown} refused the "
                + ("credentials" if sent else "request without credentials")
                + f" (HTTP {code}) to {path}. Why it matters: no samples until it accepts "
                "them (retried with backoff; the last forecasts stay served). Fix: "
                + (
                    "correct the user and password in --prometheus-url"
                    if sent
                    else "put them in the URL: --prometheus-url http://USER:PASSWORD@HOST:9090"
                )
                + " (HTTP Basic auth; a proxy that wants another kind of login cannot be "
                f"used: point the URL at Prometheus itself). See {_SEE}#configure.",
                detail=f"HTTP {code}",
            )
        cause = ""
        with contextlib.suppress(msgspec.DecodeError):
            parsed = _DECODER.decode(body)
            if parsed.status == "error" and parsed.error:
                cause = f"{parsed.errorType}: {' '.join(parsed.error.split())[:200]}"
        if cause.startswith("timeout"):
            fix = (
                "the query ran past Prometheus' own --query.timeout: make the expression "
                "cheaper (a recording rule) or raise that timeout"
            )
        else:
            fix = "check that the URL is Prometheus' and that it is healthy"
        return PromError(
            "http",
            f"Prometheus at {self.shown} answered HTTP {code} to {path}"
            + (f" ({cause})" if cause else "")
            + ". Why it matters: no samples this cycle (retried with backoff). Fix: "
            f"{fix}. See {_SEE}#troubleshooting.",
            detail=f"HTTP {code}",  # bare: the trainer's importer words its own message
        )

    def query(self, expr: str, at: float) -> list[Series]:
        """Instant query of ``expr`` evaluated at epoch seconds ``at``."""
        return self._post("/api/v1/query", {"query": expr, "time": _fmt(at)}, expr)

    def query_range(self, expr: str, start: float, end: float, step: int) -> list[Series]:
        """Range query: ``expr`` evaluated at ``start, start + step, ... <= end``."""
        points = int((end - start) // step) + 1
        if points > MAX_POINTS_PER_SERIES:
            raise ValueError(
                f"A query_range of {points} points per series exceeds Prometheus' limit of "
                f"{MAX_POINTS_PER_SERIES}; split it into chunks."
            )
        form = {"query": expr, "start": _fmt(start), "end": _fmt(end), "step": str(int(step))}
        return self._post("/api/v1/query_range", form, expr)


def _fmt(t: float) -> str:
    return f"{float(t):.3f}"


def resolve_queries(overrides: Mapping[str, str | None] | None = None) -> dict[str, str | None]:
    """The PromQL per metric: :data:`DEFAULT_QUERIES` with ``overrides`` (``""`` = none).

    Raises ValueError when a required metric (cpu, mem, disk) has no expression.
    """
    queries = dict(DEFAULT_QUERIES)
    for metric, expr in (overrides or {}).items():
        if metric not in METRIC_COLUMNS:
            raise ValueError(
                f"Unknown metric {metric!r} for a PromQL expression; expected one of "
                f"{list(METRIC_COLUMNS)}. See {_SEE}#queries."
            )
        if expr is not None:
            queries[metric] = expr.strip() or None
    missing = [m for m in REQUIRED_METRICS if not queries[m]]
    if missing:
        raise ValueError(
            f"No PromQL expression for {missing}. Why it matters: a record needs cpu, memory "
            f"and disk. Fix: give one per metric or keep the defaults. See {_SEE}#queries."
        )
    return queries
