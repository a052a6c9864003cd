"""``newsexchange fetch`` and ``newsexchange items``: collect the sources, list what came in."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from newsexchange.commands import Context, add_common, db_int, to_json
from newsexchange.errors import ConfigError

if TYPE_CHECKING:
    from newsexchange.db import Item
    from newsexchange.ingest import SourceOutcome


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "fetch",
        help="fetch the due sources and store their items",
        description="Fetch every due source (sources resting after failures wait unless --all "
        "or --source) and store new and changed items. Exit 1 if any source failed.",
    )
    add_common(p)
    p.add_argument(
        "--source",
        action="append",
        metavar="ID",
        dest="sources",
        help="fetch only this source (repeatable); fetched even while it rests after failures",
    )
    p.add_argument("--all", action="store_true", help="also fetch sources resting after failures")
    p.set_defaults(handler=fetch)

    p = sub.add_parser("items", help="list stored items, newest first")
    add_common(p)
    p.add_argument("--source", metavar="ID", help="only this source's items")
    p.add_argument("--region", metavar="R", help="only this region's items")
    p.add_argument("--limit", type=db_int, default=20, metavar="N", help="at most N (default 20)")
    p.set_defaults(handler=items)


def fetch(ctx: Context) -> int:
    from newsexchange.ingest import run_fetch

    cfg = ctx.config
    now = ctx.now()
    ids = ctx.args.sources or None
    if ids:
        for sid in ids:
            cfg.source(sid)  # unknown id → ConfigError, exit 2, before anything runs
    if ctx.interactive:
        report = _fetch_with_progress(ctx, ids)
    else:
        report = run_fetch(ctx.db, cfg, now=now, source_ids=ids, force=ctx.args.all)
    data = report.to_json()

    def text() -> str:
        lines = [
            f"{data['sources']} sources: {data['ok']} fetched, "
            f"{data['not_modified']} not modified, {data['failed']} failed, "
            f"{data['skipped']} resting; {data['new_items']} new items, "
            f"{data['updated_items']} updated ({data['elapsed_seconds']:.1f} s)"
        ]
        for r in data["results"]:
            if r["status"] == "failed":
                status = f" [HTTP {r['http_status']}]" if r.get("http_status") else ""
                lines.append(f"  FAILED {r['source']}{status}: {r['error']}")
            elif r["status"] == "skipped":
                lines.append(
                    f"  resting {r['source']} until {r.get('next_attempt_at')} "
                    f"(last error: {r.get('error')})"
                )
            elif r.get("problem"):
                lines.append(f"  note {r['source']}: {r['problem']}")
            if r.get("moved_to"):
                lines.append(f"  moved {r['source']}: now {r['moved_to']}")
        return "\n".join(lines)

    ctx.emit(data, text)
    return 1 if report.failed else 0


def _fetch_with_progress(ctx: Context, ids: list[str] | None) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from newsexchange.ingest import run_fetch

    with Progress(
        TextColumn("fetching"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        transient=True,
        console=_stderr_console(),
    ) as bar:
        task = bar.add_task("", total=None)

        def progress(outcome: SourceOutcome, done: int, total: int) -> None:
            bar.update(task, completed=done, total=total, description=outcome.source)

        return run_fetch(
            ctx.db,
            ctx.config,
            now=ctx.now(),
            source_ids=ids,
            force=ctx.args.all,
            progress=progress,
        )


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(file=sys.stderr)


def items(ctx: Context) -> int:
    from newsexchange.db.queries.items import latest_items
    from newsexchange.db.queries.sources import source_titles

    cfg = ctx.config
    if ctx.args.source:
        cfg.source(ctx.args.source)
    if ctx.args.region and ctx.args.region not in cfg.regions:
        raise ConfigError(
            f"unknown region {ctx.args.region!r} (expected one of: {', '.join(cfg.regions)})"
        )
    if ctx.args.limit < 1:
        raise ConfigError("--limit must be at least 1")
    if ctx.json:
        _stream_json(ctx)
        return 0
    with ctx.db.session() as s:
        rows = latest_items(
            s, limit=ctx.args.limit, source_id=ctx.args.source, region=ctx.args.region
        )
        names = {src.id: src.display_name for src in cfg.sources}
        titles = source_titles(s)
        out = [_item_json(it) for it in rows]
    data = {"ok": True, "count": len(out), "items": out}
    tz = cfg.tz

    def text() -> str:
        if not out:
            return "no items stored yet (run: newsexchange fetch)"
        lines = []
        for it in rows:
            when = it.published_at.astimezone(cfg.region_tz(it.region) if it.region else tz)
            flag = "" if it.date_from_feed else " (first seen)"
            lang = it.language
            if it.language_mismatch:
                lang += f"≠{it.detected_language}"
            src = names.get(it.source_id) or titles.get(it.source_id) or it.source_id
            lines.append(f"{when:%Y-%m-%d %H:%M}{flag}  [{src}, {lang}]  {it.title}")
            if it.link:
                lines.append(f"    {it.link}")
        return "\n".join(lines)

    ctx.emit(data, text)
    return 0


def _stream_json(ctx: Context) -> None:
    """``items --json`` written item by item as the database hands them over, so memory
    stays flat at any --limit (issue 16); the bytes are those of ``ctx.emit`` on the whole
    listing."""
    from newsexchange.db.queries.listing import stream_items

    out = sys.stdout
    with ctx.db.session() as s:
        count, found = stream_items(
            s, limit=ctx.args.limit, source_id=ctx.args.source, region=ctx.args.region
        )
        out.write(f'{{"ok": true, "count": {count}, "items": [')
        for i, it in enumerate(found):
            out.write((", " if i else "") + to_json(_item_json(it)))
        out.write("]}\n")


def _item_json(it: Item) -> dict[str, Any]:
    return {
        "id": it.id,
        "source": it.source_id,
        "region": it.region,
        "category": it.category,
        "language": it.language,
        "detected_language": it.detected_language,
        "language_mismatch": it.language_mismatch,
        "title": it.title,
        "link": it.link,
        "summary": it.summary_text,
        "published_at": it.published_at,
        "date_from_feed": it.date_from_feed,
        "first_seen_at": it.first_seen_at,
        "updated_at": it.updated_at,
        "story_group": it.story_group_id,
        "translations": [
            {
                "language": t.language,
                "title": t.title,
                "summary": t.summary_text,
                "provider": t.provider,
                "status": t.status,
                "error": t.error,
            }
            for t in sorted(it.translations, key=lambda t: t.language)
        ],
    }
