"""Figures 1 and 2: integrity of Ring and Mailbox under contention, with
real processes and checksummed, sequence-numbered messages."""
from __future__ import annotations

import array
import os
import random
import struct
import time
from typing import Any, Dict, List

from . import _harness as h
from ._harness import Row, Tier, row

# ---- 1: Ring integrity -------------------------------------------------------

_PAYLOAD_MAX = 200  # message sizes are MSG_HEADER.size .. MSG_HEADER.size + this


def _record(n: int) -> int:
    return (n + 15) & ~7


def _ring_producer(shmid: int, producer: int, count: int, max_size: int, seed: int) -> int:
    from ..ring import Ring

    rng = random.Random(seed)
    r = Ring.attach(shmid=shmid)
    lo = h.MSG_HEADER.size
    seq = 0
    while seq < count:
        how = rng.random()
        if how < 0.1:  # a batch
            k = min(count - seq, rng.randint(1, 8))
            batch = [h.make_message(producer, seq + i, rng.randint(lo, max_size)) for i in range(k)]
            r.put_many(batch, timeout=60)
            seq += k
            continue
        msg = h.make_message(producer, seq, rng.randint(lo, max_size))
        if how < 0.2:  # in place
            with r.reserve(len(msg), timeout=60) as buf:
                buf[:] = msg
        else:
            r.put(msg, timeout=60)
        seq += 1
    r.detach()
    return 0


def _ring_consumer(shmid: int, out: str, seed: int) -> int:
    from ..errors import EndOfStream
    from ..ring import Ring

    rng = random.Random(seed)
    r = Ring.attach(shmid=shmid)
    got = array.array("Q")
    last: Dict[int, int] = {}
    corrupt = disorder = 0

    def take(msg: Any) -> None:
        nonlocal corrupt, disorder
        ident = h.check_message(msg)
        if ident is None:
            corrupt += 1
            return
        p, seq = ident
        if seq <= last.get(p, -1):
            disorder += 1
        last[p] = seq
        got.append(p << 40 | seq)

    try:
        while True:
            how = rng.random()
            if how < 0.15:
                for m in r.get_many(rng.randint(2, 32), timeout=60):
                    take(m)
            elif how < 0.25:
                with r.get_view(timeout=60) as view:
                    take(view)
            else:
                take(r.get(timeout=60))
    except EndOfStream:
        pass
    r.detach()
    with open(out + ".bin", "wb") as f:
        got.tofile(f)
    h.write_json(out, {"corrupt": corrupt, "disorder": disorder, "count": len(got)})
    return 0


def _ring_run(tier: Tier, tmp: str, slots: int, producers: int, consumers: int, total: int) -> Dict[str, Any]:
    max_size = h.MSG_HEADER.size + _PAYLOAD_MAX
    capacity = slots * _record(max_size)
    r = h.ring(capacity)
    per = total // producers
    start = time.monotonic()
    try:
        outs = [os.path.join(tmp, f"ring{slots}-c{i}.json") for i in range(consumers)]
        cons = [h.Child(_ring_consumer, r.shmid, outs[i], 1000 + i) for i in range(consumers)]
        prods = [h.Child(_ring_producer, r.shmid, p, per, max_size, p) for p in range(producers)]
        budget = tier.t(120, 3600)
        pcodes, phangs = h.join_all(prods, budget)
        r.close()
        ccodes, changs = h.join_all(cons, 30)
        elapsed = time.monotonic() - start
        seen = [bytearray(per) for _ in range(producers)]
        dup = corrupt = disorder = received = 0
        for out in outs:
            res = h.read_json(out)
            if res is None:
                continue
            corrupt += res["corrupt"]
            disorder += res["disorder"]
            vals = array.array("Q")
            with open(out + ".bin", "rb") as f:
                vals.frombytes(f.read())
            for v in vals:
                p, seq = v >> 40, v & ((1 << 40) - 1)
                if p >= producers or seq >= per:
                    corrupt += 1
                    continue
                if seen[p][seq]:
                    dup += 1
                seen[p][seq] = 1
                received += 1
        lost = producers * per - sum(sum(s) for s in seen)
        bad_exit = sum(1 for c in pcodes + ccodes if c != 0)
        return {
            "sent": producers * per, "received": received, "lost": lost, "dup": dup,
            "corrupt": corrupt, "disorder": disorder, "hangs": phangs + changs,
            "bad_exit": bad_exit, "elapsed": elapsed, "capacity": capacity,
        }
    finally:
        h.dispose(r)


