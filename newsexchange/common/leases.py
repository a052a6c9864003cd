"""Who holds a lease or a claim, and whether that holder is still alive.

A holder is named ``host:pid:tag``. The pid lets a process on the same host see that a
lease or a claimed delivery row was left behind by a process that no longer exists (a
crash, ``kill -9``) and take it over at once instead of waiting for it to expire.

A lease (:func:`lease`) is a row in the ``locks`` table held for a time-to-live and renewed
while its holder works: the service takes one per job run, so two service processes on one
database (or a cron ``run-once`` beside a service) never run the same job at once. The SQL of
each step is in :mod:`newsexchange.db.queries.locks`; the policy is here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta

from newsexchange.db import Database, utcnow
from newsexchange.db.queries import locks

__all__ = ["acquire_lock", "lease", "owner_id", "owner_is_dead", "release_lock", "renew_lock"]

# The lease was the service's before it was shared: its log lines keep that logger's name
# (operators filter on it).
log = logging.getLogger("newsexchange.service")


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


def acquire_lock(db: Database, name: str, owner: str, *, ttl: float, now: datetime) -> bool:
    """Take the lease ``name`` for ``ttl`` seconds; True when this owner now holds it.

    Atomic on SQLite and PostgreSQL: the UPDATE succeeds only when the lease is free (expired)
    or already ours; when no row exists, the INSERT succeeds for exactly one writer (primary
    key). A lease held by a dead process on this host is taken over with an UPDATE that names
    the dead owner, so two survivors cannot both take it.
    """
    expires = now + timedelta(seconds=ttl)
    if locks.take_free(db, name, owner, expires=expires, now=now):
        return True
    if locks.insert_lock(db, name, owner, expires=expires):
        return True
    holder = locks.holder(db, name)
    if (
        holder
        and owner_is_dead(holder)
        and locks.take_from(db, name, holder, owner, expires=expires)
    ):
        log.warning("lease taken over from a dead process", extra={"lock": name})
        return True
    return False


def renew_lock(db: Database, name: str, owner: str, *, ttl: float, now: datetime) -> bool:
    """Extend our lease; False when it is no longer ours (it expired and someone took it)."""
    return locks.renew(db, name, owner, expires=now + timedelta(seconds=ttl))


def release_lock(db: Database, name: str, owner: str) -> None:
    locks.release(db, name, owner)


@contextlib.contextmanager
def lease(db: Database, name: str, owner: str, *, ttl: float) -> Iterator[bool]:
    """Hold the lease ``name`` while the block runs, renewing it every ``ttl / 3`` seconds.

    Yields whether it was acquired; the block must do nothing when it was not.
    """
    if not acquire_lock(db, name, owner, ttl=ttl, now=utcnow()):
        yield False
        return
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(ttl / 3):
            try:
                if not renew_lock(db, name, owner, ttl=ttl, now=utcnow()):
                    log.error("lease lost while running", extra={"lock": name})
                    return
            except Exception:  # a database hiccup: try again at the next tick
                log.warning("lease renewal failed", extra={"lock": name}, exc_info=True)

    renewer = threading.Thread(target=renew, name=f"lease-{name}", daemon=True)
    renewer.start()
    try:
        yield True
    finally:
        stop.set()
        renewer.join(timeout=5)
        try:
            release_lock(db, name, owner)
        except Exception:  # it expires on its own
            log.warning("lease release failed", extra={"lock": name}, exc_info=True)
