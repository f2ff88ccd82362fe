"""Figure 10: fuzzing (atheris, or a random driver without it) under
AddressSanitizer + UndefinedBehaviorSanitizer, and a scribbler flipping
bytes of a live ring.

With atheris, each harness runs twice: coverage-guided on the regular
build (gcc's sanitizer runtime would take libFuzzer's coverage hooks, so
guidance and ASan cannot share a process), then its corpus is replayed and
mutated further under the ASan+UBSan build.  Without atheris the harnesses
run with their random driver under ASan+UBSan, and the atheris rows say
"skipped: atheris not installed".
"""
from __future__ import annotations

import importlib.util
import os
import random
import re
import sys
import time
from typing import Any, Dict, List

from . import _build
from . import _harness as h
from ._harness import Row, Tier, row, skipped

_HARNESSES = [
    ("10a", "fuzz_layout.py", "ring/mailbox header and record bytes into attach and read paths"),
    ("10b", "fuzz_calls.py", "random sequences of C-extension calls (offsets, lengths, flags)"),
]


def _run_harness(script: str, seconds: float, env: Dict[str, str], args: List[str], cwd: str) -> Dict[str, Any]:
    from ._tools import _run_session

    cmd = [sys.executable, script, "--seconds", str(int(seconds))] + args
    # Its own session: a hung harness is killed with whatever it forked.
    out, code = _run_session(cmd, cwd, env, seconds * 2 + 120)
    m = re.findall(r"Done (\d+) runs", out) or re.findall(r"executions=(\d+)", out)
    execs = int(m[-1]) if m else 0
    reports = _build.sanitizer_reports(out)
    crashed = code != 0
    return {"execs": execs, "reports": reports, "crashed": crashed, "code": code,
            "tail": "\n".join(out.strip().splitlines()[-12:])}


def fig_fuzz(tier: Tier, tmp: str) -> List[Row]:
    rows: List[Row] = []
    root = _build.source_root()
    have_atheris = importlib.util.find_spec("atheris") is not None
    tree, why = _build.asan_build(os.path.dirname(tmp))
    for fid, script, what in _HARNESSES:
        long_s = 1200 if fid == "10a" else 2400
        seconds = tier.t(10, long_s)
        if root is None or not os.path.exists(os.path.join(root, "fuzz", script)):
            rows.append(skipped(fid, f"fuzz: {what}", "fuzz/ not found (installed package)"))
            continue
        corpus = os.path.join(tmp, f"corpus-{fid}")
        os.makedirs(corpus, exist_ok=True)
        crashes = reports = 0
        parts = []
        details = []
        if have_atheris:
            res = _run_harness(os.path.join(root, "fuzz", script), seconds, dict(os.environ),
                               [corpus, f"-artifact_prefix={tmp}/"], tmp)
            crashes += res["crashed"]
            parts.append(f"{res['execs']} coverage-guided")
            if res["crashed"]:
                details.append(res["tail"])
        if tree is None:
            rows.append(row(fid, f"fuzz (atheris): {what}", f"{parts[0] if parts else 'not run'}; ASan part "
                            f"skipped: {why}", "0 crashes", crashes == 0 if parts else None))
            continue
        args = [corpus, f"-artifact_prefix={tmp}/"] if have_atheris else ["--random", "--seed", str(int(time.time()))]
        res = _run_harness(os.path.join(tree, "fuzz", script), seconds, _build.asan_env(tree), args, tmp)
        crashes += res["crashed"]
        reports += res["reports"]
        if res["crashed"] or res["reports"]:
            details.append(res["tail"])
        parts.append(f"{res['execs']} under ASan+UBSan" + ("" if have_atheris else " (random driver)"))
        total = sum(int(p.split()[0]) for p in parts)
        name = f"fuzz{' (atheris)' if have_atheris else ''}: {what}"
        rows.append(row(
            fid, name, f"{total} executions ({' + '.join(parts)}): {crashes} crashes, {reports} sanitizer reports",
            f"0 crashes/reports ({'1,000,000 execs' if tier.long else 'CI-scaled'})",
            crashes == 0 and reports == 0 and total > 0, detail=" | ".join(details)[:2000],
        ))
        if not have_atheris:
            rows.append(skipped(fid, f"fuzz (atheris, coverage-guided): {what}", "atheris not installed"))
    rows.extend(_scribbler_rows(tier, tmp))
    return rows


# ---- the scribbler ---------------------------------------------------------------

# Ring header fields a hostile peer may flip.  Not the pthread objects
# (offsets 64-319): glibc links held robust mutexes into a per-thread list
# through the mutex memory, and a flipped pointer there crashes the holder in
# glibc at its next unlock -- a limit of robust mutexes in writable shared
# memory, stated in docs/reliability.md.
_FIELDS = [0, 8, 16, 24, 32, 40, 320, 384, 448, 512]


