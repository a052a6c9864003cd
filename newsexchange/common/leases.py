"""Who holds a lease or a claim, and whether that holder is still alive.

A holder is named ``host:pid:tag``. The pid lets a process on the same host see that a
lease or a claimed delivery row was left behind by a process that no longer exists (a
crash, ``kill -9``) and take it over at once instead of waiting for it to expire.
"""

from __future__ import annotations

import os
import secrets
import socket

__all__ = ["owner_id", "owner_is_dead"]


def owner_id() -> str:
    """This process's name as a lease owner or claimer: ``host:pid:random``."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def owner_is_dead(owner: str | None) -> bool:
    """Whether ``owner`` names a process on this host that no longer exists.

    Unknown shapes, other hosts and this very process are never "dead": only a pid we can
    check on this host and find gone is."""
    if not owner:
        return False
    host, _, rest = owner.partition(":")
    pid_text = rest.split(":", 1)[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # it exists, under another user
        return False
    return False
