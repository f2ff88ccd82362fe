"""What both fuzz harnesses share: a byte reader and the driver loop.

A harness defines ``one_input(data: bytes) -> None`` that raises only for a
real failure.  ``run(one_input)`` drives it with atheris (libFuzzer,
coverage-guided) when atheris is installed and ``--random`` is not given,
else with random inputs from a seeded generator.  Both report the number
of executions on the last line of stderr::

    fuzz: executions=123456 crashes=0 driver=atheris seconds=30.0

Options: ``--seconds S`` (default 30), ``--runs N`` (stop after N inputs),
``--random`` (force the random driver), ``--seed N``; anything else is
passed to libFuzzer (``-max_len=4096`` ...).  A crash, a sanitizer report
or an unexpected exception ends the run with a non-zero exit status (under
atheris, libFuzzer writes the input to ``crash-*`` in ``-artifact_prefix``).
"""
from __future__ import annotations

import os
import random
import sys
import time
from typing import Callable, List, Optional, Tuple


class Reader:
    """Consume typed values from fuzz bytes; zeros once they run out."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def left(self) -> int:
        return len(self.data) - self.pos

    def bytes(self, n: int) -> bytes:
        out = self.data[self.pos:self.pos + n]
        self.pos += len(out)
        return out

    def int(self, nbytes: int = 1, signed: bool = False) -> int:
        return int.from_bytes(self.bytes(nbytes).ljust(nbytes, b"\0"), "little", signed=signed)

    def below(self, n: int) -> int:
        return self.int(4) % n if n > 0 else 0

    def choice(self, seq: list):  # type: ignore[no-untyped-def]
        return seq[self.below(len(seq))]

    def wild_int(self) -> int:
        """An int that is often at an edge: 0, -1, sizes, 2**31, 2**63, 2**64."""
        edges = [0, 1, -1, 7, 8, 63, 64, 4095, 4096, 4097, 2**31 - 1, 2**31, 2**32, 2**63 - 1, 2**63, 2**64, -(2**63)]
        if self.int(1) % 3 == 0:
            return self.choice(edges)
        return self.int(8, signed=True) >> self.below(64)


def instrumented():
    """``with instrumented(): import shmipc``: Python-level coverage for the
    shmipc modules when atheris drives the run (the C extension is built
    with gcc, whose instrumentation libFuzzer cannot read)."""
    import contextlib

    if "--random" in sys.argv:
        return contextlib.nullcontext()
    try:
        import atheris  # type: ignore[import-not-found]
    except ImportError:
        return contextlib.nullcontext()
    return atheris.instrument_imports(include=["shmipc"])


def _parse(argv: List[str]) -> Tuple[dict, List[str]]:
    opts = {"seconds": 30.0, "runs": 0, "random": False, "seed": 1}
    rest = [argv[0]]
    it = iter(argv[1:])
    for a in it:
        if a == "--seconds":
            opts["seconds"] = float(next(it))
        elif a == "--runs":
            opts["runs"] = int(next(it))
        elif a == "--random":
            opts["random"] = True
        elif a == "--seed":
            opts["seed"] = int(next(it))
        else:
            rest.append(a)
    return opts, rest


def run(one_input: Callable[[bytes], None], max_len: int = 2048,
        at_exit: Optional[Callable[[], None]] = None) -> None:
    opts, rest = _parse(sys.argv)
    count = [0]
    start = time.monotonic()

    def counted(data: bytes) -> None:
        count[0] += 1
        one_input(data)

    def report(driver: str) -> None:
        if at_exit is not None:
            at_exit()
        print(f"fuzz: executions={count[0]} crashes=0 driver={driver} "
              f"seconds={time.monotonic() - start:.1f}", file=sys.stderr, flush=True)

    try:
        import atheris  # type: ignore[import-not-found]
    except ImportError:
        atheris = None
    if atheris is not None and not opts["random"]:
        # libFuzzer ends the process with exit() (no Python finalisation), so
        # it runs in a child and this process cleans up after it.
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            # -timeout: one input running longer is a hang, reported as a failure.
            args = rest + [f"-max_total_time={int(opts['seconds'])}", f"-max_len={max_len}", "-timeout=20"]
            if opts["runs"]:
                args.append(f"-runs={opts['runs']}")
            atheris.Setup(args, counted)
            atheris.Fuzz()
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        if at_exit is not None:
            at_exit()
        code = os.waitstatus_to_exitcode(status)
        print(f"fuzz: driver=atheris exit={code} (executions: libFuzzer's 'Done N runs' above)",
              file=sys.stderr, flush=True)
        os._exit(code if code >= 0 else 128 - code)
    rng = random.Random(opts["seed"])
    deadline = start + opts["seconds"]
    while time.monotonic() < deadline and (not opts["runs"] or count[0] < opts["runs"]):
        n = rng.choice([0, 1, 8, 16, 64, 256, max_len])
        counted(bytes(rng.getrandbits(8) for _ in range(rng.randint(0, n))))
    report("random" if atheris is None or opts["random"] else "atheris")
    os._exit(0)
