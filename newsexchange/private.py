"""Files and folders only their owner may read: the database, the outbox of mailed digests.

Both hold personal data (contacts' addresses, the messages sent to them, signed links), so
what this service creates is ``0700`` (folders) and ``0600`` (files) whatever the umask is.
Only what is created here gets that mode: a folder or file the operator made already keeps
the mode they gave it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def make_private_dir(path: Path) -> None:
    """Create ``path`` and any missing parent folders as ``0700``; existing ones are left as
    they are (``Path.mkdir(parents=True, mode=…)`` gives the parents the umask's mode)."""
    missing: list[Path] = []
    p = path
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=DIR_MODE)
        except FileExistsError:  # made meanwhile by another process: theirs to set
            continue
        os.chmod(d, DIR_MODE)  # mkdir's mode is masked by the umask; this is exact


def create_private_file(path: Path) -> None:
    """Create an empty ``path`` as ``0600`` unless it exists (then it is left alone)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return
    os.close(fd)


def write_private_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (created or truncated) with mode ``0600``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "wb") as f:
        mode = os.fstat(fd).st_mode
        if stat.S_ISREG(mode) and stat.S_IMODE(mode) != FILE_MODE:
            os.fchmod(fd, FILE_MODE)  # a file left from before keeps its mode on O_TRUNC
        f.write(data)
