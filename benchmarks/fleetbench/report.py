"""Markdown tables and SVG plots from a run's results (docs/BENCHMARKS.md's generated part).

The generated part sits between :data:`START` and :data:`END` in docs/BENCHMARKS.md; the
rest of that page (how to run, findings) is written by hand and left untouched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fleetbench.svg import grouped_bars

__all__ = ["END", "START", "markdown", "replace_block", "write_plots"]

START = "<!-- fleetbench:results:start -->"
END = "<!-- fleetbench:results:end -->"

_CONTENDERS = (
    "ort",
    "ort_warm",
    "ort_full",
    "torch_forward",
    "predict_dataloader",
    "predict_dataframe",
)
_LABELS = {
    "ort": "ONNX Runtime (appliance)",
    "ort_warm": "the same, back to back",
    "ort_full": "ONNX Runtime, full graph",
    "torch_forward": "PyTorch forward",
    "predict_dataloader": "predict(dataloader)",
    "predict_dataframe": "predict(dataframe)",
    "numba": "Numba (appliance)",
    "numpy": "numpy (build_inputs)",
    "pandas": "pandas",
}


def _spread(summary: dict[str, Any]) -> str:
    """The interquartile range around the median, in % of it: ``±4%`` when both sides round
    alike, else ``+15/−1%`` (three runs 1.04, 1.06, 1.37 are not "±8%")."""
    med, p25, p75 = summary.get("median"), summary.get("p25"), summary.get("p75")
    if not med or p25 is None or p75 is None:  # results written before p25/p75 were kept
        return f"±{50 * summary.get('spread', 0):.0f}%"
    up, down = round(100 * (p75 - med) / med), round(100 * (med - p25) / med)
    return f"±{up}%" if up == down else f"+{up}/−{down}%"


def _ms(summary: dict[str, Any] | None, digits: int = 3) -> str:
    if not summary:
        return "—"
    med = summary["median"]
    text = f"{med:.{digits}g}" if med < 10**digits else f"{med:,.0f}"
    if summary.get("runs", 1) > 1:
        text += f" {_spread(summary)}"
    return text


def _val(value: Any, unit: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        text = f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
    else:
        text = str(value)
    return f"{text} {unit}".strip()


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def _machine(res: dict[str, Any]) -> list[str]:
    m = res.get("machine", {})
    v = m.get("versions", {})
    lim = res.get("limits", {})
    suite = res.get("suite", {})
    return [
        f"Run: `{suite.get('command', '')}` ({suite.get('mode')} mode), "
        f"{suite.get('started_utc', '')}, {suite.get('seconds', 0):.0f} s.",
        "",
        f"Machine: {m.get('nproc')} CPU cores ({m.get('cpu_model')}), "
        f"{m.get('memory_gib')} GiB, {m.get('platform')}; Python {m.get('python')}, "
        + ", ".join(f"{k} {val}" for k, val in v.items())
        + f". Load average at start {m.get('load_average')}, at end "
        f"{res.get('load_average_end')} (≥ {m.get('nproc')} means the cores were shared: "
        "compare ratios, not absolute times).",
        "",
        f"Measured limits (numpy, best of runs at the start and the end): float32 matmul {lim.get('matmul_gflops')} "
        f"GFLOP/s ({lim.get('matmul_n')}²), skinny matmul [rows, 32]·[32, 32] "
        f"{lim.get('skinny_matmul_gflops')} GFLOP/s, memory copy {lim.get('memory_gb_s')} GB/s.",
        "",
    ]


def _targets(res: dict[str, Any]) -> list[str]:
    rows = []
    for t in res.get("targets", []):
        bound = ("≤ " if t["kind"] == "max" else "≥ ") + _val(t["limit"], t["unit"])
        met = {True: "met", False: "**missed**", None: "not measured"}[t["met"]]
        if t["met"] is False and not t["enforced"]:
            met = "missed (reported only)"
        rows.append([t["description"], bound, _val(t["value"], t["unit"]), met, t["note"]])
    return ["### Targets", "", *_table(["target", "bound", "measured", "", "note"], rows), ""]


def _inference(res: dict[str, Any]) -> list[str]:
    inf = res.get("inference") or {}
    if "rows" not in inf:
        return ["### 1. Inference", "", f"Not run: {inf.get('error', 'skipped')}", ""]
    shown = [
        c
        for c in _CONTENDERS
        if c not in ("ort_full", "ort_warm") or any(c in r["per_server_ms"] for r in inf["rows"])
    ]
    header = ["servers", *(_LABELS[c] for c in shown), "ORT speed-up vs predict()"]
    rows = []
    for row in inf["rows"]:
        per = row["per_server_ms"]
        sp = row.get("speedup_of_ort", {})
        preds = [sp[k] for k in ("predict_dataloader", "predict_dataframe") if k in sp]
        rows.append(
            [str(row["servers"]), *(_ms(per.get(c)) for c in shown),
             (f"{min(preds):.1f}×–{max(preds):.1f}×" if preds else row.get("note") or "—")]
        )  # fmt: skip
    ag = inf.get("agreement") or {}
    out = [
        "### 1. Inference (ms per server: median, and the interquartile range in % of it)",
        "",
        f"Model: E {inf.get('encoder_length')}, D {inf.get('prediction_length')}; "
        "full windows; inputs prepared beforehand (benchmark 2 times that)."
        + (
            " The appliance runs the step cache at steady state (one new encoder and one new "
            "decoder row per server and forecast; docs/MODEL_FORMAT.md#step-cache); the full "
            "graph is what it runs with `--no-step-cache`."
            if "ort_full" in shown
            else ""
        )
        + (
            " Every column is timed interleaved (one call of each contender per round); "
            "'back to back' is the appliance's path timed alone in a tight loop, with its "
            "caches and threads warm from its own previous call — the way it was timed "
            "before, and not how an appliance that forecasts once per step runs."
            if "ort_warm" in shown
            else ""
        ),
        "",
        *_table(header, rows),
        "",
    ]
    if ag:
        out += [
            f"ONNX Runtime on the numpy reference inputs vs `predict()` on pytorch-forecasting's "
            f"own dataloader, {ag['servers']} servers: max abs {ag['max_abs']:.2e}, max rel "
            f"{ag['max_rel']:.2e} per element, {ag.get('max_rel_range', float('nan')):.2e} of "
            "each target's range (real units; element-wise errors near zero are float32 "
            "cancellation, see docs/EXPORT.md#parity).",
            "",
        ]
    return out


def _windows(res: dict[str, Any]) -> list[str]:
    w = res.get("windows") or {}
    if "rows" not in w:
        return ["### 2. Feature windows", "", f"Not run: {w.get('error', 'skipped')}", ""]
    rows = []
    for row in w["rows"]:
        ms = row["ms"]
        sp = row["speedup_of_numba"]
        d = row["max_abs_diff_vs_numpy"]
        rows.append(
            [str(row["servers"]), _ms(ms["numba"]), _ms(ms["numpy"]), _ms(ms["pandas"]),
             f"{sp['numpy']:.1f}× / {sp['pandas']:.1f}×", f"{d['numba']:.1e} / {d['pandas']:.1e}"]
        )  # fmt: skip
    return [
        "### 2. Feature windows (ms for the whole fleet)",
        "",
        *_table(
            [
                "servers",
                "Numba (appliance)",
                "numpy (build_inputs)",
                "pandas",
                "Numba speed-up vs numpy / pandas",
                "max abs diff vs numpy (Numba / pandas)",
            ],
            rows,
        ),
        "",
    ]


def _num(v: float | None) -> str:
    """A figure for the table: thousands grouped, small ones to 4 significant digits."""
    if v is None:
        return "—"
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"


def _repeats(s: dict[str, Any]) -> list[list[str]]:
    """Rows of the figures' medians over the service runs (none for a single run)."""
    from fleetbench.service_repeat import FIGURES

    rep = s.get("repeats") or {}
    rows = []
    for name, label in FIGURES.items():
        r = rep.get(name)
        if not r:
            continue
        runs = ", ".join(_num(v) for v in r["runs"])
        if "median" in r:
            text = f"median {_num(r['median'])} {_spread(r)} (runs: {runs})"
        else:
            text = f"not counted in every run (runs: {runs})"
        rows.append([f"{label}, over {s.get('runs')} fresh appliances", text])
    return rows


