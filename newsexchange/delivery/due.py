"""Which digests the send step works on: approved or already sending, with enough items."""

from __future__ import annotations

import logging

from newsexchange.config import Config
from newsexchange.db import Digest, Session
from newsexchange.db.queries import deliveries as queries
from newsexchange.digest.sendable import included_count, refusal
from newsexchange.digest.states import SENDABLE, DigestState
from newsexchange.errors import DeliveryError, DigestNotFound

__all__ = ["digests_to_send", "too_few"]

# Named as before the move (delivery/send.py): the "logger" field of these lines is unchanged.
log = logging.getLogger("newsexchange.delivery.send")


def too_few(config: Config, d: Digest) -> str | None:
    """Why this digest may not be sent for having too few items (digest/sendable.py): counted
    in the frozen content that would be mailed, else in its entries (pure)."""
    items = (d.frozen or {}).get("items") if isinstance(d.frozen, dict) else None
    if isinstance(items, list):
        count = len(items)
    else:
        count = included_count((e.included, e.dropped) for e in d.entries)
    return refusal(count, config.exchange(d.exchange_id), d.id)


def digests_to_send(session: Session, config: Config, digest_id: int | None) -> list[Digest]:
    """The one digest asked for (refused with the reason when it cannot be sent), or every
    sendable one (those with too few items left out, with a warning)."""
    if digest_id is not None:
        d = session.get(Digest, digest_id)
        if d is None:
            raise DigestNotFound(digest_id)
        if d.state not in (*SENDABLE, DigestState.SENT):
            raise DeliveryError(
                f"digest {digest_id} is {d.state}; only an approved digest can be sent "
                "(approve it first: newsexchange approve ID)"
            )
        why = too_few(config, d) if d.state != DigestState.SENT else None
        if why is not None:
            raise DeliveryError(why)
        return [d]
    out = []
    for d in queries.digests_in(session, SENDABLE):
        why = too_few(config, d)
        if why is not None:
            log.warning("digest not sent", extra={"digest": d.id, "reason": why})
            continue
        out.append(d)
    return out
