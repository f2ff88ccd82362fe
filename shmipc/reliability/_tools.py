"""Figure 11: the whole test suite against an ASan+UBSan build of the
extension, and valgrind memcheck over the extension's unit tests.

Both run in subprocesses on scratch copies; the checkout's own build is not
touched.  Valgrind reports inside the interpreter itself (CPython 3.11 built
without valgrind support reports uninitialised reads in its own frame
evaluation) are counted apart: the figure counts the errors with a frame
in the extension (``_core.cpython-*.so`` or a ``csrc/`` source).
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from typing import List, Set, Tuple

from . import _build
from ._harness import Row, Tier, row, skipped

# The extension's own unit tests (valgrind is ~30x slower than native).
VALGRIND_TESTS = ["test_segment.py", "test_segment_buffer.py", "test_atomics.py", "test_mutex.py",
                  "test_shared_semaphore.py", "test_named_semaphore.py", "test_semaphore.py"]


def _pytest_counts(out: str) -> str:
    m = re.findall(r"^=* ?(\d+ (?:passed|failed|errors?)[^\n]*?) in [\d.]+s", out, re.M)
    return m[-1] if m else "no summary (crashed?)"


def _reap_test_run(tmpdir: str, session_pid: int, since: float) -> int:
    """After a test run that was killed (its own session-end leak check never
    ran): remove what its processes made.  The test suite records its
    processes and objects as files in a run directory under TMPDIR, which
    points into this figure's scratch directory."""
    from .. import _core
    from ..segment import segments
    from ..semaphore import semaphores

    pids: Set[int] = {session_pid}
    shms: Set[int] = set()
    sems: Set[int] = set()
    for rundir in glob.glob(os.path.join(tmpdir, "shmipc-testrun-*")):
        for name in os.listdir(rundir):
            kind, _, value = name.partition("-")
            if value.isdigit():
                {"pid": pids, "shm": shms, "sem": sems}.get(kind, set()).add(int(value))
    removed = 0
    for seg in segments():
        if seg.shmid in shms or (seg.cpid in pids and seg.ctime >= since - 1):
            try:
                _core.shm_remove(seg.shmid)
                removed += 1
            except OSError:
                pass
    for sem in semaphores():
        if sem.semid in sems and sem.ctime >= since - 1:
            try:
                _core.sem_remove(sem.semid)
                removed += 1
            except OSError:
                pass
    return removed


def _run_session(cmd: List[str], cwd: str, env: dict, timeout: float,
                 reap_tmpdir: str = "") -> Tuple[str, int]:
    """Run *cmd* in its own session; afterwards end whatever it left in its
    process group (multiprocessing's resource tracker lingers briefly)."""
    since = time.time()
    tmpdir = reap_tmpdir  # a test run's scratch TMPDIR (ours alone) to reap after it
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        code = -9
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if tmpdir:
        left = _reap_test_run(tmpdir, proc.pid, since)
        if left:
            out = (out or "") + f"\n[reliability] the test run left {left} object(s); removed them\n"
    return out or "", code


def _failed(out: str) -> int:
    m = re.findall(r"(\d+) failed", out)
    e = re.findall(r"(\d+) errors?\b", out)
    return (int(m[-1]) if m else 0) + (int(e[-1]) if e else 0)


def fig_sanitizers(tier: Tier, tmp: str) -> List[Row]:
    rows: List[Row] = []
    tree, why = _build.asan_build(os.path.dirname(tmp))
    if tree is None:
        rows.append(skipped("11", "test suite under ASan+UBSan", why))
    elif not os.path.isdir(os.path.join(tree, "tests")):
        rows.append(skipped("11", "test suite under ASan+UBSan", "tests/ not in the checkout"))
    else:
        env = _build.asan_env(tree)
        env["SHMIPC_TEST_LEAK_WAIT"] = env.get("SHMIPC_TEST_LEAK_WAIT", "2")
        env["TMPDIR"] = os.path.join(tmp, "asan-tmp")  # where the test run records itself
        os.makedirs(env["TMPDIR"], exist_ok=True)
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"]
        out, code = _run_session(cmd, tree, env, tier.t(400, 3600), reap_tmpdir=env["TMPDIR"])
        reports = _build.sanitizer_reports(out)
        failed = _failed(out)
        completed = code in (0, 1) and "passed" in out
        detail = ""
        if reports or not completed:
            detail = "\n".join(out.strip().splitlines()[-15:])
        elif failed:
            detail = "failed tests: " + ", ".join(re.findall(r"FAILED (\S+)", out)[:8])
        m = re.search(r"the test run left (\d+) object", out)
        if m:
            detail = f"the test run was cut short and left {m.group(1)} object(s) (removed); " + detail
        rows.append(row(
            "11", "whole test suite against an ASan+UBSan build",
            f"{_pytest_counts(out)}; {reports} sanitizer reports",
            "0 reports", reports == 0 and completed,
            detail=(detail + (" (test failures are reported, not counted here: see the normal run)"
                              if failed else ""))[:2000],
        ))
    if not tier.long:
        rows.append(skipped("11", "valgrind memcheck over the extension's unit tests",
                            "quick tier (takes minutes; run --long or make valgrind)"))
        return rows
    root = _build.source_root()
    if shutil.which("valgrind") is None or root is None:
        rows.append(skipped("11", "valgrind memcheck over the extension's unit tests",
                            "valgrind not installed" if root else "no source checkout"))
        return rows
    tests = [os.path.join("tests", t) for t in VALGRIND_TESTS if os.path.exists(os.path.join(root, "tests", t))]
    env = dict(os.environ, PYTHONMALLOC="malloc", SHMIPC_TEST_LEAK_WAIT="5", TMPDIR=os.path.join(tmp, "vg-tmp"))
    os.makedirs(env["TMPDIR"], exist_ok=True)
    cmd = ["valgrind", "--error-exitcode=99", "--errors-for-leak-kinds=none", "--num-callers=40", "-q",
           sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"] + tests
    out, _ = _run_session(cmd, root, env, 5400, reap_tmpdir=env["TMPDIR"])
    blocks = re.split(r"\n==\d+== \n", out)
    errors = [b for b in blocks if re.search(r"==\d+== (Invalid|Conditional|Use of uninit|Syscall param|"
                                             r"Mismatched|Source and destination|Argument)", b)]
    ours = [b for b in errors if "_core.cpython" in b or "csrc/" in b]
    rows.append(row(
        "11", f"valgrind memcheck over {len(tests)} extension test modules",
        f"{_pytest_counts(out)}; {len(ours)} errors in the extension "
        f"({len(errors) - len(ours)} inside the interpreter itself)",
        "0 in the extension", not ours and "passed" in out,
        detail="\n".join(ours[:2])[:2000],
    ))
    return rows
