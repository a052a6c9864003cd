"""One chunk of a send: load and personalize it (:func:`prepare_chunk`), then pace, send
and record every outcome (:func:`dispatch`, run on a :class:`Thread` while the next chunk
is prepared)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from newsexchange.common.pacing import Pacer
from newsexchange.db import Database, Delivery, Digest
from newsexchange.db.queries import deliveries as queries
from newsexchange.delivery.marker import Marker
from newsexchange.delivery.outbox import apply_result, release, suppressed_addresses
from newsexchange.delivery.personalize import PreparedDigest, Renderer
from newsexchange.delivery.report import SendReport
from newsexchange.errors import DeliveryError
from newsexchange.mail import Mailer, OutgoingMessage, SendResult, Wait

__all__ = ["Thread", "dispatch", "prepare_chunk"]


class Thread(threading.Thread):
    """A thread whose exception is raised again by ``join()`` in the caller, so a database
    error while recording results is not lost in the background."""

    def __init__(self, target: Callable[..., None], *args: Any, **kwargs: Any) -> None:
        super().__init__(daemon=True)
        self._call = (target, args, kwargs)
        self._error: BaseException | None = None

    def run(self) -> None:
        target, args, kwargs = self._call
        try:
            target(*args, **kwargs)
        except BaseException as exc:
            self._error = exc

    def join(self, timeout: float | None = None) -> None:
        super().join(timeout)
        if self._error is not None:
            raise self._error


def prepare_chunk(
    db: Database,
    mailer: Mailer,
    digest_id: int,
    ids: Sequence[int],
    *,
    report: SendReport,
    renderer: Renderer,
) -> tuple[list[Delivery], list[OutgoingMessage]]:
    """Load a chunk, drop (and mark) suppressed rows, personalize the rest.

    The database is held only to read and to mark suppressed rows; personalizing happens
    outside any transaction (on SQLite every transaction takes the write lock, and the
    mailer's threads need it to record each accepted message)."""
    raw = not mailer.personalizes
    with db.session() as s:
        digest = s.get(Digest, digest_id)
        assert digest is not None
        rows = queries.by_ids(s, ids)
        names = queries.contact_names(s, [d.contact_id for d in rows if d.contact_id])
        by_list: dict[str, list[Delivery]] = {}
        for d in rows:
            by_list.setdefault(d.list_id, []).append(d)
        todo: list[tuple[PreparedDigest, Delivery]] = []
        for list_id, group in by_list.items():
            blocked = suppressed_addresses(s, [d.email for d in group], list_id)
            for d in group:
                if d.email.lower() in blocked:
                    d.status = "suppressed"
                    d.claimed_by = None
                    d.claimed_at = None
                    report.skipped_suppressed += 1
                    continue
                todo.append((renderer.get(s, digest, list_id, d.language), d))
    outgoing = [
        prepared.personalize(d, names.get(d.contact_id or -1), raw=raw) for prepared, d in todo
    ]
    return [d for _p, d in todo], outgoing


def dispatch(
    db: Database,
    mailer: Mailer,
    sending: list[Delivery],
    outgoing: list[OutgoingMessage],
    *,
    now: datetime,
    report: SendReport,
    pacer: Pacer | None = None,
) -> None:
    """Pace (unless the caller booked the chunk already, ``pacer`` None), send one prepared
    chunk, record every outcome."""
    if not outgoing:
        return
    if pacer is not None:
        pacer.wait(len(outgoing))
    marker = Marker(db, now)
    try:
        _send_and_record(db, mailer, sending, outgoing, now=now, report=report, marker=marker)
    finally:
        marker.close()


def _send_and_record(
    db: Database,
    mailer: Mailer,
    sending: list[Delivery],
    outgoing: list[OutgoingMessage],
    *,
    now: datetime,
    report: SendReport,
    marker: Marker,
) -> None:
    def on_sent(index: int, result: SendResult) -> Wait | None:
        # Called by the backend the moment the server said "250": recorded at once (group
        # commit, see Marker), so a crash now cannot make us send it again. With the
        # wait returned, the unavoidable window is one message per connection.
        if result.ok:
            return marker.mark(sending[index].id, result.provider_message_id)
        return None

    try:
        results = mailer.send(outgoing, on_sent=on_sent)  # ignored unless reports_each
    except DeliveryError as exc:
        marker.close()
        report.error = str(exc)
        marked = marker.marked
        report.sent += len(marked)  # accepted before the backend failed: sent, and said so
        release(db, [d.id for d in sending if d.id not in marked], now=now, error=str(exc))
        return
    marker.close()  # every accepted message is committed before the rest is recorded
    marked = marker.marked
    if len(marked) == len(sending) and all(r.ok for r in results):
        report.sent += len(sending)  # all accepted and recorded: nothing more to write
        return
    with db.session() as s:
        pending_ids = [d.id for d in sending if d.id not in marked]
        fresh = {d.id: d for d in queries.by_ids(s, pending_ids)}
        for d, result in zip(sending, results, strict=True):
            if d.id in marked:
                report.sent += 1
            else:
                apply_result(s, fresh[d.id], result, now=now, report=report)
