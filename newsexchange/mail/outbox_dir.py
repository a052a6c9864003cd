"""The ``outbox`` backend: a folder of .eml files (the embedded default, and a safe dry run)."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from email.utils import make_msgid
from pathlib import Path

from newsexchange.errors import DeliveryError
from newsexchange.mail.base import OnSent
from newsexchange.mail.message import OutgoingMessage, SendResult
from newsexchange.private import make_private_dir, write_private_file

__all__ = ["OutboxMailer"]


class OutboxMailer:
    """Writes one .eml file per message into a folder: the default, and a safe dry run.

    The file name is derived from the Message-ID, so writing the same message twice (a resend
    after a crash) replaces the file instead of adding a second one. Files are written to a
    temporary name and renamed, so a reader never sees half a message.
    """

    name = "outbox"
    personalizes = False  # wants ``raw`` per recipient (see OutgoingMessage)
    reports_each = True  # send(..., on_sent=) reports each message as it is written

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def send(
        self,
        messages: Sequence[OutgoingMessage],
        *,
        on_sent: OnSent | None = None,
    ) -> list[SendResult]:
        results = []
        try:
            make_private_dir(self.folder)  # owner-only: these are the messages as mailed
            for out in messages:
                msgid = out.msgid or make_msgid(domain="newsexchange.invalid")
                stem = re.sub(r"[^A-Za-z0-9._@-]+", "_", msgid.strip("<>"))[:180]
                path = self.folder / f"{stem}.eml"
                tmp = path.with_suffix(".eml.tmp")
                data = out.raw if out.raw is not None else out.message.as_bytes()
                try:
                    write_private_file(tmp, data)
                except OSError:
                    tmp.unlink(missing_ok=True)  # no half-written file left behind
                    raise
                os.replace(tmp, path)
                results.append(SendResult(ok=True, provider_message_id=str(path.name)))
                if on_sent is not None:
                    on_sent(len(results) - 1, results[-1])
        except OSError as exc:
            # A full disk or a folder we may not write: the backend is unusable, so the send
            # stops and hands the rest back (what was written is recorded as sent).
            where = exc.filename or self.folder
            raise DeliveryError(
                f"cannot write the outbox ({where}): {exc.strerror or exc}"
            ) from exc
        return results

    def close(self) -> None:
        pass
