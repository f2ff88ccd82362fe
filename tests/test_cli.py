"""The command line, ``python -m shmipc``: output and exit codes, run as a
shell user would (subprocess), plus a few in-process checks."""
from __future__ import annotations

import contextlib
import io
import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import shmipc
from shmipc import Segment, cli

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "shmipc", *args], capture_output=True, text=True, timeout=30, env=env, cwd=ROOT
    )


def gone(shmid: int) -> bool:
    return shmid not in {s.shmid for s in shmipc.segments()}


# ---- usage ----------------------------------------------------------------------


def test_no_arguments_is_a_usage_error():
    result = run()
    assert result.returncode == 2
    assert "usage: shmipc" in result.stderr and result.stdout == ""


def test_help_lists_the_subcommands(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in out
    assert set(cli.COMMANDS) >= {"ls", "stat", "rm"}


def test_version():
    result = run("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"shmipc {shmipc.__version__}"


def test_subcommand_registry_takes_new_commands(monkeypatch, capsys):
    monkeypatch.setattr(cli, "COMMANDS", dict(cli.COMMANDS))

    def configure(parser):
        parser.add_argument("word")

    @cli.command("echo", help="say a word", configure=configure)
    def _echo(args):
        print(args.word)
        return 3

    assert cli.main(["echo", "hi"]) == 3
    assert capsys.readouterr().out == "hi\n"
    with pytest.raises(ValueError):
        cli.command("echo", help="again")(_echo)


@pytest.mark.parametrize(
    "argv",
    [["nope"], ["rm"], ["rm", "abc"], ["rm", "-5"], ["rm", str(2**31)], ["rm", "--key", "0"],
     ["rm", "--key", "zz"], ["rm", "--key", hex(2**32)], ["stat"], ["stat", "1", "2"], ["stat", "x"],
     ["ls", "--bogus"]],
    ids=" ".join,
)
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "usage:" in err and "error:" in err


# ---- ls -----------------------------------------------------------------------------


def find_row(out: str, shmid: int) -> list:
    for line in out.splitlines()[1:]:
        cells = line.split()
        if cells and cells[0] == str(shmid):
            return cells
    raise AssertionError(f"segment {shmid} not in:\n{out}")


# In-process runs for the exact fields: starting a subprocess can fork (3.9
# has no vfork in subprocess), and the fork's exec detaches the inherited
# mapping, which moves lpid and dtime.


def test_ls_table(shm, key, capsys):
    t0 = time.time()
    seg = shm.add(Segment.create(4096, key, mode=0o640))
    doomed = shm.segment(3 * 1024 * 1024 + 5)
    doomed.remove()  # attached, marked for destruction
    assert cli.main(["ls"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    header = out.splitlines()[0].split()
    assert header == cli.LS_COLUMNS
    row = find_row(out, seg.shmid)
    # SHMID KEY OWNER PERMS SIZE(2 cells) NATTCH CPID LPID ATTACHED(2) DETACHED CHANGED(2) STATUS
    assert row[1] == f"{key:#010x}"
    assert row[2] == "root"
    assert row[3] == "0640"
    assert row[4:6] == ["4.0", "KiB"]
    assert row[6] == "1" and row[7] == str(os.getpid()) and row[8] == str(os.getpid())
    attached = time.mktime(time.strptime(" ".join(row[9:11]), "%Y-%m-%d %H:%M:%S"))
    assert t0 - 2 <= attached <= time.time() + 1  # local time
    assert row[11] == "-"  # never detached
    assert row[-1] == "-"
    doomed_row = find_row(out, doomed.shmid)
    assert doomed_row[1] == "0x00000000" and doomed_row[4:6] == ["3.0", "MiB"] and doomed_row[-1] == "dest"


def test_ls_through_the_interpreter(shm, key):
    seg = shm.add(Segment.create(4096, key, mode=0o640))
    result = run("ls")
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.splitlines()[0].split() == cli.LS_COLUMNS
    row = find_row(result.stdout, seg.shmid)
    assert row[1:6] == [f"{key:#010x}", "root", "0640", "4.0", "KiB"]
    assert row[7] == str(os.getpid())


def test_ls_bytes_and_json(shm, key, capsys):
    seg = shm.add(Segment.create(5000, key))
    assert cli.main(["ls", "-b"]) == 0
    assert find_row(capsys.readouterr().out, seg.shmid)[4] == "5000"
    result = run("ls", "--json")
    assert result.returncode == 0
    records = {r["shmid"]: r for r in json.loads(result.stdout)}
    record = records[seg.shmid]
    assert record.pop("owner") == "root"
    assert record == seg.stat()._asdict()


def test_ls_into_a_closed_pipe_exits_quietly(seg):
    read_end, write_end = os.pipe()
    os.close(read_end)  # like `shmipc ls | head` after head has left
    try:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        proc = subprocess.run([sys.executable, "-m", "shmipc", "ls"], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=30, env=env, cwd=ROOT)
    finally:
        os.close(write_end)
    assert proc.returncode == 1
    assert proc.stderr == ""  # no traceback, no "Exception ignored"


def test_ls_in_process_handles_unknown_owner(shm, capsys):
    seg = shm.segment(64)
    seg.chown(uid=4242424)  # no such user: the number is shown
    assert cli.main(["ls"]) == 0
    assert find_row(capsys.readouterr().out, seg.shmid)[2] == "4242424"


@pytest.mark.parametrize(
    "n,text",
    [(0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (4096, "4.0 KiB"), (1536, "1.5 KiB"),
     (2**20, "1.0 MiB"), (5 * 2**30, "5.0 GiB"), (2**40, "1.0 TiB"), (2**60, "1024.0 PiB")],
)
def test_human_size(n, text):
    assert cli.human_size(n) == text


# ---- stat -----------------------------------------------------------------------------


def test_stat(shm, key, capsys):
    seg = shm.add(Segment.create(4096, key, mode=0o604))
    assert cli.main(["stat", str(seg.shmid)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    fields = dict(line.split(":", 1) for line in out.splitlines())
    fields = {k: v.strip() for k, v in fields.items()}
    assert sorted(fields) == sorted(shmipc.SegmentInfo._fields)  # every field
    assert fields["key"] == f"{key:#010x}"
    assert fields["shmid"] == str(seg.shmid)
    assert fields["size"] == "4096 (4.0 KiB)"
    assert fields["mode"] == "0604"
    assert fields["uid"] == "0 (root)" and fields["cuid"] == "0 (root)"
    assert fields["cpid"] == str(os.getpid())
    assert fields["nattch"] == "1"
    assert fields["dtime"] == "- (0)"
    assert fields["atime"].endswith(f"({seg.stat().atime})")
    assert fields["marked_for_destruction"] == "no"


def test_stat_through_the_interpreter(seg):
    result = run("stat", str(seg.shmid))
    assert result.returncode == 0 and result.stderr == ""
    lines = result.stdout.splitlines()
    assert len(lines) == len(shmipc.SegmentInfo._fields)
    assert f"shmid:                  {seg.shmid}" in lines
    assert f"cpid:                   {os.getpid()}" in lines


def test_stat_json(seg, capsys):
    assert cli.main(["stat", "--json", str(seg.shmid)]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record.pop("owner") == "root"
    assert record == seg.stat()._asdict()


def test_stat_missing():
    result = run("stat", str(2**31 - 1))
    assert result.returncode == 1
    assert result.stderr.strip() == f"shmipc stat: no segment with id {2**31 - 1}"
    assert result.stdout == ""


# ---- rm -------------------------------------------------------------------------------


def test_rm_ids(shm):
    a, b = shm.segment(64), shm.segment(64)
    shmid_a, shmid_b = a.shmid, b.shmid
    a.detach()
    result = run("rm", str(shmid_a), str(shmid_b))
    assert result.returncode == 0 and result.stdout == "" and result.stderr == ""
    assert gone(shmid_a)  # nobody attached: destroyed at once
    assert b.stat().marked_for_destruction  # b is attached: deferred
    b.detach()
    assert gone(shmid_b)


def test_rm_missing_id_reports_and_goes_on(shm):
    seg = shm.segment(64)
    shmid = seg.shmid
    seg.detach()
    missing = 2**31 - 2
    result = run("rm", str(missing), str(shmid))
    assert result.returncode == 1
    assert result.stderr.strip() == f"shmipc rm: no segment with id {missing}"
    assert gone(shmid)  # the good id was still removed


@pytest.mark.parametrize("spelling", ["hex", "HEX", "decimal"])
def test_rm_key(shm, key, spelling):
    seg = shm.add(Segment.create(64, key))
    shmid = seg.shmid
    seg.detach()
    text = {"hex": f"{key:#x}", "HEX": f"0X{key:X}", "decimal": str(key)}[spelling]
    assert cli.main(["rm", "--key", text]) == 0
    assert gone(shmid)


def test_rm_missing_key(key):
    result = run("rm", "--key", hex(key))
    assert result.returncode == 1
    assert result.stderr.strip() == f"shmipc rm: no segment with key {key:#010x}"


def test_rm_key_and_ids_together(shm, key, capsys):
    by_key = shm.add(Segment.create(64, key))
    by_id = shm.segment(64)
    ids = (by_key.shmid, by_id.shmid)
    by_key.detach()
    by_id.detach()
    assert cli.main(["rm", str(by_id.shmid), "-k", str(key)]) == 0
    assert all(gone(i) for i in ids)
    assert capsys.readouterr().err == ""


# ---- as an unprivileged user --------------------------------------------------------


def cli_as_nobody(argv, conn):
    """Run cli.main(argv) as uid/gid 65534; send back (code, stdout, stderr)."""
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    conn.send((code, out.getvalue(), err.getvalue()))


def run_as_nobody(argv):
    ctx = multiprocessing.get_context("fork")
    parent_conn, child_conn = ctx.Pipe()
    proc = ctx.Process(target=cli_as_nobody, args=(argv, child_conn), daemon=True)
    proc.start()
    try:
        assert parent_conn.poll(15), "child sent nothing"
        result = parent_conn.recv()
    finally:
        proc.join(15)
        if proc.is_alive():
            proc.kill()
            proc.join(5)
    assert proc.exitcode == 0
    return result


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another uid")
def test_rm_and_stat_permission_denied(seg):
    code, out, err = run_as_nobody(["rm", str(seg.shmid)])
    assert code == 1 and out == ""
    assert err.strip() == f"shmipc rm: permission denied for segment with id {seg.shmid}"
    assert not seg.stat().marked_for_destruction
    # stat still answers from /proc/sysvipc/shm, which everyone may read
    code, out, err = run_as_nobody(["stat", str(seg.shmid)])
    assert code == 0 and err == ""
    assert f"shmid:                  {seg.shmid}" in out and "mode:                   0600" in out