def _service(res: dict[str, Any]) -> list[str]:
    s = res.get("service") or {}
    if "servers" not in s:
        return ["### 3. Appliance over HTTP", "", f"Not run: {s.get('error', 'skipped')}", ""]
    g = s["get_current"]
    ing = s["ingest"]
    rss = s["rss_mb"]["end"]
    step = s["step_to_forecast_ms"]
    base = s.get("get_health") or {}
    rows = [
        ["time to ready", f"{s['ready_s']:.2f} s"],
        ["ingest (POST /metrics, MessagePack, fsync on)",
         f"{ing['samples_per_s']:,} samples/s ({ing['records_per_post']:,} records per request"
         + (f"; per request: median {ing['per_request_samples_per_s']['median']:,.0f} "
            f"{_spread(ing['per_request_samples_per_s'])} over "
            f"{ing['per_request_samples_per_s']['runs']}" if ing.get("per_request_samples_per_s") else "")
         + ")"],
        ["step → forecast on the WebSocket", f"{_ms(step)} ms (the last forecast's inference {(s.get('appliance_inference_latency_ms') or {}).get('last', '—')} ms)"],
        [f"GET /predictions/current at {g['rate_asked']:.0f} req/s ({g['body_bytes'] / 1e6:.2f} MB body)",
         f"p50 {g['p50_ms']:.1f} ms, p99 {g['p99_ms']:.1f} ms, achieved {g['rate_achieved']:.0f} req/s, {g['errors']} errors"],
    ]  # fmt: skip
    if base:
        rows.append(
            [f"client floor: GET /health at {base['rate_asked']:.0f} req/s",
             f"p50 {base['p50_ms']:.1f} ms, p99 {base['p99_ms']:.1f} ms"]
        )  # fmt: skip
    paced = s.get("wrk_get_current_paced")
    if paced:
        rows.append(
            [f"wrk paced at {paced.get('paced_rate'):.0f} req/s, {paced.get('connections')} "
             "connections: GET /predictions/current (checked against the target)",
             f"{paced.get('requests_per_s', 0):.0f} req/s, p50 {paced.get('p50_ms', '—')} ms, "
             f"p99 {paced.get('p99_ms', '—')} ms, "
             f"{paced.get('non_2xx', 0) + paced.get('socket_errors', 0):g} errors"]
        )  # fmt: skip
    wrk = s.get("wrk_get_current")
    if wrk:
        rows.append(
            [f"wrk, closed loop, {wrk.get('connections')} connections: GET /predictions/current",
             f"{wrk.get('requests_per_s', 0):.0f} req/s, p50 {wrk.get('p50_ms', '—')} ms, "
             f"p99 {wrk.get('p99_ms', '—')} ms"]
        )  # fmt: skip
    rows.append(["RSS at the end (peak)", f"{rss.get('VmRSS')} MB ({rss.get('VmHWM')} MB)"])
    rows += _repeats(s)
    return [
        f"### 3. Appliance over HTTP ({s['servers']:,} servers)",
        "",
        f"`fleetcast {s['command']}` from {s.get('appliance_env', 'the suite’s environment')}; "
        "load generator: the suite's process (httpx).",
        "",
        *_table(["what", "measured"], rows),
        "",
    ]


