"""Benchmark 3: the appliance end to end over HTTP on a local port.

The appliance runs as its own process (``fleetcast serve --model-dir DIR --port N``, default
settings except ``--rate-limit off``, ``--capacity`` the fleet plus 16 and a private state
folder; fsync stays on); the load
generator is the suite's process (Python: httpx with keep-alive, MessagePack bodies encoded
before the clock starts). Measured, for one fleet size:

- time to ready: process start → ``GET /health`` answers ``model_loaded: true``;
- ingest: samples/s accepted by ``POST /metrics`` while the buffers fill (E + 2 steps of
  the fleet, ``records_per_post`` samples per request, forecasts running meanwhile);
- step → forecast: from sending the samples that close a step to the new forecast set's
  frame on ``/ws/predictions`` (median of a few steps);
- ``GET /predictions/current`` under an open-loop schedule of ``rate`` requests/s
  (latency counted from each request's *scheduled* start, so a stalled server cannot hide
  its backlog), p50/p99 and the rate achieved;
- with Debian's ``wrk`` installed (``apt-get install wrk``), the same URL paced by wrk on a
  fixed schedule of ``rate`` requests/s over 8 connections (this p99 is the one checked
  against the target: the Python client cannot read 1.3 MB bodies at 200/s on a small
  machine; it counts only when the rate held and no answer was an error, :func:`fleetbench.wrk.get_p99`)
  and closed-loop (4 connections): the throughput ceiling;
- RSS (VmRSS and peak VmHWM of the appliance process) at the end.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fleetbench.stats import Target, summarize
from fleetbench.wrk import get_p99, run_wrk

if TYPE_CHECKING:
    from fleetbench.fleet import Fleet

__all__ = ["TARGETS", "run_service"]

log = logging.getLogger("fleetbench")

TARGETS: tuple[Target, ...] = (
    Target("service.ingest_samples_per_s", "POST /metrics samples per second", 100_000, "min", "samples/s", quick_limit=10_000),
    Target("service.get_current_p99_ms", "GET /predictions/current p99 at 1,000 servers, 200 req/s", 10.0, "max", "ms"),
    Target("service.rss_mb", "appliance RSS at 1,000 servers (peak)", 400.0, "max", "MB"),
    Target("service.ready_s", "time to ready (process start → /health model_loaded)", 5.0, "max", "s", quick_limit=30.0),
)  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


CHECKOUT = Path(__file__).resolve().parents[2]


def appliance_command(env: Path | None = None) -> tuple[list[str], str]:
    """(the ``fleetcast`` command that runs the appliance, which environment it is).

    ``env``: a virtual environment's folder. Default: the checkout's ``.venv-appliance``
    (``make setup-appliance``: the appliance alone, as an edge box installs it) when it has
    ``bin/fleetcast``, else the suite's own interpreter's environment — which also holds
    the trainer's packages: Numba then imports SciPy, and the appliance's RSS is ~50 MB
    higher than on an edge box.
    """
    if env is not None:
        exe = env / "bin" / "fleetcast"
        if not exe.is_file():
            raise FileNotFoundError(
                f"--appliance-env {env} has no bin/fleetcast. Fix: pass a virtual environment "
                "with fleetcast-appliance installed (make setup-appliance makes "
                ".venv-appliance). See docs/BENCHMARKS.md#running-it."
            )
        return [str(exe)], str(env)
    edge = CHECKOUT / ".venv-appliance"
    if (edge / "bin" / "fleetcast").is_file():
        return [str(edge / "bin" / "fleetcast")], ".venv-appliance (the appliance alone)"
    exe = shutil.which("fleetcast", path=str(Path(sys.executable).parent)) or shutil.which(
        "fleetcast"
    )
    own = "the suite's environment (with the trainer's packages)"
    return ([exe] if exe else [sys.executable, "-m", "fleetcast.contract.cli"]), own


def _rss_mb(pid: int) -> dict[str, float]:
    out: dict[str, float] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return out


def _bodies(fleet: Fleet, per_post_steps: int) -> list[tuple[int, bytes]]:
    """MessagePack POST bodies, ``per_post_steps`` steps of the whole fleet each; (samples, body)."""
    import msgspec

    from fleetcast.contract.schema import METRIC_COLUMNS, VALID_STATES

    enc = msgspec.msgpack.Encoder()
    out = []
    steps = fleet.timestamps.shape[0]
    for lo in range(0, steps, per_post_steps):
        records = []
        for k in range(lo, min(lo + per_post_steps, steps)):
            ts = int(fleet.timestamps[k])
            vals = fleet.metrics[k].astype(np.float64).tolist()
            states = fleet.states[k].tolist()
            for i, name in enumerate(fleet.names):
                rec = {"timestamp": ts, "server_name": name, "state": VALID_STATES[states[i]]}
                for j, col in enumerate(METRIC_COLUMNS):
                    rec[col] = round(vals[i][j], 4)
                records.append(rec)
        out.append((len(records), enc.encode({"records": records})))
    return out


async def _get_load(url: str, rate: float, seconds: float, concurrency: int = 32) -> dict[str, Any]:
    """Open-loop GETs at ``rate``/s for ``seconds``; latency from each scheduled start (ms)."""
    import httpx

    n = max(int(rate * seconds), 1)
    latencies: list[float] = []
    errors = 0
    sizes: list[int] = []
    sem = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=30.0, limits=limits) as client:
        await client.get(url)  # warm connection and any cache
        began = time.perf_counter()

        async def one(i: int) -> None:
            nonlocal errors
            scheduled = began + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            async with sem:
                r = await client.get(url)
            if r.status_code != 200:
                errors += 1
            sizes.append(len(r.content))
            latencies.append((time.perf_counter() - scheduled) * 1000.0)

        await asyncio.gather(*(one(i) for i in range(n)))
        took = time.perf_counter() - began
    arr = np.asarray(latencies)
    return {
        "requests": n,
        "errors": errors,
        "rate_asked": rate,
        "rate_achieved": round(n / took, 1),
        "p50_ms": round(float(np.percentile(arr, 50)), 3),
        "p90_ms": round(float(np.percentile(arr, 90)), 3),
        "p99_ms": round(float(np.percentile(arr, 99)), 3),
        "max_ms": round(float(arr.max()), 3),
        "body_bytes": int(np.median(sizes)) if sizes else 0,
    }


def _wait_ready(
    base: str, proc: subprocess.Popen[bytes], began: float, limit_s: float, log_path: Path
) -> float:
    import httpx

    while time.perf_counter() - began < limit_s:
        if proc.poll() is not None:
            tail = " | ".join(log_path.read_text(errors="replace").splitlines()[-3:])
            raise RuntimeError(
                f"The appliance exited with code {proc.returncode} before it was ready: {tail}"
            )
        try:
            r = httpx.get(base + "/health", timeout=1.0)
            if r.status_code == 200 and r.json().get("model_loaded"):
                return time.perf_counter() - began
        except httpx.HTTPError:
            pass
        time.sleep(0.02)
    raise TimeoutError(f"The appliance was not ready within {limit_s:.0f} s.")


def _wait_idle(base: str, timeout_s: float) -> None:
    """Wait until the appliance's forecast runs stop advancing (no run in flight)."""
    import httpx

    last = None
    stable_since = time.perf_counter()
    end = time.perf_counter() + timeout_s
    while time.perf_counter() < end:
        runs = httpx.get(base + "/status", timeout=10.0).json().get("forecast_runs")
        if runs != last:
            last, stable_since = runs, time.perf_counter()
        elif time.perf_counter() - stable_since > 1.0:
            return
        time.sleep(0.2)