def fig_ring(tier: Tier, tmp: str) -> List[Row]:
    procs = tier.n(4, 8)
    totals = {1: tier.n(6000, 250_000), 2: tier.n(8000, 500_000),
              64: tier.n(30000, 4_000_000), 4096: tier.n(30000, 5_250_000)}
    rows = []
    for slots, total in totals.items():
        res = _ring_run(tier, tmp, slots, procs, procs, total)
        bad = res["lost"] + res["dup"] + res["corrupt"] + res["disorder"] + res["hangs"] + res["bad_exit"]
        rows.append(row(
            "1", f"ring {procs}x{procs} procs, capacity ~{slots} msg",
            f"{res['sent']} msgs: lost {res['lost']}, dup {res['dup']}, corrupt {res['corrupt']}, "
            f"reordered {res['disorder']} ({res['sent'] / res['elapsed']:.0f} msg/s)",
            "0 lost/dup/corrupt/reordered", bad == 0,
            detail=f"hangs {res['hangs']}, bad exits {res['bad_exit']}, capacity {res['capacity']} B",
        ))
    return rows


# ---- 2: Mailbox ----------------------------------------------------------------


def _mb_writer(shmid: int, producer: int, count: int, seed: int) -> int:
    from ..mailbox import Mailbox

    rng = random.Random(seed)
    box = Mailbox.attach(shmid=shmid)
    for seq in range(count):
        msg = h.make_message(producer, seq, rng.randint(h.MSG_HEADER.size, 256))
        if rng.random() < 0.2:
            with box.send_view(len(msg), timeout=60) as buf:
                buf[:] = msg
        else:
            box.send(msg, timeout=60)
    box.detach()
    return 0


def _mb_reader(shmid: int, out: str, seed: int) -> int:
    from ..mailbox import Mailbox

    rng = random.Random(seed)
    box = Mailbox.attach(shmid=shmid)
    got = array.array("Q")
    corrupt = 0
    while True:
        if rng.random() < 0.2:
            with box.recv_view(timeout=60) as view:
                msg = view.tobytes()
        else:
            msg = box.recv(timeout=60)
        if msg == b"":
            break  # the parent's stop message: one per reader
        ident = h.check_message(msg)
        if ident is None:
            corrupt += 1
        else:
            got.append(ident[0] << 40 | ident[1])
    box.detach()
    with open(out + ".bin", "wb") as f:
        got.tofile(f)
    h.write_json(out, {"corrupt": corrupt})
    return 0


_LATEST_WORDS = struct.Struct("<Q")