def _opt(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"


def _accuracy(res: dict[str, Any]) -> list[str]:
    a = res.get("accuracy") or {}
    if not a.get("rows"):
        return ["### 4. Accuracy", "", a.get("note") or a.get("error") or "not measured", ""]
    blind = any(r.get("tft_state_unknown_mae") is not None for r in a["rows"])
    rows = [
        [r["target"], r["horizon"], f"{r['tft_mae']:.4g}",
         *([_opt(r.get("tft_state_unknown_mae"))] if blind else []),
         f"{r['best_baseline']} {r['best_baseline_mae']:.4g}",
         _opt(r["tft_mase"]), f"{r['coverage_p10_p90']:.2f}", "yes" if r["goal_met"] else "no"]
        for r in a["rows"]
    ]  # fmt: skip
    return [
        f"### 4. Accuracy ({a['windows']} held-out windows of {a['servers']} servers)",
        "",
        *_table(
            [
                "target",
                "horizon",
                "TFT p50 MAE",
                *(["TFT, states null"] if blind else []),
                "best baseline (MAE)",
                "TFT MASE",
                "p10–p90 coverage",
                "goal met",
            ],
            rows,
        ),
        "",
    ]


def _roofline(res: dict[str, Any]) -> list[str]:
    r = res.get("roofline") or {}
    cost = r.get("cost")
    if not cost:
        return []
    at = r.get("at") or {}
    shares = r.get("shares") or {}
    out = [
        "### Distance to the machine's limits",
        "",
        f"{cost['parameters']:,} parameters; {cost['flops_per_server'] / 1e6:.1f} MFLOP per server "
        f"({cost['matmul_flops_per_server'] / 1e6:.1f} matmul/attention + "
        f"{cost['lstm_flops_per_server'] / 1e6:.1f} LSTM); {cost['bytes_per_server'] / 1e6:.1f} MB "
        f"read + written per server by {cost['aten_ops_per_forward']} unfused ATen ops.",
        "",
    ]
    by_module = cost.get("matmul_flops_per_server_by_module") or {}
    if by_module:
        parts = ", ".join(f"{k} {v / 1e6:.2f}" for k, v in list(by_module.items())[:8])
        out += [f"Matmul/attention MFLOP per server by module: {parts}.", ""]
    if at:
        out += [
            f"At the measured {at['ms_per_server']:.3g} ms/server (ONNX Runtime"
            f"{', the full graph' if r.get('timed') == 'ort_full' else ''}, "
            f"{r.get('at_servers')} servers): {at['achieved_gflops']} GFLOP/s = "
            f"{100 * at['fraction_of_matmul']:.1f} % of the matmul peak "
            f"({100 * at['fraction_of_skinny_matmul']:.1f} % of the skinny-matmul rate) and "
            f"{at['achieved_gb_s']} GB/s = {100 * at['fraction_of_bandwidth']:.1f} % of the memory "
            f"bandwidth. Floors: {at['floor_ms_per_server_compute']:.3f} ms/server if every FLOP "
            f"ran at the matmul peak, {at['floor_ms_per_server_memory']:.3f} ms/server if the "
            "unfused traffic ran at full bandwidth.",
            "",
        ]
    out += _step_cache_roofline(res, r)
    if shares:
        total = shares.get("(total forward ms)")
        parts = ", ".join(
            f"{k} {100 * v:.0f} %" for k, v in shares.items() if not k.startswith("(") and v >= 0.02
        )
        out += [f"PyTorch forward time by module ({total} ms for the batch): {parts}.", ""]
    return out


def _step_cache_roofline(res: dict[str, Any], r: dict[str, Any]) -> list[str]:
    """The step cache's steady state against the limits, when the run timed it."""
    from fleetbench.roofline import step_cache_roofline

    inference = res.get("inference") or {}
    row = next(
        (x for x in inference.get("rows") or [] if x["servers"] == r.get("at_servers")), None
    )
    if r.get("timed") != "ort_full" or row is None or "ort" not in row["per_server_ms"]:
        return []
    c = step_cache_roofline(
        r["cost"], res["limits"], row["per_server_ms"]["ort"]["median"],
        inference["encoder_length"], inference["prediction_length"],
    )  # fmt: skip
    return [
        f"The step cache at steady state computes {c['flops_per_server'] / 1e6:.1f} MFLOP per "
        "server (the LSTMs, enrichment, attention and output in full, the variable selection "
        f"of one encoder and one decoder row): at its {c['ms_per_server']:.3g} ms/server, "
        f"{c['achieved_gflops']} GFLOP/s = {100 * c['fraction_of_matmul']:.1f} % of the matmul "
        f"peak ({100 * c['fraction_of_skinny_matmul']:.1f} % of the skinny-matmul rate); "
        f"{c['floor_ms_per_server_compute']:.3f} ms/server if every FLOP ran at the matmul peak.",
        "",
    ]


def _speed(res: dict[str, Any]) -> list[str]:
    out: list[str] = []
    shapes = res.get("shapes") or []
    if shapes:
        rows = [
            [s["shape"], _val(s.get("parameters")), f"{s['onnx_kib']}", _ms(s["ms_per_server"]),
             _ms(s["ms_single"]), _val(s["accuracy"].get("mean_mase")),
             _val(s["accuracy"].get("mean_mae_vs_best_baseline")),
             s["accuracy"].get("goal_cells_met", "—"), _val(s.get("parity_max_rel"))]
            for s in shapes
        ]  # fmt: skip
        out += [
            f"### Model shape: latency beside accuracy (batch {shapes[0]['batch']}; each shape "
            "trained briefly on the same data)",
            "",
            *_table(
                [
                    "shape",
                    "parameters",
                    "ONNX KiB",
                    "ms/server",
                    "single server ms",
                    "mean TFT MASE",
                    "TFT MAE / best baseline",
                    "goal cells",
                    "parity max rel",
                ],
                rows,
            ),
            "",
        ]
    options = res.get("options") or []
    if options:
        rows = [[o["config"], _ms(o["ms_per_server"])] for o in options]
        out += [
            f"### ONNX Runtime session options (batch {options[0]['batch']}, ms/server)",
            "",
            *_table(["configuration", "ms/server"], rows),
            "",
        ]
    chunks = res.get("chunking") or []
    if chunks:
        rows = [[str(c["chunk"]), _ms(c["ms_per_server"]), _val(c.get("peak_rss_mb"), "MB")]
                for c in chunks]  # fmt: skip
        out += [
            f"### Chunking {chunks[0]['servers']} servers (each chunk size in a fresh process)",
            "",
            *_table(["chunk", "ms/server", "peak RSS of the process"], rows),
            "",
        ]
    return out


def markdown(res: dict[str, Any]) -> str:
    """The generated Markdown of one run."""
    gpu = res.get("gpu") or {}
    lines = [*_machine(res), *_targets(res), *_inference(res), *_windows(res), *_service(res),
             *_accuracy(res), *_roofline(res), *_speed(res)]  # fmt: skip
    if gpu:
        lines += [
            "### 5. GPU",
            "",
            gpu.get("reason", "see the JSON results") if gpu.get("skipped") else
            f"gpu_check.py exit code {gpu.get('returncode')}; see the JSON results.",
            "",
        ]  # fmt: skip
    plots = res.get("plots") or []
    for p in plots:
        lines += [f"![{Path(p).stem}]({p})", ""]
    return "\n".join(lines).rstrip() + "\n"


def replace_block(doc: str, generated: str) -> str:
    """``doc`` with the text between START and END replaced (appended when absent)."""
    block = f"{START}\n{generated}{END}"
    if START in doc and END in doc:
        head, rest = doc.split(START, 1)
        _, tail = rest.split(END, 1)
        return head + block + tail
    return doc.rstrip() + "\n\n" + block + "\n"


def write_plots(res: dict[str, Any], img_dir: Path, prefix: str = "bench") -> list[Path]:
    """SVG plots of inference and windows; returns the written paths."""
    img_dir.mkdir(parents=True, exist_ok=True)
    written = []
    inf = res.get("inference") or {}
    if inf.get("rows"):
        groups = [f"{r['servers']:,} servers" for r in inf["rows"]]
        series = {
            _LABELS[c]: [(r["per_server_ms"].get(c) or {}).get("median") for r in inf["rows"]]
            for c in _CONTENDERS
        }
        path = img_dir / f"{prefix}_inference.svg"
        path.write_text(
            grouped_bars(
                "Inference per server (median)",
                groups,
                series,
                unit="ms per server",
                reference=(0.25, "target 0.25 ms at 1,000"),
            )
        )
        written.append(path)
    w = res.get("windows") or {}
    if w.get("rows"):
        groups = [f"{r['servers']:,} servers" for r in w["rows"]]
        series = {
            _LABELS[c]: [r["ms"][c]["median"] for r in w["rows"]]
            for c in ("numba", "numpy", "pandas")
        }
        path = img_dir / f"{prefix}_windows.svg"
        path.write_text(
            grouped_bars("Feature windows for the whole fleet (median)", groups, series, unit="ms")
        )
        written.append(path)
    return written