def _step_to_forecast(base: str, ws_url: str, bodies: list[bytes], timeout_s: float) -> list[float]:
    """Seconds from sending each body (which closes a step) to the next WebSocket frame."""
    import httpx
    from websockets.sync.client import connect

    out = []
    with connect(ws_url, max_size=None, open_timeout=10) as ws, httpx.Client(timeout=60.0) as http:
        try:
            ws.recv(timeout=2.0)  # the current set on connect
        except TimeoutError:
            pass
        for body in bodies:
            _wait_idle(base, timeout_s)
            while True:  # drain frames of earlier runs
                try:
                    ws.recv(timeout=0.05)
                except TimeoutError:
                    break
            began = time.perf_counter()
            r = http.post(
                base + "/metrics", content=body, headers={"Content-Type": "application/msgpack"}
            )
            r.raise_for_status()
            ws.recv(timeout=timeout_s)
            out.append(time.perf_counter() - began)
    return out


def run_service(
    model_dir: Path,
    fleet: Fleet,
    *,
    history_steps: int,
    get_seconds: float,
    rate: float = 200.0,
    ws_steps: int = 3,
    ready_limit_s: float = 120.0,
    forecast_timeout_s: float = 120.0,
    ceilings: bool = True,
    appliance_env: Path | None = None,
) -> dict[str, Any]:
    """Start the appliance, drive it, stop it; returns the figures and target values.

    ``appliance_env``: see :func:`appliance_command`.

    ``ceilings``: also measure the client's floor (``GET /health``) and wrk's closed-loop
    throughput (a few seconds more).

    ``fleet`` must hold at least ``history_steps + 2 + ws_steps`` steps.
    """
    import httpx

    n = fleet.n
    fill_steps = fleet.timestamps.shape[0] - ws_steps
    if fill_steps < history_steps + 2:
        raise ValueError(
            f"Expected at least {history_steps + 2 + ws_steps} steps, got {fleet.timestamps.shape[0]}."
        )
    per_post_steps = max(1, 10_000 // n)
    fill = fleet.steps(None, fill_steps)
    rest = fleet.steps(fill_steps, None)
    fill_bodies = _bodies(fill, per_post_steps)
    step_bodies = [b for _, b in _bodies(rest, 1)]
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="fleetbench-serve-") as state:
        log_path = Path(state) / "serve.log"
        exe, env_label = appliance_command(appliance_env)
        cmd = [
            *exe,
            "serve",
            "--model-dir", str(model_dir),
            "--host", "127.0.0.1",
            "--port", str(port),
            "--state-dir", str(Path(state) / "state"),
            "--rate-limit", "off",
            "--capacity", str(n + 16),
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETCAST_")}
        with log_path.open("wb") as log_file:
            began = time.perf_counter()
            proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env)
            try:
                ready_s = _wait_ready(base, proc, began, ready_limit_s, log_path)
                log.info("service: ready in %.2f s; filling %d servers", ready_s, n)
                rss_ready = _rss_mb(proc.pid)
                accepted = 0
                samples = 0
                per_post: list[float] = []  # samples/s of each request
                with httpx.Client(timeout=120.0) as http:
                    t0 = time.perf_counter()
                    for count, body in fill_bodies:
                        t1 = time.perf_counter()
                        r = http.post(
                            base + "/metrics",
                            content=body,
                            headers={"Content-Type": "application/msgpack"},
                        )
                        took = int(r.json().get("accepted", 0))
                        per_post.append(took / max(time.perf_counter() - t1, 1e-9))
                        accepted += took
                        samples += count
                    ingest_s = time.perf_counter() - t0
                log.info("service: ingested %d samples in %.2f s", accepted, ingest_s)
                rss_filled = _rss_mb(proc.pid)
                step_s = _step_to_forecast(
                    base, base.replace("http", "ws") + "/ws/predictions", step_bodies,
                    forecast_timeout_s,
                )  # fmt: skip
                _wait_idle(base, forecast_timeout_s)
                rss_forecast = _rss_mb(proc.pid)
                current = httpx.get(base + "/predictions/current", timeout=30.0)
                served = len(current.json().get("servers", [])) if current.status_code == 200 else 0
                log.info(
                    "service: GET /predictions/current at %.0f/s for %.0f s", rate, get_seconds
                )
                gets = asyncio.run(_get_load(base + "/predictions/current", rate, get_seconds))
                wrk_paced = run_wrk(
                    base + "/predictions/current", get_seconds, connections=8, rate=rate
                )
                floor = wrk = None
                if ceilings:  # the client's own floor and the server's closed-loop ceiling
                    floor = asyncio.run(_get_load(base + "/health", rate, min(get_seconds, 3.0)))
                    wrk = run_wrk(base + "/predictions/current", min(get_seconds, 5.0))
                status = httpx.get(base + "/status", timeout=10.0).json()
                rss = _rss_mb(proc.pid)
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        tail = log_path.read_text(errors="replace").splitlines()[-5:]
    ingest_rate = accepted / ingest_s if ingest_s > 0 else 0.0
    step = summarize([s * 1000.0 for s in step_s])
    result = {
        "servers": n,
        "command": " ".join(cmd[1:]).replace(str(model_dir), "MODEL_DIR"),
        "appliance_env": env_label,
        "ready_s": round(ready_s, 3),
        "ingest": {
            "samples": samples,
            "accepted": accepted,
            "seconds": round(ingest_s, 3),
            "samples_per_s": round(ingest_rate),
            "per_request_samples_per_s": summarize(per_post).to_dict() if per_post else None,
            "records_per_post": per_post_steps * n,
            "fsync": True,
        },
        "step_to_forecast_ms": step.to_dict(),
        "servers_in_forecast": served,
        "get_current": gets,
        "get_health": floor,
        "wrk_get_current": wrk,
        "wrk_get_current_paced": wrk_paced,
        "rss_mb": {
            "ready": rss_ready,
            "filled": rss_filled,
            "forecast": rss_forecast,
            "end": rss,
        },
        "appliance_inference_latency_ms": status.get("inference_latency_ms"),
        "log_tail": tail,
    }
    peak = rss.get("VmHWM", rss.get("VmRSS"))
    p99, p99_note = get_p99(wrk_paced, gets, rate)
    result["target_values"] = {
        "service.ingest_samples_per_s": ingest_rate,
        "service.get_current_p99_ms": p99 if n >= 1000 else None,
        "service.rss_mb": peak if n >= 1000 else None,
        "service.ready_s": ready_s,
    }
    result["target_notes"] = {"service.get_current_p99_ms": p99_note} if p99_note else {}
    return json.loads(json.dumps(result))
