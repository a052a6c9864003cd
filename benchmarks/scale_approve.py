"""Approval of a digest whose list has n contacts, through the web app's approval route, and
the queueing of its deliveries that the worker then does (issue 13).

    .venv/bin/python benchmarks/scale_approve.py [--contacts 100000] [--postgres]

A fresh database (a SQLite file in a temporary directory; with ``--postgres`` a database
``nx_bench_<random>`` created on 127.0.0.1:5432 through db ``test`` and dropped after) gets
one digest awaiting approval and n contacts on its list, seeded with bulk inserts. The
editor's request is the real route: GET the approve link's page, then POST its form
(Starlette's TestClient, so no socket, but every middleware and the route's own code).
Then ``plan_shards`` (the worker's side) queues the deliveries. Prints seconds for each;
the target is under 1 s for the request at n = 100,000.
"""

from __future__ import annotations

import argparse
import re
import secrets
import sys
import tempfile
import textwrap
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

EDITOR = "anna@example.fi"
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

CONFIG = """\
timezone: Europe/Helsinki
database_url: {url}
public_url: https://news.example.org
mail:
  backend: outbox
  from: "Exchange <news@example.org>"
  outbox_dir: var/outbox
regions:
  joensuu:      {{name: Joensuu, language: fi, timezone: Europe/Helsinki}}
  petrozavodsk: {{name: Petrozavodsk, language: ru, timezone: Europe/Moscow}}
sources:
  - {{id: jns, region: joensuu, url: "https://example.fi/rss", language: fi}}
lists:
  ptz-media: {{language: ru}}
exchanges:
  - id: jns-to-ptz
    name: Joensuu news
    from: [joensuu]
    to: petrozavodsk
    language: ru
    editors: [{{email: {editor}, language: en}}]
    lists: [ptz-media]
"""


def _seed(db: Any, n: int, now: datetime) -> int:
    """A digest of four translated items awaiting approval, n contacts on its list (bulk)."""
    from sqlalchemy import insert, select

    from newsexchange.approval.tokens import new_reply_token
    from newsexchange.db import (
        Contact,
        Digest,
        DigestItem,
        Item,
        ListMembership,
        Source,
        Translation,
    )

    with db.session() as s:
        s.add(Source(id="jns", config_url="https://example.fi/rss", url="https://example.fi/rss"))
        digest = Digest(
            exchange_id="jns-to-ptz",
            period_start=date(2026, 11, 1),
            period_end=date(2026, 11, 15),
            language="ru",
            state="awaiting_approval",
            version=1,
            token=new_reply_token(),
            created_at=now,
            built_at=now,
        )
        s.add(digest)
        s.flush()
        for i in range(1, 5):
            item = Item(
                source_id="jns",
                identity=f"{digest.id}-{i}",
                link=f"https://example.fi/news/{i}",
                title=f"Uutinen {i}",
                summary_text=f"Tiivistelmä {i}",
                summary_html=f"<p>Tiivistelmä {i}</p>",
                region="joensuu",
                language="fi",
                published_at=now - timedelta(days=i),
                content_hash=f"h{i}",
            )
            s.add(item)
            s.flush()
            s.add(
                Translation(
                    item_id=item.id,
                    language="ru",
                    title=f"Новость {i}",
                    summary_text=f"Резюме {i}",
                    summary_html=f"<p>Резюме {i}</p>",
                    provider="libre",
                    status="done",
                )
            )
            s.add(DigestItem(digest_id=digest.id, item_id=item.id, position=i, section="news"))
        digest_id = digest.id
        s.execute(
            insert(Contact.__table__),  # type: ignore[arg-type]
            [
                {
                    "email": f"journalist{c:06d}@example.ru",
                    "name": f"J {c}",
                    "outlet": "",
                    "notes": "",
                    "language": "ru",
                    "created_at": now,
                    "updated_at": now,
                }
                for c in range(n)
            ],
        )
        ids = list(s.scalars(select(Contact.id)))
        s.execute(
            insert(ListMembership.__table__),  # type: ignore[arg-type]
            [{"contact_id": cid, "list_id": "ptz-media", "created_at": now} for cid in ids],
        )
    return int(digest_id)


def run(url: str, n: int) -> dict[str, Any]:
    """Seed ``url`` (an empty database) with a digest for ``n`` contacts; time the editor's
    approval through the route and the worker's queueing. Returns the figures."""
    from starlette.testclient import TestClient

    from newsexchange.approval.tokens import make_action_token
    from newsexchange.config.load import load_config
    from newsexchange.db import Database
    from newsexchange.db.queries import deliveries as queries
    from newsexchange.delivery.shards import plan_shards
    from newsexchange.web.app import create_app

    now = datetime.now(UTC).replace(microsecond=0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "feeds.yaml"
        path.write_text(CONFIG.format(url=url, editor=EDITOR))
        env = {"NEWSEXCHANGE_SECRET_KEY": "bench-secret", "NEWSEXCHANGE_DATABASE_URL": url}
        config = load_config(path, env=env)
        db = Database(url)
        try:
            t0 = time.perf_counter()
            digest_id = _seed(db, n, now)
            seeded = time.perf_counter() - t0
            token = make_action_token(
                config,
                digest_id=digest_id,
                version=1,
                editor=EDITOR,
                action="approve",
                now=now,
                valid_days=7,
            )
            client = TestClient(
                create_app(config, db, clock=lambda: now), base_url=config.public_url
            )
            page = client.get(f"/approve/{token}")
            assert page.status_code == 200, page.text[:500]
            fields = dict(re.findall(r'name="([^"]+)" value="([^"]*)"', page.text))
            t0 = time.perf_counter()
            done = client.post(f"/approve/{token}", data=fields)
            approve_s = time.perf_counter() - t0
            assert done.status_code == 200 and "Approved" in done.text, done.text[:500]
            announced = re.search(r"(\d+) deliveries queued", done.text)
            t0 = time.perf_counter()
            shards = plan_shards(db, config, now=now)
            enqueue_s = time.perf_counter() - t0
            with db.session() as s:
                rows = queries.count_for_digest(s, digest_id)
        finally:
            db.dispose()
    return {
        "contacts": n,
        "seed_s": round(seeded, 2),
        "approve_request_s": round(approve_s, 3),
        "announced": int(announced.group(1)) if announced else None,
        "enqueue_in_worker_s": round(enqueue_s, 2),
        "deliveries": rows,
        "shards": len(shards),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--postgres", action="store_true")
    args = parser.parse_args()
    if not args.postgres:
        with tempfile.TemporaryDirectory() as tmp:
            result = run(f"sqlite:///{tmp}/bench.db", args.contacts)
    else:
        from sqlalchemy import create_engine, text

        name = f"nx_bench_{secrets.token_hex(4)}"
        admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            result = run(PG_ADMIN.rsplit("/", 1)[0] + f"/{name}", args.contacts)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
    print(
        textwrap.dedent(f"""\
        backend              {"postgresql" if args.postgres else "sqlite"}
        contacts             {result["contacts"]}
        seed                 {result["seed_s"]} s
        approval request     {result["approve_request_s"]} s  (the page announced {result["announced"]})
        enqueue (worker)     {result["enqueue_in_worker_s"]} s  ({result["deliveries"]} deliveries, {result["shards"]} shards)""")
    )


if __name__ == "__main__":
    main()
