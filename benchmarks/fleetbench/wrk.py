"""wrk, the load generator of benchmark 3: its pacing script, its output, and when its p99
counts (:func:`get_p99`).

Split from :mod:`fleetbench.service`, which runs the appliance and calls :func:`run_wrk`.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["PACE_LUA", "RATE_SHARE", "get_p99", "parse_wrk", "run_wrk"]


def _unit_ms(text: str) -> float:
    """wrk's durations (``812.00us``, ``1.20ms``, ``2.01s``) in milliseconds."""
    for suffix, factor in (("us", 1e-3), ("ms", 1.0), ("s", 1e3), ("m", 6e4)):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


def parse_wrk(output: str) -> dict[str, float]:
    """Requests/s and the latency percentiles from ``wrk --latency`` output."""
    out: dict[str, float] = {}
    in_dist = False
    for line in output.splitlines():
        words = line.split()
        if line.strip().startswith("Latency Distribution"):
            in_dist = True
            continue
        if in_dist and len(words) == 2 and words[0].endswith("%"):
            out[f"p{words[0].rstrip('%').split('.')[0]}_ms"] = round(_unit_ms(words[1]), 3)
            continue
        in_dist = False
        if line.startswith("Requests/sec:"):
            out["requests_per_s"] = float(words[1])
        elif "requests in" in line and words:
            out["requests"] = float(words[0])
        elif line.strip().startswith("Non-2xx"):
            out["non_2xx"] = float(words[-1])
        elif line.strip().startswith("Socket errors:"):
            # "Socket errors: connect 0, read 0, write 0, timeout 0"
            out["socket_errors"] = float(
                sum(int(w.rstrip(",")) for w in words[2:] if w.rstrip(",").isdigit())
            )
    return out


PACE_LUA = """-- fleetbench: requests on a fixed schedule of RATE per second (one wrk thread).
-- delay() is called before every request of every connection; each call takes the next
-- slot of the schedule and waits for it, so the rate holds while responses are faster
-- than CONNECTIONS / RATE, and slots missed meanwhile are sent as soon as a connection
-- frees (open loop up to CONNECTIONS in flight).
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } fleetbench_timespec;
int clock_gettime(int clk_id, fleetbench_timespec *tp);
]]
local ts = ffi.new("fleetbench_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts)  -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end
local interval = 1000.0 / RATE
local next_at = nil
function delay()
  local t = now_ms()
  if next_at == nil then next_at = t - interval end
  next_at = next_at + interval
  local d = next_at - t
  if d <= 0 then return 0 end
  return math.floor(d + 0.5)
end
"""
"""wrk's pacing script (``RATE`` is replaced). LuaJIT's FFI reads the monotonic clock: wrk's
Lua has no clock of its own."""


def run_wrk(
    url: str, seconds: float, *, connections: int = 4, rate: float | None = None
) -> dict[str, Any] | None:
    """wrk against ``url`` when installed: as fast as it goes, or paced at ``rate``/s.

    Pacing uses wrk's Lua ``delay()`` hook on a fixed schedule (:data:`PACE_LUA`): the
    connections share one timetable of ``rate`` requests/s, so a slow response does not
    slow the others and the rate holds — the latency is that of a server under ``rate``
    requests/s, without a Python client's own cost. The caller checks the rate achieved.
    """
    exe = shutil.which("wrk")
    if exe is None:
        return None
    cmd = [exe, "-t1", f"-c{connections}", f"-d{max(int(seconds), 1)}s", "--latency"]
    with tempfile.TemporaryDirectory() as tmp:
        if rate:
            script = Path(tmp) / "pace.lua"
            script.write_text(PACE_LUA.replace("RATE", f"{float(rate):.3f}"))
            cmd += ["-s", str(script)]
        proc = subprocess.run(
            [*cmd, url], capture_output=True, text=True, timeout=seconds + 30, check=False
        )
    result: dict[str, Any] = parse_wrk(proc.stdout)
    result.update(connections=connections, paced_rate=rate)
    return result


RATE_SHARE = 0.95
"""A GET p99 counts only when the load held at least this share of the rate asked."""


def get_p99(
    wrk_paced: dict[str, Any] | None, gets: dict[str, Any], rate: float
) -> tuple[float | None, str]:
    """The GET p99 checked against the target, or None and why it does not count.

    wrk's paced run when wrk is installed, else the Python client's. A p99 measured while
    some answers were errors, or at less than :data:`RATE_SHARE` of ``rate`` (a load
    generator that fell behind measures a lighter load than the target's), is no
    measurement of the target.
    """
    if wrk_paced is not None and "p99_ms" in wrk_paced:
        p99 = float(wrk_paced["p99_ms"])
        achieved = float(wrk_paced.get("requests_per_s", 0.0))
        errors = wrk_paced.get("non_2xx", 0.0) + wrk_paced.get("socket_errors", 0.0)
        who = "wrk"
    else:
        p99 = float(gets["p99_ms"])
        achieved = float(gets["rate_achieved"])
        errors = gets["errors"]
        who = "the Python client"
    if errors:
        return None, f"{who}: {errors:g} answers were errors (p99 {p99:g} ms does not count)"
    if achieved < RATE_SHARE * rate:
        return None, (
            f"{who} achieved {achieved:g} req/s, under {RATE_SHARE:g} × {rate:g} "
            f"(p99 {p99:g} ms at that lighter load does not count)"
        )
    return p99, ""