def _latest_value(seq: int, size: int) -> bytes:
    # The sequence repeated: a torn read mixes two values' words.
    return _LATEST_WORDS.pack(seq) * (size // 8)


def _latest_writer(shmid: int, stop_at: float) -> int:
    from ..mailbox import Mailbox

    box = Mailbox.attach(shmid=shmid)
    seq = 0
    sizes = [8, 64, 512, 4096]
    while time.monotonic() < stop_at:
        for _ in range(64):
            seq += 1
            box.send(_latest_value(seq, sizes[seq & 3]))
    box.close()
    box.detach()
    return 0


def _latest_reader(shmid: int, out: str) -> int:
    from ..errors import EndOfStream
    from ..mailbox import Mailbox

    box = Mailbox.attach(shmid=shmid)
    reads = torn = backwards = 0
    last = 0
    missed = 0
    try:
        while True:
            data = box.recv(timeout=10)
            reads += 1
            missed += box.missed
            if len(data) % 8 or not data:
                torn += 1
                continue
            first = data[:8]
            if data != first * (len(data) // 8) or len(data) != [8, 64, 512, 4096][
                _LATEST_WORDS.unpack(first)[0] & 3
            ]:
                torn += 1
                continue
            seq = _LATEST_WORDS.unpack(first)[0]
            if seq <= last:
                backwards += 1
            last = seq
    except EndOfStream:
        pass
    box.detach()
    h.write_json(out, {"reads": reads, "torn": torn, "backwards": backwards, "missed": missed, "last": last})
    return 0


def fig_mailbox(tier: Tier, tmp: str) -> List[Row]:
    rows = []
    writers = readers = 8
    total = tier.n(8000, 100_000)
    per = total // writers
    box = h.mailbox(256)
    try:
        start = time.monotonic()
        outs = [os.path.join(tmp, f"mb-r{i}.json") for i in range(readers)]
        rs = [h.Child(_mb_reader, box.shmid, outs[i], 50 + i) for i in range(readers)]
        ws = [h.Child(_mb_writer, box.shmid, w, per, w) for w in range(writers)]
        wcodes, whangs = h.join_all(ws, tier.t(120, 1800))
        for _ in range(readers):
            box.send(b"", timeout=30)
        rcodes, rhangs = h.join_all(rs, 30)
        elapsed = time.monotonic() - start
        seen = [bytearray(per) for _ in range(writers)]
        dup = corrupt = 0
        for out in outs:
            res = h.read_json(out)
            if res is None:
                continue
            corrupt += res["corrupt"]
            vals = array.array("Q")
            with open(out + ".bin", "rb") as f:
                vals.frombytes(f.read())
            for v in vals:
                p, seq = v >> 40, v & ((1 << 40) - 1)
                if p >= writers or seq >= per:
                    corrupt += 1
                elif seen[p][seq]:
                    dup += 1
                else:
                    seen[p][seq] = 1
        lost = writers * per - sum(sum(s) for s in seen)
        bad = lost + dup + corrupt + whangs + rhangs + sum(1 for c in wcodes + rcodes if c != 0)
        rows.append(row(
            "2", f"mailbox handoff {writers}x{readers} procs",
            f"{writers * per} msgs: lost {lost}, dup {dup}, corrupt {corrupt} ({writers * per / elapsed:.0f} msg/s)",
            "0 lost/dup/corrupt", bad == 0, detail=f"hangs {whangs + rhangs}",
        ))
    finally:
        h.dispose(box)

    seconds = tier.t(4.0, 60.0)
    box = h.mailbox(4096, overwrite=True)
    try:
        outs = [os.path.join(tmp, f"latest-r{i}.json") for i in range(2)]
        rs = [h.Child(_latest_reader, box.shmid, out) for out in outs]
        w = h.Child(_latest_writer, box.shmid, time.monotonic() + seconds)
        codes, hangs = h.join_all([w] + rs, seconds + 30)
        res = [h.read_json(o) or {} for o in outs]
        reads = sum(r.get("reads", 0) for r in res)
        torn = sum(r.get("torn", 0) for r in res)
        back = sum(r.get("backwards", 0) for r in res)
        writes = max((r.get("last", 0) for r in res), default=0)
        ok = torn == 0 and back == 0 and hangs == 0 and all(c == 0 for c in codes) and reads > 0
        rows.append(row(
            "2", f"mailbox latest-value, full-speed writer, {seconds:.0f} s",
            f"{reads} reads of {writes} writes: torn {torn}, older-than-previous {back}",
            "0 torn", ok, detail=f"hangs {hangs}, exit codes {codes}",
        ))
    finally:
        h.dispose(box)
    return rows
