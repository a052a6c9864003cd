"""``newsexchange impact ID [--json]`` (one digest: pick-ups looked for first, then the
report) and ``newsexchange impact --exchange ID --from DATE --to DATE [--format csv|json]``
(one row per digest sent in the period, for a funder's report). docs/impact.md defines the
counts. An unknown digest is bad usage like everywhere else (exit 2, ``DigestNotFound``);
bad or reversed dates too (exit 2)."""

from __future__ import annotations

import argparse
import io
import sys
from datetime import date
from typing import Any

from newsexchange.commands import Context, add_common, db_int, to_json


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "impact",
        help="what a digest achieved: delivered, clicked, picked up by the receiving media",
    )
    add_common(p)
    p.add_argument("digest_id", metavar="DIGEST_ID", type=db_int, nargs="?", help="one digest")
    p.add_argument("--exchange", metavar="ID", help="every digest of this exchange in a period")
    p.add_argument("--from", dest="date_from", metavar="DATE", type=_date, help="first day")
    p.add_argument("--to", dest="date_to", metavar="DATE", type=_date, help="last day")
    p.add_argument(
        "--format", dest="fmt", choices=("text", "csv", "json"), default=None, help="period output"
    )
    p.set_defaults(handler=impact, parser=p)


def impact(ctx: Context) -> int:
    a = ctx.args
    parser: argparse.ArgumentParser = a.parser
    if a.digest_id is not None:
        if a.exchange or a.date_from or a.date_to or a.fmt:
            parser.error("give a DIGEST_ID, or --exchange with --from and --to, not both")
        return _one(ctx, a.digest_id)
    if not (a.exchange and a.date_from and a.date_to):
        parser.error("give a DIGEST_ID, or --exchange ID --from DATE --to DATE")
    if a.date_from > a.date_to:
        parser.error(f"--from {a.date_from} is after --to {a.date_to}")
    return _period(ctx)


def _one(ctx: Context, digest_id: int) -> int:
    from newsexchange.impact.pickups import find_pickups
    from newsexchange.impact.report import digest_impact

    find_pickups(ctx.db, ctx.config, now=ctx.now(), digest_id=digest_id)
    with ctx.db.session() as s:
        data = digest_impact(s, ctx.config, digest_id)

    def text() -> str:
        lines = [
            f"digest {data['digest']} ({data['exchange']}): sent {data['sent']}, "
            f"delivered {data['delivered']}, bounced {data['bounced']}, "
            f"complained {data['complained']}, unsubscribed {data['unsubscribed']}, "
            f"clicks {data['clicks']}"
        ]
        for st in data["stories"]:
            lines.append(f"{st['position']:>3}. {st['title']}  ({st['clicks']} click(s))")
            for p in st["pickups"]:
                lines.append(
                    f"       {p['status']:<9} {p['score']:.2f}  {p['source']}: {p['title']}"
                    f"  {p['published_at'][:10] if p['published_at'] else ''}  {p['url'] or ''}"
                )
        return "\n".join(lines)

    ctx.emit(data, text)
    return 0


def _period(ctx: Context) -> int:
    from newsexchange.impact.report import PERIOD_COLUMNS, period_impact, write_period_csv

    a = ctx.args
    with ctx.db.session() as s:
        rows = period_impact(s, ctx.config, a.exchange, a.date_from, a.date_to)
    fmt = a.fmt or ("json" if ctx.json else "text")
    if fmt == "csv":
        buf = io.StringIO()
        write_period_csv(rows, buf)
        sys.stdout.write(buf.getvalue())
        return 0
    data = {
        "exchange": a.exchange,
        "from": a.date_from.isoformat(),
        "to": a.date_to.isoformat(),
        "digests": rows,
    }
    if fmt == "json":
        sys.stdout.write(to_json(data) + "\n")
        return 0

    def text() -> str:
        head = f"{a.exchange}, {a.date_from} to {a.date_to}: {len(rows)} digest(s) sent"
        cols = [c for c in PERIOD_COLUMNS if c not in ("exchange", "period_end")]
        lines = [head, "  ".join(cols)]
        for r in rows:
            lines.append(
                "  ".join(";".join(r[c]) if c == "outlets" else str(r[c] or 0) for c in cols)
            )
        return "\n".join(lines)

    ctx.emit(data, text)
    return 0
