"""shmipc's reliability suite: crash injection, stress, signals, fuzzing,
sanitizers and leak checks, reported as measured figures.

``python -m shmipc.reliability [--quick|--long] [--json FILE] [--only NAME]``

Each figure runs in its own process group under a watchdog and does the
thing it reports (real processes, real kills); the table gives the measured
value, the target and PASS/FAIL, and the exit status is non-zero if any
figure misses its target.  At the end the suite checks that no System V
segment, semaphore set or /dev/shm file it created is left.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from typing import Callable, List, NamedTuple, Optional, Sequence

from . import _harness as h
from ._harness import Row, Tier

__all__ = ["FIGURES", "main"]


class Figure(NamedTuple):
    name: str
    func: str  # "module:function" inside this package, imported in the figure's process
    quick_budget: float  # watchdog, seconds
    long_budget: float
    what: str


FIGURES: List[Figure] = [
    Figure("ring", "_queue:fig_ring", 150, 7200, "1 Ring integrity, N producers x N consumers"),
    Figure("mailbox", "_queue:fig_mailbox", 90, 1800, "2 Mailbox handoffs and latest-value torn reads"),
    Figure("producer-kill", "_crash:fig_producer_kill", 120, 3600, "3 producer killed mid-put"),
    Figure("consumer-kill", "_crash:fig_consumer_kill", 120, 3600, "4 consumer killed mid-get"),
    Figure("lock-kill", "_crash:fig_lock_kill", 90, 1800, "5 lock holder killed in a critical section"),
    Figure("dead-peer", "_crash:fig_dead_peer", 60, 600, "6 dead-peer detection (Liveness, zombies)"),
    Figure("blocking", "_timing:fig_blocking", 120, 1800, "7 bounded blocking under stress and after kills"),
    Figure("signals", "_timing:fig_signals", 90, 1800, "8 SIGALRM storms and SIGINT"),
    Figure("removal", "_timing:fig_removal", 60, 600, "9 external removal and re-creation"),
    Figure("fuzz", "_fuzz:fig_fuzz", 180, 14400, "10 fuzzing (atheris) and a scribbler"),
    Figure("sanitizers", "_tools:fig_sanitizers", 300, 7200, "11 ASan+UBSan test suite, valgrind"),
    Figure("leaks", "_hygiene:fig_leaks", 90, 1800, "12 RSS / object growth over cycles"),
    Figure("permissions", "_hygiene:fig_permissions", 60, 300, "13 permissions and hostile setups"),
    Figure("cleanup", "_hygiene:fig_cleanup", 60, 300, "14 stale cleanup and restart"),
    Figure("hostile-writer", "_trust:fig_hostile_writer", 90, 1800, "15 hostile writer vs Ring and Mailbox in use"),
    Figure("squatting", "_trust:fig_squatting", 30, 120, "16 objects squatted by another uid"),
    Figure("async-exceptions", "_trust:fig_async_exceptions", 90, 1800, "17 signal-handler exceptions in Ring calls"),
    Figure("threads-fork", "_trust:fig_threads_fork", 60, 900, "18 threads sharing a Ring; fork from a threaded process"),
    Figure("interrupted-create", "_trust:fig_interrupted_create", 60, 900, "19 SIGKILL / exceptions inside create and remove"),
]


def _resolve(spec: str) -> Callable[[Tier, str], List[Row]]:
    mod, func = spec.split(":")
    return getattr(importlib.import_module(f"{__name__}.{mod}"), func)


def _run_figure(fig: Figure, tier: Tier, tmp: str) -> List[Row]:
    """Run one figure in a forked process group; kill the group on a hang."""
    out = os.path.join(tmp, f"{fig.name}.rows.json")
    figtmp = os.path.join(tmp, fig.name)
    os.makedirs(figtmp, exist_ok=True)
    budget = fig.long_budget if tier.long else fig.quick_budget
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the figure's process: its own group, so a hang is killed whole
        code = 1
        try:
            os.setpgid(0, 0)
            rows = _resolve(fig.func)(tier, figtmp)
            h.write_json(out, [dataclasses.asdict(r) for r in rows])
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    h.track_pid(pid)
    try:
        os.setpgid(pid, pid)
    except OSError:
        pass
    deadline = time.monotonic() + budget
    status = None
    try:
        while status is None:
            done, st = os.waitpid(pid, os.WNOHANG)
            if done:
                status = st
                break
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
    except KeyboardInterrupt:
        _killpg(pid)
        os.waitpid(pid, 0)
        raise
    hung = status is None
    if hung:
        _killpg(pid)
        os.waitpid(pid, 0)
    strays = _killpg(pid)  # children the figure left running (there should be none)
    data = h.read_json(out)
    rows = [Row(**r) for r in data] if data else []
    if hung:
        rows.append(h.row("-", f"{fig.name}: watchdog", f"hung, killed after {budget:.0f} s", "finishes", False))
    elif not data:
        exit_code = os.waitstatus_to_exitcode(status) if status is not None else None
        rows.append(h.row("-", f"{fig.name}: figure process", f"crashed (exit {exit_code}, see stderr)", "finishes", False))
    if strays:
        rows.append(h.row("-", f"{fig.name}: stray processes", "left running, killed", "none", False))
    return rows


def _killpg(pgid: int) -> bool:
    """SIGKILL the process group *pgid* (ours); True if anything was in it."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _select(only: Optional[str]) -> List[Figure]:
    if not only:
        return list(FIGURES)
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    chosen = []
    for fig in FIGURES:
        number = fig.what.split()[0]
        if any(w == fig.name or w == number or fig.name.startswith(w) for w in wanted):
            chosen.append(fig)
    if not chosen:
        raise SystemExit(f"--only {only!r} matches no figure; names: {', '.join(f.name for f in FIGURES)}")
    return chosen


