"""Delivery throughput: one digest to 10,000 recipients over SMTP to a local sink.

    .venv/bin/python benchmarks/send.py [--recipients 10000] [--connections 4]

The sink is a minimal asyncio SMTP server in a separate process (so it does not share the
GIL with the sender) that accepts everything and counts; its own ceiling is measured first
with a raw pipelined client over the same number of connections, so the figure for
``run_send`` can be read against it. Every message is personalized (To, Message-ID, its
own signed unsubscribe URL in List-Unsubscribe and both bodies) from one rendering.
Prints messages/s and the peak RSS of the sending process.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import resource
import socket
import sys
import tempfile
import textwrap
import threading
import time
from datetime import UTC, date, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


# -- the sink ---------------------------------------------------------------------------------


def _sink(port: int, counter: mp.Value, ready: mp.Event) -> None:  # type: ignore[type-arg]
    sizes: list[int] = []

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 sink ESMTP\r\n")
        while True:
            line = await reader.readline()
            if not line:
                break
            cmd = line[:4].upper()
            if cmd == b"EHLO":
                writer.write(b"250-sink\r\n250-8BITMIME\r\n250 PIPELINING\r\n")
            elif cmd == b"DATA":
                writer.write(b"354 go ahead\r\n")
                await writer.drain()
                # The whole message in one read up to the terminating dot: line-by-line
                # reading made the sink, not the sender, the bottleneck.
                data = await reader.readuntil(b"\r\n.\r\n")
                with counter.get_lock():
                    counter.value += 1
                    sizes.append(len(data))
                writer.write(b"250 OK queued\r\n")
            elif cmd == b"QUIT":
                writer.write(b"221 bye\r\n")
                await writer.drain()
                break
            else:  # HELO, MAIL, RCPT, RSET, NOOP
                writer.write(b"250 OK\r\n")
            await writer.drain()
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(session, "127.0.0.1", port, limit=64 * 2**20)
        ready.set()
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sink_ceiling(port: int, n: int, connections: int, body: bytes) -> float:
    """Messages/s the sink takes from the leanest client: raw sockets, one write per message
    (pipelined MAIL/RCPT/DATA and the body), no rendering, no database."""

    def worker(k: int) -> None:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            f = sock.makefile("rb")
            f.readline()
            sock.sendall(b"EHLO bench\r\n")
            while f.readline()[3:4] == b"-":
                pass
            for i in range(k):
                sock.sendall(
                    b"MAIL FROM:<news@example.org>\r\nRCPT TO:<x%d@example.org>\r\nDATA\r\n" % i
                    + body
                    + b".\r\n"
                )
                for _ in range(4):  # MAIL, RCPT, DATA (354), end of data
                    f.readline()

    per = n // connections
    threads = [threading.Thread(target=worker, args=(per,)) for _ in range(connections)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return per * connections / (time.perf_counter() - t0)


# -- the set-up ---------------------------------------------------------------------------------


def write_config(
    folder: Path,
    port: int,
    *,
    connections: int | None = None,
    database_url: str = "sqlite:///var/bench.db",
) -> Path:
    """The benchmark's ``feeds.yaml`` in ``folder``: SMTP to the sink on ``port``, the rate
    limit lifted, ``connections`` left at the default when None."""
    smtp = f"{{host: 127.0.0.1, port: {port}" + (
        f", connections: {connections}}}" if connections is not None else "}"
    )
    cfg_path = folder / "feeds.yaml"
    cfg_path.write_text(
        textwrap.dedent(
            f"""\
            database_url: {database_url}
            public_url: https://news.example.org
            mail:
              backend: smtp
              from: "Обмен новостями Йоэнсуу–Петрозаводск <news@example.org>"
              rate_per_second: 1000000
              smtp: {smtp}
            regions:
              joensuu: {{name: Joensuu, language: fi}}
              petrozavodsk: {{name: Petrozavodsk, language: ru, timezone: Europe/Moscow}}
            sources:
              - {{id: yle, region: joensuu, url: "https://example.fi/rss", language: fi}}
            lists:
              media: {{name: Petrozavodsk media, language: ru}}
            exchanges:
              - {{id: fi-ru, name: Новости Йоэнсуу, from: [joensuu], to: petrozavodsk,
                  language: ru, editors: [editor@example.fi], lists: [media]}}
            service:
              dispatch_minutes: 600
              approvals_minutes: 600
              alerts_minutes: 600
            """
        ),
        encoding="utf-8",
    )
    return cfg_path


def seed(cfg: object, db: object, recipients: int, *, enqueue: bool = True, items: int = 20) -> int:
    """An approved digest of ``items`` translated items to ``recipients`` contacts; returns
    its id."""
    from sqlalchemy import insert, select

    from newsexchange.db import (
        Contact,
        Digest,
        DigestItem,
        Item,
        ListMembership,
        Source,
        Translation,
    )
    from newsexchange.delivery.outbox import enqueue_deliveries

    now = datetime(2026, 11, 16, 7, 0, tzinfo=UTC)
    with db.session() as s:  # type: ignore[attr-defined]
        s.add(Source(id="yle", config_url="https://example.fi/rss", url="https://example.fi/rss"))
        s.flush()
        digest = Digest(
            exchange_id="fi-ru",
            period_start=date(2026, 11, 1),
            period_end=date(2026, 11, 15),
            language="ru",
            state="approved",
            token="bench",
        )
        for i in range(items):  # a full digest: 20 translated items with summaries
            item = Item(
                source_id="yle",
                identity=f"g{i}",
                title=f"Uutinen {i}",
                summary_html="<p>" + "Joensuun kaupunki tiedottaa. " * 12 + "</p>",
                summary_text="Joensuun kaupunki tiedottaa. " * 12,
                link=f"https://example.fi/{i}",
                region="joensuu",
                language="fi",
                published_at=datetime(2026, 11, 2, 9, tzinfo=UTC),
                content_hash=f"h{i}",
            )
            item.translations.append(
                Translation(
                    language="ru",
                    title=f"Новость номер {i} из Йоэнсуу",
                    summary_html="<p>" + "Город Йоэнсуу сообщает о новостях. " * 12 + "</p>",
                    summary_text="Город Йоэнсуу сообщает о новостях. " * 12,
                    status="done",
                    provider="libre",
                )
            )
            s.add(item)
            s.flush()
            digest.entries.append(DigestItem(item_id=item.id, position=i))
        s.add(digest)
        s.execute(
            insert(Contact),
            [
                {"email": f"j{i:05d}@example.org", "name": f"Журналист {i}", "language": "ru"}
                for i in range(recipients)
            ],
        )
        ids = s.scalars(select(Contact.id)).all()
        s.execute(insert(ListMembership), [{"contact_id": c, "list_id": "media"} for c in ids])
        s.flush()
        if enqueue:
            enqueue_deliveries(s, cfg, digest, now=now)  # type: ignore[arg-type]
        digest_id = int(digest.id)
    return digest_id


def setup(folder: Path, port: int, recipients: int, connections: int) -> tuple[object, object, int]:
    from newsexchange.config import database_url, load_config
    from newsexchange.db import Database

    cfg_path = write_config(folder, port, connections=connections)
    cfg = load_config(cfg_path, env={"NEWSEXCHANGE_SECRET_KEY": "bench"})
    db = Database(database_url(cfg))
    return cfg, db, seed(cfg, db, recipients)


def message_size(cfg: object, db: object, digest_id: int) -> int:
    """The size of one personalized message of this digest."""
    from sqlalchemy import select

    from newsexchange.db import Delivery, Digest
    from newsexchange.delivery.send import Renderer

    with db.session() as s:  # type: ignore[attr-defined]
        digest = s.get(Digest, digest_id)
        row = s.scalars(select(Delivery).limit(1)).one()
        prepared = Renderer(cfg, now=datetime.now(UTC)).get(s, digest, "media", "ru")  # type: ignore[arg-type]
        return len(prepared.personalize(row, "Журналист").raw or b"")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--recipients", type=int, default=10_000)
    ap.add_argument("--connections", type=int, default=4, help="mail.smtp.connections")
    args = ap.parse_args()

    port = free_port()
    counter = mp.Value("l", 0)
    ready = mp.Event()
    sink = mp.Process(target=_sink, args=(port, counter, ready), daemon=True)
    sink.start()
    ready.wait(10)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            from newsexchange.delivery.send import run_send

            cfg, db, digest_id = setup(Path(tmp), port, args.recipients, args.connections)
            size = message_size(cfg, db, digest_id)
            sample = b"From: a@example.org\r\nSubject: x\r\n\r\n" + b"x" * size + b"\r\n"
            ceiling = sink_ceiling(port, 2000, args.connections, sample)
            counter.value = 0
            rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            t0 = time.perf_counter()
            cpu0 = time.process_time()
            report = run_send(
                db,  # type: ignore[arg-type]
                cfg,  # type: ignore[arg-type]
                now=datetime.now(UTC),
                digest_id=digest_id,
            )
            elapsed = time.perf_counter() - t0
            cpu = time.process_time() - cpu0
            rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            db.dispose()  # type: ignore[attr-defined]
    finally:
        sink.terminate()
    rate = report.sent / elapsed
    print(f"recipients:            {args.recipients}")
    print(f"SMTP connections:      {args.connections}")
    print(f"message size:          {size / 1024:.0f} kB (20 items, Cyrillic, HTML + text)")
    print(f"sink ceiling:          {ceiling:,.0f} msg/s (raw pipelined client, same size)")
    print(f"sent / received:       {report.sent} / {counter.value}")
    print(f"elapsed:               {elapsed:.2f} s")
    print(f"throughput:            {rate:,.0f} personalized msg/s  (target >= 500)")
    print(
        f"sender CPU:            {cpu:.2f} s ({cpu / elapsed:.0%} of one core; the sink and "
        "the machine's other load share the rest)"
    )
    print(
        f"peak RSS:              {rss_after / 1024:.0f} MiB (before send {rss_before / 1024:.0f} MiB)"
    )
    ok = report.ok and report.sent == args.recipients == counter.value
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
