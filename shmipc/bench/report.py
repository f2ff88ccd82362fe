"""Turning results into an aligned text table, a JSON file and a plot."""
from __future__ import annotations

import json
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .harness import size_label
from .limits import LIMIT_LABELS

__all__ = ["format_report", "write_json", "write_plot", "PlotUnavailable"]

KiB = 1024
#: From this size on, SPSC cells show MB/s instead of messages/s.
BYTES_FROM = 64 * KiB


# ---- number formatting ---------------------------------------------------------
def fmt_count(x: float) -> str:
    """568k, 1.23M, 950."""
    if x >= 1e9:
        return f"{x / 1e9:.3g}G"
    if x >= 1e6:
        return f"{x / 1e6:.3g}M"
    if x >= 1e3:
        return f"{x / 1e3:.3g}k"
    return f"{x:.3g}"


def fmt_num(x: float) -> str:
    """3 significant digits, no exponent: 0.142, 15.8, 1829."""
    if x == 0:
        return "0"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    digits = max(0, 2 - int(math.floor(math.log10(abs(x)))))
    return f"{x:.{digits}f}"


def fmt_ratio(r: Optional[float]) -> str:
    if r is None:
        return ""
    if r < 0.1:
        return f"{r:.2g}×"
    return f"{r:.2f}×" if r < 10 else f"{r:.1f}×"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: Optional[str] = None) -> List[str]:
    """Aligned columns: first column left, the others right (unless align says)."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    align = align or ("<" + ">" * (len(headers) - 1))

    def line(cells: Sequence[str]) -> str:
        return "  ".join(f"{c:{a}{w}}" for c, a, w in zip(cells, align, widths)).rstrip()

    out = [line(headers), "  ".join("-" * w for w in widths)]
    out.extend(line(row) for row in rows)
    return out


class _Notes:
    """Footnotes for cells that are not numbers: FAILED, timed out, n/a."""

    def __init__(self) -> None:
        self.items: List[str] = []
        self._index: Dict[str, int] = {}

    def ref(self, text: str) -> str:
        if text not in self._index:
            self.items.append(text)
            self._index[text] = len(self.items)
        return f"[{self._index[text]}]"


def _status_cell(res: Dict[str, Any], notes: _Notes) -> str:
    status = res["status"]
    if status == "n/a":
        return "n/a"
    label = {"FAILED": "FAILED", "failed": "failed", "timed out": "timed out"}.get(status, status)
    return f"{label} {notes.ref(res['contestant'] + ': ' + status + ': ' + res['reason'])}"


def _index(results: Sequence[Dict[str, Any]]) -> Dict[Tuple[str, int, str], Dict[str, Any]]:
    return {(r["scenario"], r["size"], r["contestant"]): r for r in results}


def _names(data: Dict[str, Any], scenario: str) -> List[str]:
    seen = {r["contestant"] for r in data["results"] if r["scenario"] == scenario}
    return [c["name"] for c in data["contestants"] if c["name"] in seen]


def _value_cell(res: Dict[str, Any], scale: float, fmt, notes: _Notes, ratio: bool = True) -> str:
    if res.get("status") != "ok" or "median" not in res:
        return _status_cell(res, notes)
    med, lo, hi = res["median"] * scale, res["min"] * scale, res["max"] * scale
    text = fmt(med)
    if lo != hi:
        text += f" [{fmt(lo)}–{fmt(hi)}]"
    if ratio and "ratio_to_best_peer" in res:
        text += f" {fmt_ratio(res['ratio_to_best_peer'])}"
    return text


# ---- sections ---------------------------------------------------------------------
def _section_spsc(data: Dict[str, Any], notes: _Notes) -> List[str]:
    idx = _index(data["results"])
    sizes = sorted({r["size"] for r in data["results"] if r["scenario"] == "spsc"})
    if not sizes:
        return []
    headers = ["contestant"]
    for size in sizes:
        headers.append(f"{size_label(size)} {'MB/s' if size >= BYTES_FROM else 'msgs/s'}")
    rows = []
    for name in _names(data, "spsc"):
        row = [name]
        for size in sizes:
            res = idx.get(("spsc", size, name))
            if res is None:
                row.append("—")
            elif size >= BYTES_FROM:
                row.append(_value_cell(res, size / 1e6, fmt_num, notes))
            else:
                row.append(_value_cell(res, 1.0, fmt_count, notes))
        rows.append(row)
    limits = data.get("limits", {})
    if "ring_64_msgs" in limits:
        row = ["(limit) spinning C ring"]
        for size in sizes:
            if size == 64:
                row.append(fmt_count(limits["ring_64_msgs"]))
            elif size == 1 << 20:
                row.append(fmt_num(limits["ring_1mib_gbs"] * 1e3))
            elif size == 16 << 20:
                row.append(fmt_num(limits["ring_16mib_gbs"] * 1e3))
            else:
                row.append("")
        rows.append(row)
    return [
        "SPSC throughput, one producer and one consumer process "
        "(median [min–max] over runs; × = ratio to the best peer, > 1 is better)",
        *_table(headers, rows),
    ]


def _section_pingpong(data: Dict[str, Any], notes: _Notes) -> List[str]:
    idx = _index(data["results"])
    sizes = sorted({r["size"] for r in data["results"] if r["scenario"] == "pingpong"})
    out: List[str] = []
    for size in sizes:
        rows = []
        for name in _names(data, "pingpong"):
            res = idx.get(("pingpong", size, name))
            if res is None:
                continue
            if res["status"] != "ok" or "median" not in res:
                rows.append([name, _status_cell(res, notes), "", ""])
                continue
            rows.append(
                [
                    name,
                    _value_cell(res, 1.0, fmt_num, notes, ratio=False),
                    fmt_num(res["p99_us"]) if "p99_us" in res else "",
                    fmt_ratio(res.get("ratio_to_best_peer")),
                ]
            )
        limits = data.get("limits", {})
        for key in ("futex_rtt_us", "spin_rtt_us"):
            if key in limits:
                med, p99 = limits[key]
                rows.append([f"(limit) {LIMIT_LABELS[key][0].split(' (')[0]}", fmt_num(med), fmt_num(p99), ""])
        out += [
            "",
            f"Round trip, {size_label(size)} ping-pong between two processes, µs "
            "(median [min–max] of the runs' medians; p99; × vs best peer)",
            *_table(["contestant", "median µs", "p99 µs", "×"], rows),
        ]
    return out


def _section_mpmc(data: Dict[str, Any], notes: _Notes) -> List[str]:
    idx = _index(data["results"])
    cfg = data["config"]
    sizes = sorted({r["size"] for r in data["results"] if r["scenario"] == "mpmc"})
    out: List[str] = []
    for size in sizes:
        rows = []
        for name in _names(data, "mpmc"):
            res = idx.get(("mpmc", size, name))
            if res is None:
                continue
            if res["status"] != "ok" or "median" not in res:
                rows.append([name, _status_cell(res, notes), "", ""])
                continue
            rows.append(
                [
                    name,
                    _value_cell(res, 1.0, fmt_count, notes, ratio=False),
                    fmt_num(res["mb_per_s"]) if "mb_per_s" in res else "",
                    fmt_ratio(res.get("ratio_to_best_peer")),
                ]
            )
        out += [
            "",
            f"{cfg['mpmc_writers']}×{cfg['mpmc_readers']} producers × consumers, {size_label(size)} messages, "
            "total throughput (only contestants that support several producers and consumers)",
            *_table(["contestant", "msgs/s", "MB/s", "×"], rows),
        ]
    return out


def _section_frames(data: Dict[str, Any], notes: _Notes) -> List[str]:
    idx = _index(data["results"])
    sizes = sorted({r["size"] for r in data["results"] if r["scenario"] == "frames"})
    if not sizes:
        return []
    kinds = {c["name"]: c.get("frames") for c in data["contestants"]}
    headers = ["contestant", "path"]
    for size in sizes:
        headers += [f"{size_label(size)} µs/frame", "GB/s"]
    if len(sizes) > 1:
        headers.append(f"{size_label(sizes[-1])}/{size_label(sizes[0])} time")
    rows = []
    for name in _names(data, "frames"):
        row = [name, kinds.get(name) or ""]
        times: List[Optional[float]] = []
        for size in sizes:
            res = idx.get(("frames", size, name))
            if res is None:
                row += ["—", ""]
                times.append(None)
            elif res["status"] != "ok" or "median" not in res:
                row += [_status_cell(res, notes), ""]
                times.append(None)
            else:
                row += [_value_cell(res, 1.0, fmt_num, notes), fmt_num(res["gb_per_s"])]
                times.append(res["median"])
        if len(sizes) > 1:
            row.append(f"{times[-1] / times[0]:.2f}×" if times[0] and times[-1] else "")
        rows.append(row)
    return [
        "",
        "numpy frame handoff (uint64 arrays, frame number checked at both ends; copy = the array is copied "
        "through the channel, zero-copy = written and read in place; × = speed vs best peer)",
        *_table(headers, rows),
    ]


def _section_limits(data: Dict[str, Any]) -> List[str]:
    limits = data.get("limits") or {}
    if "skipped" in limits:
        return ["", f"Physical limits: skipped ({limits['skipped']})"]
    rows = []
    for key, (label, unit) in LIMIT_LABELS.items():
        if key not in limits:
            continue
        value = limits[key]
        if isinstance(value, list):
            text = " / ".join(fmt_num(v) for v in value)
        elif unit == "msgs/s":
            text = fmt_count(value)
        else:
            text = fmt_num(value)
        rows.append([label, f"{text} {unit}"])
    if not rows:
        return []
    return ["", "Physical limits of this machine (C, limits.c)", *_table(["measurement", "value"], rows)]


def _median(idx: Dict[Tuple[str, int, str], Dict[str, Any]], scenario: str, size: int, name: str) -> Optional[float]:
    res = idx.get((scenario, size, name))
    if res is None or res.get("status") != "ok" or "median" not in res:
        return None
    return float(res["median"])


def _section_targets(data: Dict[str, Any]) -> List[str]:
    """The performance targets of the benchmark issue, as measured ratios."""
    idx = _index(data["results"])
    modes = {c["name"]: c.get("mode") for c in data["contestants"]}
    groups = {c["name"]: c["group"] for c in data["contestants"]}
    if not any(r["group"] == "shmipc" and r["status"] == "ok" for r in data["results"]):
        return []
    limits = data.get("limits") or {}
    MiB = 1 << 20

    def best_peer(scenario: str, size: int, single: bool) -> Tuple[Optional[str], Optional[float]]:
        best: Tuple[Optional[str], Optional[float]] = (None, None)
        for (sc, sz, name), _ in idx.items():
            if sc != scenario or sz != size or groups.get(name) != "peer":
                continue
            if single and modes.get(name) == "batch":
                continue
            value = _median(idx, sc, sz, name)
            if value is not None and (best[1] is None or value > best[1]):
                best = (name, value)
        return best

    rows: List[List[str]] = []

    def ratio_target(target: str, mine: Optional[float], ref: Optional[float], ref_name: str, need: float) -> None:
        if mine is None or not ref:
            rows.append([target, "not measured", ""])
            return
        ratio = mine / ref
        rows.append([target, f"{ratio:.2f}× {ref_name}", f"{'met' if ratio >= need else 'MISSED'} (need {need:g}×)"])

    def time_target(target: str, mine: Optional[float], limit: Optional[float], how: str) -> None:
        if mine is None or not limit:
            rows.append([target, "not measured", ""])
            return
        verdict = "met" if mine <= limit else "MISSED"
        rows.append([target, f"{fmt_num(mine)} µs", f"{verdict} (need ≤ {fmt_num(limit)} µs: {how})"])

    ring, batch, view = "shmipc.Ring put/get", "shmipc.Ring put_many/get_many", "shmipc.Ring reserve/get_view"
    peer, value = best_peer("spsc", 64, single=True)
    ratio_target("Ring put/get, 64 B", _median(idx, "spsc", 64, ring), value, f"best single-message peer ({peer})", 2)
    ratio_target("Ring put_many/get_many, 64 B", _median(idx, "spsc", 64, batch), value,
                 f"best single-message peer ({peer})", 3)
    ratio_target("Ring put_many/get_many, 64 B", _median(idx, "spsc", 64, batch),
                 _median(idx, "spsc", 64, "faster-fifo put_many/get_many"), "faster-fifo put_many/get_many", 5)
    if limits.get("ring_1mib_gbs"):
        ring_msgs = limits["ring_1mib_gbs"] * 1e9 / MiB
        ratio_target("Ring put/get, 1 MiB", _median(idx, "spsc", MiB, ring), ring_msgs, "spinning C ring", 0.7)
    iceoryx2 = _median(idx, "spsc", MiB, "iceoryx2 (copy in, read in place)")
    ratio_target("Ring reserve/get_view, 1 MiB", _median(idx, "spsc", MiB, view), iceoryx2, "iceoryx2", 1)
    # iceoryx2's subscriber busy-polls: the like-for-like row spins too.
    view_spin = next((c["name"] for c in data["contestants"] if c["name"].startswith(view + " spin")), None)
    if view_spin:
        ratio_target(f"{view_spin[len('shmipc.'):]}, 1 MiB", _median(idx, "spsc", MiB, view_spin), iceoryx2,
                     "iceoryx2 (both busy-poll)", 1)
    if limits.get("futex_rtt_us"):
        futex = limits["futex_rtt_us"][0]
        for name in (ring, "shmipc.Mailbox send/recv"):
            time_target(f"{name} round trip, 64 B", _median(idx, "pingpong", 64, name), futex * 1.2,
                        f"futex floor {fmt_num(futex)} µs + 20%")
    spin = next((c["name"] for c in data["contestants"] if c["name"].startswith(ring + " spin")), None)
    if spin:
        time_target(f"{spin} round trip, 64 B", _median(idx, "pingpong", 64, spin), 3.0, "spin-then-block")
    frame_sizes = sorted({r["size"] for r in data["results"] if r["scenario"] == "frames"})
    if len(frame_sizes) > 1:
        small = _median(idx, "frames", frame_sizes[0], view)
        large = _median(idx, "frames", frame_sizes[-1], view)
        time_target(f"Ring zero-copy frame, {size_label(frame_sizes[-1])}", large, small * 1.5 if small else None,
                    f"independent of size: {size_label(frame_sizes[0])} took {fmt_num(small) if small else '?'} µs")
    return [
        "",
        "Targets of the benchmark issue (measured in this run)",
        *_table(["target", "measured", "verdict"], rows, align="<<<"),
    ]


def _header(data: Dict[str, Any]) -> List[str]:
    m, cfg = data["meta"], data["config"]
    lines = [
        f"shmipc {m.get('shmipc')} benchmark · {m.get('date')}",
        f"machine: {m.get('cpu')}, {m.get('cores')} cores ({m.get('cores_usable')} usable), "
        f"{(m.get('memory_bytes') or 0) / 2**30:.0f} GiB, {m.get('kernel')}",
        f"python: {m.get('python')}, numpy {m.get('numpy')}; load average at start "
        f"{m.get('loadavg_start')}, at end {m.get('loadavg_end')}",
        f"method: {cfg['runs']} measured runs per cell after calibration/warm-up, interleaved across "
        f"contestants; about {cfg['target']:g} s of traffic per run; every message sequence-checked",
    ]
    load = (m.get("loadavg_start") or [0])[0]
    cores = m.get("cores_usable") or m.get("cores") or 1
    if load > 0.3 * cores:
        lines.append(f"warning: the machine was busy (load {load} on {cores} cores): expect noisy numbers")
    return lines


def format_report(data: Dict[str, Any]) -> str:
    notes = _Notes()
    out = _header(data)
    out.append("")
    out += _section_spsc(data, notes)
    out += _section_pingpong(data, notes)
    out += _section_mpmc(data, notes)
    out += _section_frames(data, notes)
    out += _section_limits(data)
    out += _section_targets(data)
    for scenario, reason in (data.get("skipped_scenarios") or {}).items():
        out += ["", f"Scenario {scenario}: skipped ({reason})"]
    missing = [c for c in data["contestants"] if c["status"] != "available"]
    if missing:
        out += ["", "Not measured:"]
        for c in missing:
            reason = c["reason"]
            out.append(f"  {c['name']}: {reason if reason.startswith(c['status']) else c['status'] + ': ' + reason}")
    if notes.items:
        out += ["", "Notes:"]
        out += [f"  [{i}] {text}" for i, text in enumerate(notes.items, 1)]
    described = [c for c in data["contestants"] if c["status"] == "available" and c.get("note")]
    if described:
        out += ["", "How each contestant was run:"]
        out += [f"  {c['name']}: {c['note']}" for c in described]
    out.append(f"\n({data['meta'].get('wall_seconds')} s)")
    return "\n".join(out)


def write_json(data: Dict[str, Any], path: str) -> None:
    with open(path, "w") as f:
        json.dump(data, f, indent=1, sort_keys=False)
        f.write("\n")


# ---- plot --------------------------------------------------------------------------
class PlotUnavailable(RuntimeError):
    """matplotlib is missing (or cannot draw here)."""


def write_plot(data: Dict[str, Any], path: str) -> None:
    """Throughput vs message size per contestant, log-log, limits drawn in."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotUnavailable("--plot needs matplotlib: pip install matplotlib (or shmipc[bench])") from None
    results = [r for r in data["results"] if r["scenario"] == "spsc" and r["status"] == "ok" and "median" in r]
    if not results:
        raise PlotUnavailable("no SPSC result to plot")
    fig, (ax_msgs, ax_bytes) = plt.subplots(1, 2, figsize=(16, 6.5))
    colors = plt.get_cmap("tab20").colors  # type: ignore[attr-defined]  # tab20 is a ListedColormap
    markers = "os^vD<>ph*X"
    styles = {"shmipc": "-", "peer": "--"}
    sizes = sorted({r["size"] for r in results})
    plotted = 0
    for c in data["contestants"]:
        mine = sorted((r for r in results if r["contestant"] == c["name"]), key=lambda r: r["size"])
        if not mine:
            continue
        xs = [r["size"] for r in mine]
        msgs = [r["median"] for r in mine]
        mbs = [r["median"] * r["size"] / 1e6 for r in mine]
        style = dict(
            ls=styles.get(c["group"], "-"),
            lw=2.4 if c["group"] == "shmipc" else 1.2,
            marker=markers[plotted % len(markers)],
            color=colors[plotted % len(colors)],
            label=c["name"],
        )
        plotted += 1
        ax_msgs.plot(xs, msgs, **style)
        ax_msgs.fill_between(xs, [r["min"] for r in mine], [r["max"] for r in mine], color=style["color"], alpha=0.12)
        ax_bytes.plot(xs, mbs, **style)
        ax_bytes.fill_between(
            xs, [r["min"] * r["size"] / 1e6 for r in mine], [r["max"] * r["size"] / 1e6 for r in mine],
            color=style["color"], alpha=0.12,
        )
    limits = data.get("limits") or {}
    ring = [
        (x, limits[key])
        for x, key in ((64, "ring_64_gbs"), (1 << 20, "ring_1mib_gbs"), (16 << 20, "ring_16mib_gbs"))
        if limits.get(key)
    ]
    if ring:
        ax_bytes.plot([x for x, _ in ring], [y * 1e3 for _, y in ring], "k:", marker="s", lw=2,
                      label="limit: spinning C ring")
        ax_msgs.plot([x for x, _ in ring], [y * 1e9 / x for x, y in ring], "k:", marker="s", lw=2,
                     label="limit: spinning C ring")
    for key, ls, label in (("memcpy_1mib_gbs", "-.", "memcpy in cache"), ("memcpy_256mib_gbs", ":", "memcpy DRAM")):
        if limits.get(key):
            ax_bytes.axhline(limits[key] * 1e3, color="grey", ls=ls, lw=1, label=f"limit: {label}")
    for ax, ylabel in ((ax_msgs, "messages/s"), (ax_bytes, "MB/s")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(sizes)
        ax.set_xticklabels([size_label(n) for n in sizes])
        ax.set_xlabel("message size")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    ax_msgs.set_title("messages/s (median, band = min–max)")
    ax_bytes.set_title("MB/s")
    ax_bytes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    m = data["meta"]
    fig.suptitle(f"SPSC throughput vs message size — {m.get('cpu')}, {m.get('cores')} cores, {m.get('python')}")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