def _format_table(rows: Sequence[Row]) -> str:
    cols = [("#", "fid"), ("figure", "name"), ("measured", "value"), ("target", "target"), ("result", "status")]
    widths = [max(len(title), *(len(getattr(r, attr)) for r in rows)) if rows else len(title) for title, attr in cols]
    widths = [min(w, 90) for w in widths]
    lines = ["  ".join(title.ljust(w) for (title, _), w in zip(cols, widths))]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        lines.append("  ".join(getattr(r, attr).ljust(w) for (_, attr), w in zip(cols, widths)).rstrip())
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m shmipc.reliability",
        description="Measure shmipc's reliability figures (crash injection, stress, signals, "
        "fuzzing, sanitizers, leaks, permissions, cleanup).",
    )
    tier = parser.add_mutually_exclusive_group()
    tier.add_argument("--quick", action="store_true", help="the CI tier (a few minutes; the default)")
    tier.add_argument("--long", action="store_true", help="the nightly tier: the issue's full counts")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON to FILE")
    parser.add_argument("--only", metavar="NAME", help="comma-separated figure names or numbers: "
                        + ", ".join(f.name for f in FIGURES))
    parser.add_argument("--list", action="store_true", help="list the figures and exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="print each row's detail")
    args = parser.parse_args(argv)
    if args.list:
        for fig in FIGURES:
            print(f"{fig.name:15} {fig.what}")
        return 0
    run_tier = Tier("long", 1.0) if args.long else Tier("quick", 0.0)
    figures = _select(args.only)

    tmp = tempfile.mkdtemp(prefix="shmipc-reliability-")
    track = os.path.join(tmp, "created.log")
    root = str(os.getpid())
    saved_env = {k: os.environ.get(k) for k in ("SHMIPC_RELIABILITY_TRACK", "SHMIPC_RELIABILITY_ROOT")}
    os.environ["SHMIPC_RELIABILITY_TRACK"] = track
    os.environ["SHMIPC_RELIABILITY_ROOT"] = root
    since = time.time()
    start = time.monotonic()
    rows: List[Row] = []
    interrupted = False
    print(f"shmipc reliability, {run_tier.name} tier: {len(figures)} figure group(s)", flush=True)
    try:
        for fig in figures:
            t0 = time.monotonic()
            new = _run_figure(fig, run_tier, tmp)
            rows.extend(new)
            verdict = "FAIL" if any(r.ok is False for r in new) else "ok"
            print(f"  {fig.name:15} {time.monotonic() - t0:6.1f} s  {verdict}", flush=True)
    except KeyboardInterrupt:
        interrupted = True
        print("interrupted: cleaning up", file=sys.stderr)
    finally:
        left = h.find_leftovers(track, root, since, remove=True)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(tmp, ignore_errors=True)
    rows.append(h.row(
        "12", "objects this run left behind (SysV shm/sem, /dev/shm)",
        left.describe(), "none", not left,
        detail="found and removed at the end of the run" if left else "",
    ))
    elapsed = time.monotonic() - start
    print()
    print(_format_table(rows))
    if args.verbose:
        for r in rows:
            if r.detail:
                print(f"  [{r.fid}] {r.name}: {r.detail}")
    failed = [r for r in rows if r.ok is False]
    print(f"\n{len(rows)} figures, {len(failed)} failed, in {elapsed:.0f} s ({run_tier.name} tier)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"tier": run_tier.name, "seconds": round(elapsed, 1),
                       "figures": [dataclasses.asdict(r) for r in rows]}, f, indent=1)
    if interrupted:
        return 130
    return 1 if failed else 0
