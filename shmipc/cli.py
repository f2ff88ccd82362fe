"""The ``shmipc`` command line (also ``python -m shmipc``).

    shmipc ls [--json] [-b]        the system's segments, like ``ipcs -m``
    shmipc stat [--json] ID        every field of one segment, one per line
    shmipc rm ID... [--key KEY]    mark segments for destruction (IPC_RMID)

Exit codes: 0 success; 1 when a named segment is missing or not permitted
(a message on stderr, the other names are still processed); 2 for usage
errors (argparse).

Subcommands are entries in :data:`COMMANDS`.  Adding one takes a function
that gets the parsed arguments and returns the exit code, and optionally one
that adds its arguments::

    def _configure_chat(parser):
        parser.add_argument("name")

    @command("chat", help="talk to another process", configure=_configure_chat)
    def _chat(args):
        ...
        return 0
"""
from __future__ import annotations

import argparse
import grp
import json
import os
import pwd
import sys
import time
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence

from . import __version__
from . import _core
from .segment import SegmentInfo, remove_segment, segments, stat_segment

PROG = "shmipc"


class Command(NamedTuple):
    name: str
    help: str
    run: Callable[[argparse.Namespace], int]
    configure: Optional[Callable[[argparse.ArgumentParser], None]]


#: name -> Command, in the order ``--help`` lists them.
COMMANDS: Dict[str, Command] = {}


