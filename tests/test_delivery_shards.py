"""A send cut into shards (delivery/shards.py): fixed bounds, every delivery in exactly one
shard, and shards sent separately (as different workers would) mail everyone once."""

from __future__ import annotations

from collections.abc import Callable
from email.utils import parseaddr

from sqlalchemy import select

from newsexchange.config import Config
from newsexchange.db import Database, Delivery, Digest
from newsexchange.delivery.send import run_send
from newsexchange.delivery.shards import plan_shards
from tests.servers import SMTPServer
from tests.test_delivery_support import NOW, delivery_config, seed_digest


def test_shards_cover_every_delivery_once_and_keep_their_bounds(
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
    smtp_server: SMTPServer,
    any_db_url: str,
) -> None:
    cfg = delivery_config(write_config, smtp_port=smtp_server.port, database_url=any_db_url)
    db = db_for(cfg)
    did = seed_digest(db, cfg, 250, enqueue=False)  # approved, nothing queued yet

    shards = plan_shards(db, cfg, now=NOW, size=100)

    with db.session() as s:
        assert s.get(Digest, did).state == "sending"  # type: ignore[union-attr]
        ids = sorted(s.scalars(select(Delivery.id).where(Delivery.digest_id == did)))
    assert len(ids) == 250  # queued by the plan, not by the approval
    assert [sh.open for sh in shards] == [100, 100, 50]
    covered = [i for i in ids if any(sh.first <= i <= sh.last for sh in shards)]
    assert covered == ids
    assert len({sh.key for sh in shards}) == 3

    # The middle shard goes first, alone: the others are untouched, and a new plan keeps the
    # bounds of what is left.
    report = run_send(db, cfg, now=NOW, digest_id=did, id_range=shards[1].id_range)
    assert report.sent == 100
    again = plan_shards(db, cfg, now=NOW, size=100)
    assert [(sh.first, sh.last, sh.open) for sh in again] == [
        (shards[0].first, shards[0].last, 100),
        (shards[2].first, shards[2].last, 50),
    ]
    for sh in again:
        run_send(db, cfg, now=NOW, digest_id=did, id_range=sh.id_range)

    received = [parseaddr(str(m["To"]))[1] for m in smtp_server.messages]
    assert len(received) == len(set(received)) == 250
    assert plan_shards(db, cfg, now=NOW, size=100) == []
    with db.session() as s:
        assert s.get(Digest, did).state == "sent"  # type: ignore[union-attr]
