"""A digest's sending cut into shards, so that many workers share one send.

:func:`plan_shards` is the first half of a send on a work queue: every sendable digest has its
deliveries queued (an approved one moves to ``sending``, with one row per recipient, in the
worker — never in the editor's request), then its open deliveries are cut into shards of
fixed id bounds (``SHARD_SIZE`` ids each, counted from the digest's first delivery, so a
shard's bounds never move while its rows progress). Each shard is then sent by
``run_send(digest_id=…, id_range=(first, last))`` — on whichever worker takes it; two
workers given the same shard split its rows (claims), never send one twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from newsexchange.config import Config
from newsexchange.db import Database, Digest
from newsexchange.db.queries import deliveries as queries
from newsexchange.delivery.due import digests_to_send
from newsexchange.delivery.outbox import enqueue_deliveries
from newsexchange.digest.states import DigestState, move

__all__ = ["SHARD_SIZE", "Shard", "plan_shards"]

#: Deliveries per shard: big enough that a shard's fixed costs (rendering the digest once,
#: an SMTP connection) are small, small enough that two workers share a 20,000-list evenly.
SHARD_SIZE = 1000


@dataclass(frozen=True)
class Shard:
    digest_id: int
    first: int  # delivery ids, inclusive
    last: int
    open: int  # deliveries not finished when planned

    @property
    def key(self) -> str:
        """The shard's name, stable across plans (the queue's lock for it)."""
        return f"send:{self.digest_id}:{self.first}"

    @property
    def id_range(self) -> tuple[int, int]:
        return (self.first, self.last)


def plan_shards(
    db: Database, config: Config, *, now: datetime, size: int = SHARD_SIZE
) -> list[Shard]:
    """Queue the deliveries of every approved digest, then list the shards with work left."""
    with db.session() as s:
        digests = [d.id for d in digests_to_send(s, config, None)]
    shards: list[Shard] = []
    for did in digests:
        with db.session() as s:
            digest = s.get(Digest, did)
            if digest is None:
                continue
            if digest.state == DigestState.APPROVED:
                enqueue_deliveries(s, config, digest, now=now)
                move(digest, "start_send")
        with db.session() as s:
            buckets = queries.open_buckets(s, did, size)
        shards.extend(Shard(did, first, first + size - 1, n) for first, n in buckets)
    return shards