def _scribble(shmid: int, stop_at: float, seed: int, out: str) -> int:
    """Flip one bit of a header field or a data word, hold it 0-2 ms, put it
    back if nobody changed it meanwhile (compare-and-swap)."""
    from ..atomics import AtomicView
    from ..ring import HEADER_SIZE
    from ..segment import Segment

    rng = random.Random(seed)
    seg = Segment(shmid)
    av = AtomicView(seg)
    flips = 0
    time.sleep(0.05)  # let the producer and consumer attach first
    while time.monotonic() < stop_at:
        if rng.random() < 0.5:
            off = rng.choice(_FIELDS)
        else:
            off = HEADER_SIZE + rng.randrange(seg.size - HEADER_SIZE) // 8 * 8
        old = av.load64(off)
        new = old ^ (1 << rng.randrange(64))
        if av.compare_exchange64(off, old, new):
            flips += 1
            time.sleep(rng.uniform(0, 0.002))
            av.compare_exchange64(off, new, old)
        time.sleep(rng.uniform(0, 0.003))
    av.close()
    seg.detach()
    h.write_json(out, {"flips": flips})
    return 0


def _attach(shmid: int, stop_at: float, stats: Dict[str, Any]) -> Any:
    """Attach, retrying while the scribbler has the header flipped (a clear
    CorruptedError is the right answer to a flipped magic or size)."""
    from ..errors import CorruptedError
    from ..ring import Ring

    while True:
        try:
            return Ring.attach(shmid=shmid)
        except CorruptedError:
            stats["corrupted"] += 1
            if time.monotonic() > stop_at:
                raise
            time.sleep(0.001)


def _scribbled_producer(shmid: int, stop_at: float, out: str) -> int:
    from ..errors import CorruptedError, RemovedError

    stats: Dict[str, Any] = {"put": 0, "corrupted": 0, "timeout": 0, "value": 0, "other": []}
    r = _attach(shmid, stop_at, stats)
    seq = 0
    rng = random.Random(5)
    while time.monotonic() < stop_at:
        try:
            r.put(h.make_message(1, seq, rng.randint(h.MSG_HEADER.size, 300)), timeout=0.05)
            stats["put"] += 1
            seq += 1
        except CorruptedError:
            stats["corrupted"] += 1
            time.sleep(0.001)
        except TimeoutError:
            stats["timeout"] += 1
        except ValueError:  # e.g. "put on a closed ring" after a flipped closed flag
            stats["value"] += 1
            time.sleep(0.001)
        except RemovedError:  # a flipped "removed" flag: a forgery the trust model allows
            stats["removed"] = stats.get("removed", 0) + 1
            time.sleep(0.001)
        except Exception as e:
            stats["other"].append(repr(e))
    r.detach()
    h.write_json(out, stats)
    return 0


def _scribbled_consumer(shmid: int, stop_at: float, out: str) -> int:
    from ..errors import CorruptedError, EndOfStream, RemovedError

    stats: Dict[str, Any] = {"valid": 0, "invalid": 0, "dup_or_reordered": 0, "corrupted": 0, "timeout": 0,
                             "eos": 0, "other": []}
    r = _attach(shmid, stop_at, stats)
    last = -1
    while time.monotonic() < stop_at:
        try:
            msg = r.get(timeout=0.05)
        except CorruptedError:
            stats["corrupted"] += 1
            time.sleep(0.001)
            continue
        except TimeoutError:
            stats["timeout"] += 1
            continue
        except EndOfStream:  # a flipped "closed" flag on an empty ring
            stats["eos"] += 1
            time.sleep(0.001)
            continue
        except RemovedError:  # a flipped "removed" flag
            stats["removed"] = stats.get("removed", 0) + 1
            time.sleep(0.001)
            continue
        except Exception as e:
            stats["other"].append(repr(e))
            continue
        ident = h.check_message(msg)
        if ident is None:
            stats["invalid"] += 1
        else:
            stats["valid"] += 1
            if ident[1] <= last:
                stats["dup_or_reordered"] += 1
            last = ident[1]
    r.detach()
    h.write_json(out, stats)
    return 0


def _scribbler_rows(tier: Tier, tmp: str) -> List[Row]:
    seconds = tier.t(5, 60)
    r = h.ring(4096)
    try:
        stop = time.monotonic() + seconds
        outs = [os.path.join(tmp, f"scrib-{x}.json") for x in ("s", "p", "c")]
        kids = [h.Child(_scribble, r.shmid, stop, 1, outs[0]),
                h.Child(_scribbled_producer, r.shmid, stop, outs[1]),
                h.Child(_scribbled_consumer, r.shmid, stop, outs[2])]
        codes, hangs = h.join_all(kids, seconds + 30)
        s, p, c = (h.read_json(o) or {} for o in outs)
    finally:
        h.dispose(r)
    crashes = sum(1 for code in codes if code != 0)
    unclear = len(p.get("other", [])) + len(c.get("other", []))
    ok = crashes == 0 and hangs == 0 and unclear == 0 and c.get("valid", 0) > 0
    return [
        row("10c", f"scribbler flipping ring header/record bits vs live producer+consumer, {seconds:.0f} s",
            f"{s.get('flips', 0)} flips: {crashes} crashes, {hangs} hangs, {unclear} unclear errors; "
            f"consumer: {c.get('valid', 0)} valid, {c.get('corrupted', 0)} CorruptedError, "
            f"{c.get('timeout', 0)} timeouts",
            "0 crashes/hangs; valid msgs or clear errors", ok,
            detail=f"exit codes {codes}; producer {p}; consumer other {c.get('other', [])[:3]}"),
        row("10c", "scribbler: what a hostile writer achieved without a crash (no per-record checksum)",
            f"{c.get('invalid', 0)} deliveries failing the app checksum, {c.get('dup_or_reordered', 0)} "
            f"duplicated/reordered, {c.get('eos', 0)} spurious EndOfStream",
            "info", None),
    ]

