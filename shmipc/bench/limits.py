"""The machine's physical limits, measured by a small C program.

``limits.c`` ships with the package; it is compiled here with ``cc`` (or
``$CC``) into a temporary directory and run once.  Without a compiler the
limits are skipped with a note; the rest of the benchmark does not need
them.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from typing import Any, Dict

__all__ = ["measure_limits", "LIMIT_LABELS"]

#: key -> (label, unit) for the report
LIMIT_LABELS = {
    "memcpy_1mib_gbs": ("memcpy, 1 MiB (in cache)", "GB/s"),
    "memcpy_256mib_gbs": ("memcpy, 256 MiB (DRAM)", "GB/s"),
    "ring_64_msgs": ("spinning C ring, 64 B messages", "msgs/s"),
    "ring_1mib_gbs": ("spinning C ring, 1 MiB messages (copy in + out)", "GB/s"),
    "ring_16mib_gbs": ("spinning C ring, 16 MiB messages (copy in + out)", "GB/s"),
    "spin_rtt_us": ("spinning round trip, two processes (median / p99)", "µs"),
    "futex_rtt_us": ("blocking round trip, process-shared sem_t (median / p99)", "µs"),
}


def _source() -> str:
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "limits.c")


def measure_limits(seconds: float = 0.3, timeout: float = 120.0) -> Dict[str, Any]:
    """Compile and run limits.c; return its numbers or {"skipped": reason}."""
    src = _source()
    if not os.path.exists(src):
        return {"skipped": f"{src} is missing from this installation"}
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        return {"skipped": "no C compiler (cc) found: physical limits not measured"}
    with tempfile.TemporaryDirectory(prefix="shmipc-bench-") as tmp:
        exe = os.path.join(tmp, "limits")
        cmd = [cc, "-O2", "-std=gnu11", "-pthread", src, "-o", exe]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return {"skipped": f"compiling limits.c failed: {exc}"}
        if proc.returncode != 0:
            err = (proc.stderr or proc.stdout).strip().splitlines()
            return {"skipped": f"compiling limits.c failed: {err[-1] if err else proc.returncode}"}
        try:
            run = subprocess.run([exe, f"{seconds:g}"], capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"skipped": f"limits program timed out after {timeout:.0f} s"}
        except OSError as exc:
            return {"skipped": f"running limits program failed: {exc}"}
        if run.returncode != 0:
            err = (run.stderr or "").strip().splitlines()
            return {"skipped": f"limits program failed ({run.returncode}): {err[-1] if err else ''}"}
        try:
            data = json.loads(run.stdout)
        except ValueError:
            return {"skipped": f"limits program printed something unexpected: {run.stdout[:200]!r}"}
    data["compiler"] = cc
    data["seconds_per_measurement"] = seconds
    return data
