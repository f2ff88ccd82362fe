"""The seed's example as a command, driven through a pipe."""
import os
import signal
import subprocess
import sys
import time


def run_chat(text, timeout=20):
    return subprocess.run(
        [sys.executable, "-m", "shmipc", "chat"],
        input=text,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_chat_through_a_pipe():
    proc = run_chat("hello\nsecond line\nquit\n")
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.replace(">", "\n").splitlines() if line.strip()]
    assert lines == ["read buf : hello.", "read buf : second line."]
    assert proc.stderr == ""


def test_chat_end_of_input_acts_as_quit():
    proc = run_chat("only\n")
    assert proc.returncode == 0, proc.stderr
    assert "read buf : only." in proc.stdout


def _shm_files():
    return {name for name in os.listdir("/dev/shm") if "shmipc-chat" in name}


def test_chat_ctrl_c_leaves_nothing_behind():
    before = _shm_files()
    proc = subprocess.Popen(
        [sys.executable, "-m", "shmipc", "chat"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        proc.stdin.write("one\n")
        proc.stdin.flush()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (_shm_files() - before):
            time.sleep(0.01)
        time.sleep(0.3)
        os.killpg(os.getpgid(proc.pid), 0)  # still running, in our group
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "read buf : one." in out
    assert _shm_files() - before == set()
