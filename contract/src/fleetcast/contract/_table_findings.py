"""Turn a finished :class:`~fleetcast.contract._table_checks.BatchScan` into issues.

Duplicate rows and missing steps come from one in-place sort of the scan's uint64 keys
(server code << 32 | step index + 2**31): equal neighbours are duplicates; within one
server, the span from its first to its last step minus its distinct steps is the number
of missing steps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from fleetcast.contract._batches import format_time
from fleetcast.contract._table_checks import close_matches
from fleetcast.contract.issues import MAX_EXAMPLES, Issue, plural
from fleetcast.contract.schema import (
    METRIC_COLUMNS,
    METRIC_RANGES,
    METRIC_UNITS,
    STEP_SECONDS,
    VALID_PROFILES,
    VALID_STATES,
)

if TYPE_CHECKING:
    from fleetcast.contract._table_checks import BatchScan

__all__ = ["findings"]

_STEP_OFFSET = 2**31
_LOW = np.uint64(0xFFFFFFFF)
_NO_STEP = np.iinfo(np.int64).min
_CHUNK = 1 << 20
_NULL_FIX = {
    "timestamp": "Drop those rows or re-export them with their time; a row without a time "
    "cannot be placed in any window.",
    "server_name": "Drop those rows or re-export them with their host name.",
    "profile": "Fill it with fleetcast.contract.profile_from_name(server_name) or the "
    "server's known role.",
}


def findings(scan: BatchScan, strict: bool) -> list[Issue]:
    """All row-level issues of a scan, in contract order."""
    rows = scan.rows
    issues: list[Issue] = []
    for name, tally in scan.nulls.items():
        if tally.count:
            issues.append(
                Issue(
                    "null-values",
                    "error",
                    f"{_rows(tally.count)} a null {name} (of {rows:,} rows); only state may be null.",
                    "a null here cannot be encoded, and filling it silently would invent data.",
                    _NULL_FIX.get(
                        name,
                        f"Re-export the rows with a measured {name}, or drop them (the gap is "
                        "then reported as missing steps).",
                    ),
                    tally.count,
                    tuple(tally.examples),
                )
            )
    if scan.bad_names.count:
        issues.append(
            Issue(
                "server-names",
                "error",
                f"{_rows(scan.bad_names.count)} an empty or blank server_name.",
                "server_name identifies a server in every table, model and alert.",
                "Give every row the host name of its server.",
                scan.bad_names.count,
                tuple(scan.bad_names.examples),
            )
        )
    for name in METRIC_COLUMNS:
        tally = scan.nonfinite[name]
        if tally.count:
            issues.append(
                Issue(
                    "non-finite-values",
                    "error",
                    f"{_rows(tally.count)} a non-finite {name} (NaN, ±inf, or beyond float32's ±3.4e38).",
                    "one NaN in a window turns the whole forecast of that server into NaN.",
                    "Re-export the rows with measured values or drop them; do not fill with 0.",
                    tally.count,
                    tuple(tally.examples),
                )
            )
    for name in METRIC_COLUMNS:
        tally = scan.ranges[name]
        if tally.count:
            low, high = METRIC_RANGES[name]
            unit = METRIC_UNITS[name]
            issues.append(
                Issue(
                    "value-ranges",
                    "error",
                    f"{_rows(tally.count)} {name} outside [{low:g}, {high:g}] {unit}: "
                    f"got values from {tally.low:g} to {tally.high:g}.",
                    "an impossible value is a unit or collection error, and the model learns it "
                    "as real.",
                    _range_fix(name),
                    tally.count,
                    tuple(tally.examples),
                )
            )
    issues.extend(_likely_units(scan))
    for name, allowed in (("state", VALID_STATES), ("profile", VALID_PROFILES)):
        bad = scan.bad_values[name]
        if bad:
            issues.append(_category_issue(name, allowed, bad, scan.bad_rows[name]))
    if scan.unaligned.count:
        issues.append(
            Issue(
                "step-alignment",
                "error",
                f"{plural(scan.unaligned.count, 'timestamp')} "
                f"{'is' if scan.unaligned.count == 1 else 'are'} not on a {STEP_SECONDS}-second step "
                f"boundary (expected multiples of {STEP_SECONDS} s since 1970-01-01T00:00:00Z).",
                "every model length is a number of steps; an unaligned row falls between steps.",
                f"Bucket raw samples into {STEP_SECONDS}-second steps (floor the time, average the "
                "samples per server and step) before writing the table.",
                scan.unaligned.count,
                tuple(scan.unaligned.examples),
            )
        )
    tally = scan.out_of_range_times
    if tally.count:
        issues.append(
            Issue(
                "time-range",
                "error",
                f"{_rows(tally.count)} a timestamp outside 1970-01-01T00:00:00Z .. "
                f"9999-01-01T00:00:00Z: got times from {format_time(tally.low)} to "
                f"{format_time(tally.high)}.",
                "steps count from the Unix epoch and forecasts must be writable as ISO dates; "
                "the appliance refuses every sample at such times, so a model trained on them "
                "could never be served.",
                "Check the time unit (milliseconds read as seconds, microseconds as "
                "nanoseconds) and rows with a zero or placeholder time; fix or drop them.",
                tally.count,
                tuple(tally.examples),
            )
        )
    issues.extend(_profile_changes(scan))
    if scan.keyed and scan.n_keys:
        issues.extend(_duplicates_and_gaps(scan))
    return issues


def _rows(n: int) -> str:
    """``1 row has`` / ``2 rows have``: the subject of most messages."""
    return f"{plural(n, 'row')} {'has' if n == 1 else 'have'}"


_UNITS = {
    "cpu_pct": ("a 0-1 fraction instead of percent", 100, "the cpu thresholds (85-100 %)"),
    "mem_pct": ("a 0-1 fraction instead of percent", 100, "the memory thresholds (85-100 %)"),
    "latency_ms": ("seconds instead of milliseconds", 1000, "the latency thresholds"),
}
"""Metrics whose every value at most 1 is likely a unit error: (cause, factor, what it hides)."""


def _likely_units(scan: BatchScan) -> list[Issue]:
    """Warnings for metrics whose every finite value is in [0, 1] and not all 0, the value of
    a metric not measured (docs/DATA_CONTRACT.md#likely-units)."""
    issues = []
    for name, (cause, factor, hidden) in _UNITS.items():
        peak = scan.peak[name]
        if not 0.0 < peak <= 1.0 or scan.ranges[name].count:  # all 0: not measured
            continue
        unit = METRIC_UNITS[name]
        issues.append(
            Issue(
                "likely-units",
                "warning",
                f"every {name} is at most 1 {unit} (the largest is {peak:g}): {cause}?",
                f"the model would learn the values as {unit}, and {hidden} would never be "
                "reached, so no alert could fire.",
                f"Nothing, if these are {unit}; otherwise multiply {name} by {factor} "
                "before writing the table.",
                scan.rows,
                (),
            )
        )
    return issues


def _range_fix(name: str) -> str:
    if name in ("cpu_pct", "mem_pct"):
        return f"Express {name} in percent (0-100, not a 0-1 fraction) and clip rounding noise."
    if name == "disk_io_mb_s":
        return "Express disk IO in MB/s (not bytes/s or KB/s); rates are never negative."
    return "Express latency in milliseconds (not seconds or µs); a latency is never negative."


def _category_issue(name, allowed, bad, tally) -> Issue:
    shown = ", ".join(f"{v!r} ({plural(n, 'row')})" for v, n in bad.most_common(5))
    more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    hints = [
        f"{v!r} -> {m!r}" for v in list(bad)[:5] if (m := close_matches(v, allowed)) is not None
    ]
    hint = f" Likely meant: {', '.join(hints)}." if hints else ""
    if name == "state":
        why = "the model has one category per contract state; an unknown state cannot be encoded."
        fix = (
            "Map the source's states onto the 8 contract states, or write null when the "
            f"state is not known (null = unknown).{hint}"
        )
        rule = "valid-states"
    else:
        why = "profiles carry the transfer learning between servers of the same role."
        fix = (
            "Map the value onto one of the 7 profiles, or use "
            f"fleetcast.contract.profile_from_name(server_name) ('generic' as fallback).{hint}"
        )
        rule = "valid-profiles"
    return Issue(
        rule,
        "error",
        f"{_rows(tally.count)} a {name} outside the contract: {shown}{more}. "
        f"Expected one of {list(allowed)}{' or null' if name == 'state' else ''}.",
        why,
        fix,
        tally.count,
        tuple(tally.examples),
    )


def _profile_changes(scan: BatchScan) -> list[Issue]:
    by_server: dict[int, dict[int, int]] = {}
    for pair, count in scan.pairs.items():
        by_server.setdefault(pair >> 32, {})[pair & 0xFFFFFFFF] = count
    changing = {s: p for s, p in by_server.items() if len(p) > 1}
    if not changing:
        return []
    names = _inverse(scan.servers)
    profiles = _inverse(scan.profiles)
    examples = tuple(
        f"{names[s]!r}: "
        + ", ".join(
            f"{profiles[p]} ({plural(n, 'row')})"
            for p, n in sorted(ps.items(), key=lambda x: -x[1])
        )
        for s, ps in sorted(changing.items())[:MAX_EXAMPLES]
    )
    return [
        Issue(
            "stable-profile",
            "error",
            f"{plural(len(changing), 'server')} {'has' if len(changing) == 1 else 'have'} more than one profile.",
            "profile is a static feature: a server has one role for its whole history.",
            "Give each server a single profile (the most frequent one, or "
            "profile_from_name); if a host really changed role, give it a new name.",
            len(changing),
            examples,
        )
    ]


def _duplicates_and_gaps(scan: BatchScan) -> list[Issue]:
    keys = scan.keys[: scan.n_keys]
    keys.sort()
    names = _inverse(scan.servers)
    n_servers = len(names)
    first = np.full(n_servers, _NO_STEP, dtype=np.int64)
    last = np.full(n_servers, _NO_STEP, dtype=np.int64)
    distinct = np.zeros(n_servers, dtype=np.int64)
    n_dup = 0
    dup_pairs = 0
    dup_examples: list[str] = []
    previous: np.uint64 | None = None
    previous_same = False
    # Walk the sorted keys in slices so that temporaries stay a few MB whatever the size.
    for lo in range(0, keys.size, _CHUNK):
        chunk = keys[lo : lo + _CHUNK]
        same = np.empty(chunk.size, dtype=bool)
        same[0] = previous is not None and chunk[0] == previous
        np.equal(chunk[1:], chunk[:-1], out=same[1:])
        if same.any():
            n_dup += int(np.count_nonzero(same))
            repeated = chunk[same]
            # A pair is counted once, at its first repeat (the key before it differs).
            before = np.empty(chunk.size, dtype=bool)
            before[0] = not previous_same
            before[1:] = ~same[:-1]
            firsts = chunk[same & before]
            dup_pairs += firsts.size
            need = MAX_EXAMPLES - len(dup_examples)
            if need > 0:
                dup_examples.extend(
                    f"{names[int(k >> np.uint64(32))]!r} at {_key_time(k)}"
                    for k in (firsts if firsts.size else repeated)[:need]
                )
            unique = chunk[~same]
        else:
            unique = chunk
        previous, previous_same = chunk[-1], bool(same[-1])
        if unique.size == 0:
            continue
        server = (unique >> np.uint64(32)).astype(np.int64)
        step = (unique & _LOW).astype(np.int64) - _STEP_OFFSET
        distinct += np.bincount(server, minlength=n_servers)
        starts = np.flatnonzero(np.concatenate(([True], server[1:] != server[:-1])))
        ends = np.concatenate((starts[1:], [server.size])) - 1
        new = first[server[starts]] == _NO_STEP
        first[server[starts[new]]] = step[starts[new]]
        last[server[ends]] = step[ends]
    issues: list[Issue] = []
    if n_dup:
        issues.append(
            Issue(
                "duplicate-rows",
                "error",
                f"{plural(n_dup, 'row')} {'repeats' if n_dup == 1 else 'repeat'} a (server_name, timestamp) "
                f"pair already present ({plural(dup_pairs, 'distinct pair')} affected).",
                "one server has one value per step; duplicates double-count that step and "
                "make the window ambiguous.",
                "Deduplicate on (server_name, timestamp), keeping one row per step (for example "
                "the last one received), e.g. df.drop_duplicates(['server_name', 'timestamp'], "
                "keep='last').",
                n_dup,
                tuple(dup_examples),
            )
        )
    seen = distinct > 0
    span = np.where(seen, last - first + 1, 0)
    missing = span - distinct
    total = int(missing.sum())
    if total:
        worst = np.argsort(-missing, kind="stable")[:MAX_EXAMPLES]
        examples = [
            _gap_example(keys, int(w), names[w], int(missing[w]), int(span[w]))
            for w in worst
            if missing[w] > 0
        ]
        expected = int(span.sum())
        affected = int(np.count_nonzero(missing))
        issues.append(
            Issue(
                "missing-steps",
                "warning",
                f"{plural(total, 'step')} {'is' if total == 1 else 'are'} missing ({total / expected:.2%} of the {expected:,} steps "
                f"between each server's first and last row) on {affected:,} of "
                f"{int(np.count_nonzero(seen)):,} servers.",
                "windows that span a gap see fewer real steps; many gaps weaken training and "
                "make forecasts start from stale values.",
                "Nothing, if the gaps are real outages; otherwise re-export the missing periods. "
                "Offline servers should keep emitting rows with state 'offline' (dense mode).",
                total,
                tuple(examples),
            )
        )
    return issues


def _gap_example(keys: np.ndarray, server: int, name: str, missing: int, span: int) -> str:
    """Describe one server's gaps, finding its longest gap in its slice of the sorted keys."""
    lo = np.searchsorted(keys, np.uint64(server) << np.uint64(32))
    hi = np.searchsorted(keys, np.uint64(server + 1) << np.uint64(32))
    step = np.unique((keys[lo:hi] & _LOW).astype(np.int64) - _STEP_OFFSET)
    gaps = np.diff(step) - 1
    j = int(np.argmax(gaps))
    return (
        f"{name!r} misses {missing:,} of {span:,} steps, longest gap {plural(int(gaps[j]), 'step')} "
        f"after {format_time(float(step[j]) * STEP_SECONDS)}"
    )


def _key_time(key: np.uint64) -> str:
    step = int(key & np.uint64(0xFFFFFFFF)) - _STEP_OFFSET
    return format_time(float(step) * STEP_SECONDS)


def _inverse(index: dict[str, int]) -> list[str]:
    names = [""] * len(index)
    for name, code in index.items():
        names[code] = name
    return names
