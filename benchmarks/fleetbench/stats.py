"""Small statistics and target checks shared by every benchmark (pure Python, no numpy).

A *sample* is a list of repeated timings of one thing (milliseconds, or any unit). Medians
and spreads are what the suite reports; ratios are computed between two samples measured
in the same run, which is what stays meaningful on a noisy, shared machine.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = [
    "Summary",
    "Target",
    "TargetResult",
    "check_target",
    "check_targets",
    "ratio",
    "summarize",
    "time_calls",
    "time_interleaved",
]


@dataclass(frozen=True)
class Summary:
    """Median and spread of repeated measurements (same unit as the input)."""

    median: float
    """Median of the runs."""
    p25: float
    """25th percentile (linear interpolation)."""
    p75: float
    """75th percentile."""
    min: float
    """Fastest run."""
    max: float
    """Slowest run."""
    runs: int
    """Number of runs."""

    @property
    def spread(self) -> float:
        """Relative interquartile range, (p75 − p25) / median (0 for a single run)."""
        return (self.p75 - self.p25) / self.median if self.median else 0.0

    def scaled(self, factor: float) -> Summary:
        """The same summary with every value multiplied by ``factor`` (e.g. per server)."""
        return Summary(
            self.median * factor,
            self.p25 * factor,
            self.p75 * factor,
            self.min * factor,
            self.max * factor,
            self.runs,
        )

    def to_dict(self) -> dict[str, float | int]:
        """JSON form, rounded to 6 significant digits."""
        out: dict[str, float | int] = {k: _round(v) for k, v in asdict(self).items() if k != "runs"}
        out["runs"] = self.runs
        out["spread"] = _round(self.spread)
        return out


def _round(value: float, digits: int = 6) -> float:
    if not math.isfinite(value) or value == 0:
        return value
    return round(value, digits - 1 - math.floor(math.log10(abs(value))))


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile of an already sorted, non-empty sequence."""
    pos = (len(sorted_values) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def summarize(values: Sequence[float]) -> Summary:
    """Median, quartiles, min and max of ``values``; raises ValueError when empty or non-finite."""
    data = sorted(float(v) for v in values)
    if not data:
        raise ValueError("Expected at least one measurement, but got none.")
    if not all(math.isfinite(v) for v in data):
        raise ValueError(f"Expected finite measurements, but got {data}.")
    return Summary(
        median=statistics.median(data),
        p25=_quantile(data, 0.25),
        p75=_quantile(data, 0.75),
        min=data[0],
        max=data[-1],
        runs=len(data),
    )


def ratio(slow: Summary, fast: Summary) -> float:
    """How many times faster ``fast`` is than ``slow``: median(slow) / median(fast)."""
    if fast.median <= 0:
        return math.inf
    return slow.median / fast.median


def time_calls(
    func: Callable[[], Any],
    repeats: int,
    *,
    warmup: int = 1,
    budget_s: float | None = None,
) -> list[float]:
    """Wall milliseconds of ``repeats`` calls of ``func`` after ``warmup`` untimed calls.

    With ``budget_s``, stops early once the timed calls have used that many seconds (at least
    one timed call always runs), so a slow baseline cannot blow the suite's time bound; a
    warm-up call that alone takes longer than ``budget_s`` is returned as the only
    measurement (a call that slow is dominated by its work, not by first-call costs).
    """
    for _ in range(max(warmup, 0)):
        began = time.perf_counter()
        func()
        took = time.perf_counter() - began
        if budget_s is not None and took > budget_s:
            return [took * 1000.0]
    out: list[float] = []
    spent = 0.0
    for _ in range(max(repeats, 1)):
        began = time.perf_counter()
        func()
        took = time.perf_counter() - began
        out.append(took * 1000.0)
        spent += took
        if budget_s is not None and spent >= budget_s:
            break
    return out


def time_interleaved(
    funcs: dict[str, Callable[[], Any]],
    repeats: int,
    *,
    warmup: int = 1,
    budget_s: float | None = None,
) -> dict[str, list[float]]:
    """:func:`time_calls` of several contenders, **interleaved**: round ``r`` times one call
    of each, in an order rotated every round, so a burst of load from other processes is
    shared by the contenders instead of landing on whichever was being timed; their ratio is
    then what it claims to be. ``budget_s`` bounds each contender's timed calls (one that
    uses it up drops out of the later rounds; at least one timed call each).
    """
    names = list(funcs)
    if not names:
        return {}
    out: dict[str, list[float]] = {name: [] for name in names}
    spent = dict.fromkeys(names, 0.0)
    done: set[str] = set()
    for name in names:
        for _ in range(max(warmup, 0)):
            began = time.perf_counter()
            funcs[name]()
            took = time.perf_counter() - began
            if budget_s is not None and took > budget_s:
                out[name].append(took * 1000.0)  # as time_calls: that slow, one call says it
                done.add(name)
                break
    for r in range(max(repeats, 1)):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            if name in done:
                continue
            began = time.perf_counter()
            funcs[name]()
            took = time.perf_counter() - began
            out[name].append(took * 1000.0)
            spent[name] += took
            if budget_s is not None and spent[name] >= budget_s:
                done.add(name)
        if len(done) == len(names):
            break
    return out


@dataclass(frozen=True)
class Target:
    """A number the suite holds fleetcast to."""

    name: str
    """Stable identifier, e.g. ``inference.per_server_ms@1000``."""
    description: str
    """What is measured, in words (goes into the docs table)."""
    limit: float
    """The bound."""
    kind: str = "max"
    """``max``: the measured value must be ≤ limit; ``min``: ≥ limit."""
    unit: str = ""
    """Unit of value and limit, e.g. ``ms``, ``×``, ``MB``."""
    quick_limit: float | None = None
    """The loose bound enforced in ``--quick`` mode (a regression guard for CI's small model
    and noisy machine); None: reported only in quick mode."""
    report_only: bool = False
    """Never fails the run (a figure to watch, e.g. accuracy of a briefly trained model)."""

    def __post_init__(self) -> None:
        if self.kind not in ("max", "min"):
            raise ValueError(f"Expected Target.kind 'max' or 'min', but got {self.kind!r}.")


@dataclass(frozen=True)
class TargetResult:
    """One target against its measured value."""

    target: Target
    value: float | None
    """Measured value; None = not measured in this run."""
    met: bool | None
    """True/False; None when not measured."""
    enforced: bool
    """Whether a miss fails the run (False: reported only)."""
    note: str = ""
    """Why not measured or not enforced, or what limits it."""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        t = self.target
        return {
            "name": t.name,
            "description": t.description,
            "limit": t.limit,
            "kind": t.kind,
            "unit": t.unit,
            "value": None if self.value is None else _round(self.value, 4),
            "met": self.met,
            "enforced": self.enforced,
            "limit_checked": self.extra.get("limit_checked", t.limit),
            "note": self.note,
        }


def check_target(
    target: Target,
    value: float | None,
    *,
    quick: bool = False,
    note: str = "",
    skipped: str | None = None,
) -> TargetResult:
    """Compare ``value`` with ``target``; in quick mode only ``target.quick`` ones are enforced.

    A target enforced in this mode whose value is missing or not finite (NaN outputs, a
    baseline that could not run, a benchmark that failed) is **missed**, with ``note``
    saying why: a run that could not measure a target has not shown that it meets it.
    ``skipped``: the benchmark did not apply here (e.g. no GPU) — reported, never failing.
    """
    limit = target.limit
    if quick and target.quick_limit is not None:
        limit = target.quick_limit
    enforced = not target.report_only and (not quick or target.quick_limit is not None)
    if skipped is not None:
        return TargetResult(target, None, None, False, f"skipped: {skipped}")
    if value is None or not math.isfinite(value):
        why = note or ("no value" if value is None else f"the value is {value}")
        if enforced:
            return TargetResult(target, None, False, True, f"not measured: {why}")
        return TargetResult(target, None, None, False, note or "not measured in this run")
    met = value <= limit if target.kind == "max" else value >= limit
    if not note:
        if target.report_only:
            note = "reported only"
        elif quick and target.quick_limit is not None:
            note = f"--quick checks the loose bound {limit:g}; --full checks the target"
        elif quick:
            note = "reported only in --quick mode"
    return TargetResult(target, float(value), met, enforced, note, {"limit_checked": limit})


def check_targets(
    targets: Sequence[Target],
    values: dict[str, float | None],
    *,
    quick: bool = False,
    notes: dict[str, str] | None = None,
    skipped: dict[str, str] | None = None,
) -> list[TargetResult]:
    """:func:`check_target` for each target, its value looked up by name (missing = None),
    with the benchmark's ``notes`` on targets it could not measure and the ``skipped`` ones."""
    notes = notes or {}
    skipped = skipped or {}
    return [
        check_target(
            t,
            values.get(t.name),
            quick=quick,
            note=notes.get(t.name, ""),
            skipped=skipped.get(t.name),
        )
        for t in targets
    ]
