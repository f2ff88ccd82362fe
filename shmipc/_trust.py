"""The owner check every attach or open of an existing object goes through.

Anyone allowed by a mode of 0o666 can create a segment, a semaphore set or a
``/dev/shm`` file under the key or name another user will use, and wait for
it to be attached (squatting).  So an object found already there is used only
when its owner uid and its creator uid are this process's effective uid, or
uids the caller listed in ``trusted_uids``.  Root is not exempt: root is the
user a squatter most wants to reach.  See docs/security.md.
"""
from __future__ import annotations

import os
from typing import Any, FrozenSet, Iterable

__all__ = ["check_owner", "normalize_trusted"]

#: The largest uid the kernel can hold ((uid_t)-1 is "no uid").
_UID_MAX = (1 << 32) - 2


def normalize_trusted(trusted_uids: Any) -> FrozenSet[int]:
    """*trusted_uids* (an iterable of uids) as a frozenset of ints, checked.

    ``TypeError`` for a non-iterable (a single int included: wrap it in a
    set) or a non-int item, ``ValueError`` for a uid out of range.
    """
    if isinstance(trusted_uids, frozenset) and all(type(u) is int and 0 <= u <= _UID_MAX for u in trusted_uids):
        return trusted_uids
    if isinstance(trusted_uids, int):  # bool included
        raise TypeError(
            f"trusted_uids must be an iterable of uids, not a single int: "
            f"write trusted_uids={{{trusted_uids!r}}}"
        )
    if isinstance(trusted_uids, (str, bytes, bytearray)) or not isinstance(trusted_uids, Iterable):
        raise TypeError(f"trusted_uids must be an iterable of int uids, not {type(trusted_uids).__name__}")
    uids = set()
    for uid in trusted_uids:
        if isinstance(uid, bool) or not isinstance(uid, int):
            raise TypeError(f"trusted_uids must hold int uids, not {type(uid).__name__} ({uid!r})")
        if not 0 <= uid <= _UID_MAX:
            raise ValueError(f"trusted_uids holds {uid}, which is not a uid (0..{_UID_MAX})")
        uids.add(int(uid))
    return frozenset(uids)


def check_owner(kind: str, ident: str, uid: int, cuid: int, trusted_uids: Iterable[int]) -> None:
    """Raise ``PermissionError`` unless *uid* and *cuid* are acceptable.

    Acceptable: this process's effective uid, or a uid in *trusted_uids*
    (already normalized).  *kind* and *ident* name the object in the message
    ("segment", "key 0x1234abcd (shmid 5)").
    """
    euid = os.geteuid()
    for what, found in (("owned", uid), ("created", cuid)):
        if found != euid and found not in trusted_uids:
            raise PermissionError(
                f"refusing {kind} {ident}: it is {what} by uid {found}, not by this process's "
                f"effective uid {euid}; it may be squatted by another user.  If uid {found} is "
                f"trusted, pass trusted_uids={{{found}}} to accept it"
            )
