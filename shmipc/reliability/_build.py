"""Locating the source checkout and making an ASan+UBSan build of the
extension in a scratch copy (the checkout's own build is never touched)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from typing import Dict, Optional, Tuple

SANITIZER_PATTERNS = ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer",
                      "AddressSanitizer:DEADLYSIGNAL", "UndefinedBehaviorSanitizer")


def source_root() -> Optional[str]:
    """The checkout shmipc runs from (has setup.py, csrc/, fuzz/), or None
    for an installed wheel."""
    from .. import __file__ as pkg_file

    root = os.path.dirname(os.path.dirname(os.path.abspath(pkg_file)))
    if all(os.path.exists(os.path.join(root, p)) for p in ("setup.py", "csrc", "shmipc")):
        return root
    return None


def libasan() -> Optional[str]:
    try:
        path = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True, text=True,
                              timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return path if os.path.isabs(path) and os.path.exists(path) else None


def asan_build(base: str) -> Tuple[Optional[str], str]:
    """Build (once per run, cached under *base*) a copy of the checkout with
    SHMIPC_SANITIZE=1.  Returns (tree, "") or (None, why not)."""
    root = source_root()
    if root is None:
        return None, "no source checkout (installed package)"
    if libasan() is None:
        return None, "gcc's libasan not found"
    tree = os.path.join(base, "asan-tree")
    stamp = os.path.join(tree, ".built")
    if os.path.exists(stamp):
        return tree, ""
    shutil.rmtree(tree, ignore_errors=True)
    os.makedirs(tree)
    for name in ("setup.py", "pyproject.toml", "README.md", "csrc", "shmipc", "tests", "fuzz"):
        src = os.path.join(root, name)
        if os.path.isdir(src):
            shutil.copytree(src, os.path.join(tree, name),
                            ignore=shutil.ignore_patterns("*.so", "__pycache__", "*.pyc"))
        elif os.path.exists(src):
            shutil.copy2(src, tree)
    env = dict(os.environ, SHMIPC_SANITIZE="1")
    proc = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=tree, env=env,
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        return None, "sanitizer build failed: " + proc.stderr.strip().splitlines()[-1:][0] if proc.stderr else "?"
    with open(stamp, "w") as f:
        f.write("ok\n")
    return tree, ""


def asan_env(tree: str) -> Dict[str, str]:
    env = dict(os.environ)
    env.update(
        LD_PRELOAD=libasan() or "",
        ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1:handle_segv=1",
        UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1",
        PYTHONPATH=tree,
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


def sanitizer_reports(text: str) -> int:
    return sum(text.count(p) for p in SANITIZER_PATTERNS[:3]) + (
        1 if any(p in text for p in SANITIZER_PATTERNS[3:]) and not any(p in text for p in SANITIZER_PATTERNS[:3])
        else 0
    )