def command(
    name: str,
    *,
    help: str,
    configure: Optional[Callable[[argparse.ArgumentParser], None]] = None,
) -> Callable[[Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]]:
    """Register a subcommand: ``run(args) -> exit code``."""

    def register(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        if name in COMMANDS:
            raise ValueError(f"subcommand {name!r} is already registered")
        COMMANDS[name] = Command(name, help, run, configure)
        return run

    return register


class Failure(Exception):
    """A named object could not be handled: message to stderr, exit 1."""


def error(args: argparse.Namespace, message: str) -> None:
    print(f"{PROG} {args.command}: {message}", file=sys.stderr)


# ---- formatting ---------------------------------------------------------------


def human_size(n: int) -> str:
    """4096 -> '4.0 KiB'; below 1 KiB plain bytes ('100 B')."""
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        value /= 1024
        if value < 1024 or unit == "PiB":
            break
    return f"{value:.1f} {unit}"


def format_time(t: int) -> str:
    """Local time, or '-' for never (0)."""
    if t == 0:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def status(info: SegmentInfo) -> str:
    flags = [name for name, on in (("dest", info.marked_for_destruction), ("locked", info.locked)) if on]
    return ",".join(flags) or "-"


def as_json(info: SegmentInfo) -> dict:
    record = info._asdict()
    record["owner"] = user_name(info.uid)
    return record


# ---- argument types -------------------------------------------------------------


def segment_id(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid segment id: {text!r}") from None
    if not 0 <= value < 2**31:
        raise argparse.ArgumentTypeError(f"invalid segment id: {text!r} (ids are 0..2147483647)")
    return value


def ipc_key(text: str) -> int:
    """A key in hex ('0x1234abcd') or decimal; negative values alias the
    unsigned ones as in C.  IPC_PRIVATE (0) names no segment."""
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid key: {text!r} (use hex 0x... or decimal)") from None
    if not -(2**31) <= value < 2**32:
        raise argparse.ArgumentTypeError(f"invalid key: {text!r} (keys are 32 bits)")
    if value == _core.IPC_PRIVATE:
        raise argparse.ArgumentTypeError("key 0 is IPC_PRIVATE and names no segment; use the id")
    return value & 0xFFFFFFFF


# ---- ls -------------------------------------------------------------------------

LS_COLUMNS = ["SHMID", "KEY", "OWNER", "PERMS", "SIZE", "NATTCH", "CPID", "LPID",
              "ATTACHED", "DETACHED", "CHANGED", "STATUS"]
LS_RIGHT = {"SHMID", "SIZE", "NATTCH", "CPID", "LPID"}


def _configure_ls(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print a JSON list of records")
    parser.add_argument("-b", "--bytes", action="store_true", help="sizes in bytes, not KiB/MiB")


@command("ls", help="list the system's shared-memory segments (like ipcs -m)", configure=_configure_ls)
def _ls(args: argparse.Namespace) -> int:
    infos = sorted(segments(), key=lambda s: s.shmid)
    if args.json:
        json.dump([as_json(info) for info in infos], sys.stdout, indent=2)
        print()
        return 0
    rows = [LS_COLUMNS] + [
        [
            str(info.shmid),
            f"{info.key:#010x}",
            user_name(info.uid),
            f"{info.mode:04o}",
            str(info.size) if args.bytes else human_size(info.size),
            str(info.nattch),
            str(info.cpid),
            str(info.lpid),
            format_time(info.atime),
            format_time(info.dtime),
            format_time(info.ctime),
            status(info),
        ]
        for info in infos
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(LS_COLUMNS))]
    for row in rows:
        cells = [
            cell.rjust(width) if name in LS_RIGHT else cell.ljust(width)
            for name, cell, width in zip(LS_COLUMNS, row, widths)
        ]
        print("  ".join(cells).rstrip())
    return 0


# ---- stat -----------------------------------------------------------------------


def _lookup(shmid: int) -> SegmentInfo:
    try:
        return stat_segment(shmid)
    except FileNotFoundError:
        raise Failure(f"no segment with id {shmid}") from None
    except PermissionError:
        # IPC_STAT needs read permission; /proc/sysvipc/shm shows everyone all.
        for info in segments():
            if info.shmid == shmid:
                return info
        raise Failure(f"permission denied for segment {shmid}") from None


def _configure_stat(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("shmid", type=segment_id, metavar="ID", help="segment id (as ls shows)")
    parser.add_argument("--json", action="store_true", help="print a JSON object")


@command("stat", help="show every field of one segment", configure=_configure_stat)
def _stat(args: argparse.Namespace) -> int:
    info = _lookup(args.shmid)
    if args.json:
        json.dump(as_json(info), sys.stdout, indent=2)
        print()
        return 0
    fields = {
        "shmid": str(info.shmid),
        "key": f"{info.key:#010x}",
        "size": f"{info.size} ({human_size(info.size)})",
        "mode": f"{info.mode:04o}",
        "uid": f"{info.uid} ({user_name(info.uid)})",
        "gid": f"{info.gid} ({group_name(info.gid)})",
        "cuid": f"{info.cuid} ({user_name(info.cuid)})",
        "cgid": f"{info.cgid} ({group_name(info.cgid)})",
        "cpid": str(info.cpid),
        "lpid": str(info.lpid),
        "nattch": str(info.nattch),
        "atime": f"{format_time(info.atime)} ({info.atime})",
        "dtime": f"{format_time(info.dtime)} ({info.dtime})",
        "ctime": f"{format_time(info.ctime)} ({info.ctime})",
        "marked_for_destruction": "yes" if info.marked_for_destruction else "no",
        "locked": "yes" if info.locked else "no",
    }
    width = max(map(len, fields)) + 1
    for name, value in fields.items():
        print(f"{name + ':':<{width}} {value}")
    return 0


# ---- rm -------------------------------------------------------------------------


def _configure_rm(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("shmids", type=segment_id, nargs="*", metavar="ID", help="segment ids")
    parser.add_argument("-k", "--key", type=ipc_key, action="append", default=[], metavar="KEY",
                        help="remove the segment with this key (hex 0x... or decimal); repeatable")


@command("rm", help="mark segments for destruction (IPC_RMID)", configure=_configure_rm)
def _rm(args: argparse.Namespace) -> int:
    if not args.shmids and not args.key:
        args.parser.error("give segment ids and/or --key KEY")
    failed = False
    targets: List[tuple] = [(shmid, f"id {shmid}") for shmid in args.shmids]
    for key in args.key:
        try:
            targets.append((_core.shmget(key, 0, 0), f"key {key:#010x}"))
        except FileNotFoundError:
            error(args, f"no segment with key {key:#010x}")
            failed = True
        except OSError as exc:
            error(args, f"key {key:#010x}: {exc.strerror}")
            failed = True
    for shmid, name in targets:
        try:
            remove_segment(shmid)
        except FileNotFoundError:
            error(args, f"no segment with {name}")
            failed = True
        except PermissionError:
            error(args, f"permission denied for segment with {name}")
            failed = True
        except OSError as exc:
            error(args, f"segment with {name}: {exc.strerror}")
            failed = True
    return 1 if failed else 0


# ---- main -----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Inspect and manage System V shared memory (shmipc)."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for cmd in COMMANDS.values():
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        if cmd.configure is not None:
            cmd.configure(p)
        p.set_defaults(_run=cmd.run, parser=p)
    return parser


# ---- commands that own their arguments ---------------------------------------


def _configure_passthrough(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="arguments of the subcommand (see its --help)")


def _passthrough(module: str, function: str = "main") -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        import importlib

        entry = getattr(importlib.import_module(module, __package__), function)
        return int(entry(list(args.rest)) or 0)

    return run


#: name -> runner of the subcommands that parse their own arguments.
_PASSTHROUGH: Dict[str, Callable[[argparse.Namespace], int]] = {}

for _name, _module, _function, _help in (
    ("chat", ".chat", "main", "the classic example: type lines, a child process prints them ('quit' ends)"),
    ("bench", ".bench", "main", "benchmark shmipc against the other IPC mechanisms"),
    ("reliability", ".reliability", "main", "run the reliability suite and print its figures"),
    ("cleanup", ".cleanup", "cleanup_main", "remove shmipc objects whose processes are all dead"),
):
    _PASSTHROUGH[_name] = command(_name, help=_help, configure=_configure_passthrough)(
        _passthrough(_module, _function)
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; returns the exit code (argparse exits with 2)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in _PASSTHROUGH:
        # Their options (even --help) belong to them, not to this parser.
        try:
            return _PASSTHROUGH[argv[0]](argparse.Namespace(command=argv[0], rest=argv[1:]))
        except KeyboardInterrupt:
            return 130
    args = build_parser().parse_args(argv)
    try:
        code = args._run(args)
        sys.stdout.flush()  # a closed pipe must fail here, not at exit
        return code
    except Failure as exc:
        error(args, str(exc))
        return 1
    except BrokenPipeError:
        # `shmipc ls | head`: the reader left; no second error at exit flush.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        return 130
