"""The session-end leak check can fail a run (and only for this run's objects).

Each test runs an inner pytest session, with tests/conftest.py loaded as a
plugin, over a small test file written to a temporary directory.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import _leaks
from shmipc import Segment

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent

LEAKY = r'''
import os, subprocess, sys
import _leaks
from shmipc import Segment

def test_leaky():
    Segment.create(64, int(os.environ["LEAK_KEY"]))  # never removed
    out = subprocess.run(["ipcmk", "-S", "1"], capture_output=True, text=True, check=True).stdout
    _leaks.register_sem(int(out.split()[-1]))
    open("/dev/shm/" + _leaks.posix_name("leak").lstrip("/"), "w").close()
    # Somebody else's segment (not started by this run): must not be blamed.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHMIPC_TEST_")}
    code = "from shmipc import _core; _core.shmget(%s, 64, 0o1600)" % os.environ["FOREIGN_KEY"]
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
'''

CLEAN = r'''
import os, time
from shmipc import Segment

def test_clean():
    seg = Segment.create(64, int(os.environ["LEAK_KEY"]))
    pid = os.fork()
    if pid == 0:  # keeps the removed segment alive a little past the session
        time.sleep(0.4)
        os._exit(0)
    seg.remove()
    seg.detach()
    assert seg.stat().nattch == 1
'''


def run_inner(tmp_path: Path, source: str, **env: int) -> subprocess.CompletedProcess:
    (tmp_path / "test_inner.py").write_text(source)
    environ = dict(os.environ)
    environ["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(ROOT), environ.get("PYTHONPATH", "")])
    environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # quick start: no third-party plugins
    environ.update({k: str(v) for k, v in env.items()})
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "conftest", "-p", "no:cacheprovider", "test_inner.py"],
        cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=60,
    )


def test_leak_check_fails_the_run_and_names_the_leaks(shm, tmp_path):
    leak_key, foreign_key = shm.key(), shm.key()
    sems_before = set(_leaks.sem_rows())
    files_before = _leaks.dev_shm_names()
    result = run_inner(tmp_path, LEAKY, LEAK_KEY=leak_key, FOREIGN_KEY=foreign_key, SHMIPC_TEST_LEAK_WAIT=0.2)
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert "1 passed" in out  # the test itself passed; the check failed the run
    # At least the three deliberate leaks (other developers' runs on this
    # machine may add theirs to an inner run's view; CI runs alone).
    count = int(out.split("shmipc leak check: ")[1].split(" kernel object")[0])
    assert count >= 3, out
    assert f"key={leak_key:#010x}" in out
    assert f"key={foreign_key:#010x}" not in out
    assert "semaphore set" in out and "/dev/shm/shmipc-test-r" in out
    # ... and it removed what it reported
    try:
        Segment.attach(leak_key)
    except FileNotFoundError:
        pass
    else:
        raise AssertionError("the leaked segment is still there")
    assert set(_leaks.sem_rows()) <= sems_before
    assert _leaks.dev_shm_names() <= files_before
    foreign = Segment.attach(foreign_key)  # still there: removed by our fixture
    assert foreign.stat().nattch == 1
    foreign.detach()


def test_leak_check_passes_a_clean_run_and_waits_for_deferred_destruction(shm, tmp_path):
    key = shm.key()
    result = run_inner(tmp_path, CLEAN, LEAK_KEY=key)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "leak check" not in out
