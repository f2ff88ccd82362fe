"""Command line of the benchmark: ``python -m shmipc bench [options]``."""
from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import sys
from typing import List, Optional, Sequence

from .base import Contestant, NotInstalled, Unavailable
from .harness import PRESETS, SCENARIOS, Bench, Config, Progress

__all__ = ["main", "all_contestants", "select"]


def all_contestants() -> List[Contestant]:
    """shmipc's contestants first, then the peers."""
    from .contestants import all_shmipc
    from .peers import all_peers

    return all_shmipc() + all_peers()


def select(contestants: Sequence[Contestant], patterns: Optional[str]) -> List[Contestant]:
    """Keep contestants whose name matches one comma-separated pattern.

    A pattern is a case-insensitive glob (``shmipc*``) or, without glob
    characters, a substring (``pipe``).
    """
    if not patterns:
        return list(contestants)
    pats = [p.strip().lower() for p in patterns.split(",") if p.strip()]
    out = []
    for c in contestants:
        name = c.name.lower()
        for p in pats:
            if any(ch in p for ch in "*?[") and fnmatch.fnmatchcase(name, p) or p in name:
                out.append(c)
                break
    return out


def _parse_size(text: str) -> int:
    t = text.strip().lower().replace(" ", "")
    units = (("gib", 1 << 30), ("mib", 1 << 20), ("kib", 1 << 10), ("g", 1 << 30), ("m", 1 << 20), ("k", 1 << 10))
    for suffix, mult in units + (("b", 1),):
        if t.endswith(suffix):
            value = int(float(t[: -len(suffix)]) * mult)
            break
    else:
        value = int(t)
    if value < 24 or value % 8:
        raise argparse.ArgumentTypeError(f"message size {text!r}: must be a multiple of 8, at least 24 bytes")
    return value


def _sizes(text: str) -> tuple:
    return tuple(_parse_size(part) for part in text.split(",") if part.strip())


def _scenarios(text: str) -> tuple:
    names = tuple(s.strip() for s in text.split(",") if s.strip())
    for name in names:
        if name not in SCENARIOS:
            raise argparse.ArgumentTypeError(f"unknown scenario {name!r} (choose from {', '.join(SCENARIOS)})")
    return names


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog or "python -m shmipc bench",
        description=(
            "Measure shmipc against other ways of moving messages between Python processes "
            "(multiprocessing, pipes, sysv_ipc, posix_ipc, faster-fifo, ZeroMQ, iceoryx2), with this "
            "machine's physical limits beside them.  Peers that are not installed are listed as such; "
            "pip install 'shmipc[bench]' installs them."
        ),
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="preset", action="store_const", const="quick",
                      help="fewer sizes, 2 runs, short runs: under a minute")
    mode.add_argument("--full", dest="preset", action="store_const", const="full",
                      help="all sizes, 5 runs (the default): under ten minutes")
    mode.add_argument("--smoke", dest="preset", action="store_const", const="smoke",
                      help="a few seconds: 200 messages, 1 run, no limits (checks that everything works)")
    p.add_argument("--only", metavar="PATTERN",
                   help="only contestants matching PATTERN (comma-separated globs or substrings, case-insensitive)")
    p.add_argument("--list", action="store_true", help="list the contestants and whether they can run here")
    p.add_argument("--scenarios", type=_scenarios, metavar="LIST",
                   help=f"comma-separated subset of {','.join(SCENARIOS)}")
    p.add_argument("--sizes", type=_sizes, metavar="LIST", help="SPSC message sizes, e.g. 64,4k,1m,16m")
    p.add_argument("--runs", type=int, metavar="N", help="measured runs per cell")
    p.add_argument("--target", type=float, metavar="SECONDS", help="seconds of traffic per measured run")
    p.add_argument("--messages", type=int, metavar="N",
                   help="fixed message count per run instead of calibrating to --target")
    p.add_argument("--no-limits", action="store_true", help="skip the C program that measures the machine's limits")
    p.add_argument("--json", metavar="FILE", help="write raw results and machine metadata to FILE")
    p.add_argument("--plot", metavar="FILE.png", help="plot throughput vs message size (needs matplotlib)")
    p.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    return p


def make_config(args: argparse.Namespace) -> Config:
    cfg = dataclasses.replace(PRESETS[args.preset or "full"])
    if args.scenarios:
        cfg.scenarios = args.scenarios
    if args.sizes:
        cfg.sizes = args.sizes
    if args.runs is not None:
        if args.runs < 1:
            raise SystemExit("--runs must be at least 1")
        cfg.runs = args.runs
    if args.target is not None:
        if not 0 < args.target <= 60:
            raise SystemExit("--target must be in (0, 60] seconds")
        cfg.target = args.target
    if args.messages is not None:
        if args.messages < 1:
            raise SystemExit("--messages must be at least 1")
        cfg.fixed_count = args.messages
    if args.no_limits:
        cfg.limits = False
    return cfg


def _list(contestants: Sequence[Contestant]) -> int:
    rows = []
    for c in contestants:
        try:
            c.check()
            status = "available"
        except (NotInstalled, Unavailable) as exc:
            status = str(exc)
        except Exception as exc:
            status = f"unavailable: {type(exc).__name__}: {exc}"
        rows.append((c.name, c.group, ",".join(sorted(c.scenarios)), status))
    width = max(len(r[0]) for r in rows) if rows else 10
    for name, group, scen, status in rows:
        print(f"{name:<{width}}  {group:<6}  {scen:<28}  {status}")
    return 0


def main(argv: Optional[Sequence[str]] = None, *, contestants: Optional[Sequence[Contestant]] = None) -> int:
    """Run the benchmark; return the exit status.

    Exit status 1 when a shmipc contestant FAILED its sequence check, 0
    otherwise (peers that fail are reported, not fatal).  *contestants*
    replaces the built-in list (tests).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    pool = list(contestants) if contestants is not None else all_contestants()
    chosen = select(pool, args.only)
    if not chosen:
        parser.error(f"--only {args.only!r} matches no contestant (see --list)")
    if args.list:
        return _list(chosen)
    cfg = make_config(args)
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("shmipc bench: --plot needs matplotlib: pip install matplotlib (or shmipc[bench])",
                  file=sys.stderr)
            return 2
    progress = Progress(enabled=not args.no_progress)
    bench = Bench(cfg, chosen, progress)
    try:
        data = bench.run()
    except KeyboardInterrupt:
        progress.clear()
        print("shmipc bench: interrupted", file=sys.stderr)
        return 130
    from .report import PlotUnavailable, format_report, write_json, write_plot

    print(format_report(data))
    if args.json:
        write_json(data, args.json)
        print(f"raw results: {args.json}")
    if args.plot:
        try:
            write_plot(data, args.plot)
            print(f"plot: {args.plot}")
        except PlotUnavailable as exc:
            print(f"shmipc bench: {exc}", file=sys.stderr)
    failed = [r for r in data["results"] if r["group"] == "shmipc" and r["status"] == "FAILED"]
    return 1 if failed else 0
