"""``newsexchange digest build | list | show | edit``: digests at the console.

- ``build EXCHANGE [--period YYYY-MM-DD]`` builds or rebuilds the digest of the period that
  starts on that day (default: the latest period that is due).
- ``list [--exchange X]`` shows every digest with its state.
- ``show ID [--format summary|html|text|eml] [--output FILE]`` shows the items and the audit
  log, or writes exactly what would be mailed.
- ``edit ID [--drop N …] [--pin N …] [--order N,N,…] [--restore ITEM_ID …]`` changes a draft
  by the positions ``show`` prints.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from datetime import UTC, date, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any

from newsexchange.commands import Context, add_common, db_int, to_json
from newsexchange.errors import DigestError, DigestNotFound

if TYPE_CHECKING:
    from newsexchange.db import Digest, Session


def _console_user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # a container user without a passwd entry
        return "unknown"


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a date (expected YYYY-MM-DD, the period's first day)"
        ) from None


def _positions(value: str) -> list[int]:
    try:
        out = [int(v) for v in value.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a list of positions (expected e.g. 3,1,2)"
        ) from None
    if not out or any(p < 1 for p in out):
        raise argparse.ArgumentTypeError(f"{value!r}: positions start at 1")
    return out


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("digest", help="build, list and show digests")
    dsub = p.add_subparsers(dest="digest_command", metavar="ACTION", parser_class=type(p))
    dsub.required = True

    b = dsub.add_parser("build", help="build or rebuild the digest of one exchange and period")
    add_common(b)
    b.add_argument("exchange", metavar="EXCHANGE", help="exchange id from feeds.yaml")
    b.add_argument(
        "--period",
        type=_day,
        metavar="YYYY-MM-DD",
        help="the period's first day (default: the latest period that is due)",
    )
    b.set_defaults(handler=build)

    ls = dsub.add_parser("list", help="every digest with its state")
    add_common(ls)
    ls.add_argument("--exchange", metavar="X", help="only this exchange")
    ls.set_defaults(handler=list_digests)

    sh = dsub.add_parser("show", help="a digest's items and audit log, or what would be mailed")
    add_common(sh)
    sh.add_argument("id", type=db_int, metavar="ID")
    sh.add_argument(
        "--format", choices=["summary", "html", "text", "eml"], default="summary", dest="fmt"
    )
    sh.add_argument("--output", "-o", metavar="FILE", help="write there instead of stdout")
    sh.set_defaults(handler=show)

    ed = dsub.add_parser("edit", help="drop, pin or reorder items of a draft (by position)")
    add_common(ed)
    ed.add_argument("id", type=db_int, metavar="ID")
    ed.add_argument("--drop", type=_positions, action="extend", default=[], metavar="N[,N…]")
    ed.add_argument("--pin", type=_positions, action="extend", default=[], metavar="N[,N…]")
    ed.add_argument("--order", type=_positions, metavar="N,N,…", help="new order of positions")
    ed.add_argument(
        "--restore",
        type=_positions,
        action="extend",
        default=[],
        metavar="ITEM_ID",
        help="bring a left-out item back in (by item id, as build --json lists them)",
    )
    ed.set_defaults(handler=edit)


# -- build -----------------------------------------------------------------------------------


def build(ctx: Context) -> int:
    from newsexchange.digest import build_digest
    from newsexchange.digest.periods import PeriodError
    from newsexchange.digest.render import format_period

    try:
        report = build_digest(
            ctx.db, ctx.config, ctx.args.exchange, period_start=ctx.args.period, now=ctx.now()
        )
    except PeriodError as exc:  # a wrong --period is bad usage (exit 2), not failed work
        if ctx.json:
            sys.stdout.write(to_json({"ok": False, "error": str(exc), "kind": "usage"}) + "\n")
        sys.stderr.write(f"newsexchange: {exc}\n")
        return 2
    data = report.to_json()

    def text() -> str:
        verb = "built" if report.created else ("rebuilt" if report.changed else "unchanged")
        lines = [
            f"digest {report.id} {verb}: {report.exchange}, "
            f"{format_period(report.period.start, report.period.end, 'en')} "
            f"({report.language}, version {report.version}, {report.state})",
            f"  {report.item_count} items: news {report.sections.get('news', 0)}, "
            f"events {report.sections.get('events', 0)}",
        ]
        for it in report.items:
            r = it["reason"]
            pin = " pinned" if r.get("pinned") else ""
            lines.append(
                f"  {it['position']:>3}. [{it['section']}] {it['title'][:70]} — {it['source']} "
                f"(score {it['score']:.2f} = weight {r['weight']} × coverage {r['coverage']} "
                f"× recency {r['recency']}{pin})"
            )
        if report.left_out:
            kept = ""
            if report.left_out_count != len(report.left_out):
                kept = f" ({len(report.left_out)} listed: the best of each reason)"
            lines.append(f"  left out: {report.left_out_count}{kept}")
            for lo in report.left_out:
                lines.append(f"       {lo['reason']:<16} #{lo['item_id']} {lo['title'][:60]}")
        return "\n".join(lines)

    ctx.emit(data, text)
    return 0


# -- list ------------------------------------------------------------------------------------


def list_digests(ctx: Context) -> int:
    from newsexchange.db.queries import digests as queries

    with ctx.db.session() as s:
        if ctx.args.exchange:
            ctx.config.exchange(ctx.args.exchange)  # unknown id: a config error, exit 2
        counts = queries.included_counts(s)
        rows: list[dict[str, Any]] = [
            {
                "id": d.id,
                "exchange": d.exchange_id,
                "period": {"start": d.period_start.isoformat(), "end": d.period_end.isoformat()},
                "language": d.language,
                "state": d.state,
                "version": d.version,
                "item_count": counts.get(d.id, 0),
                "subject": d.subject,
                "built_at": d.built_at,
                "approved_at": d.approved_at,
                "sent_at": d.sent_at,
            }
            for d in queries.digests(s, ctx.args.exchange)
        ]

    def text() -> str:
        if not rows:
            return "no digests yet (build one with: newsexchange digest build EXCHANGE)"
        out = [f"{'ID':>4}  {'EXCHANGE':<28} {'PERIOD':<23} {'LANG':<4} {'STATE':<17} V  ITEMS"]
        for r in rows:
            period = f"{r['period']['start']}…{r['period']['end']}"
            out.append(
                f"{r['id']:>4}  {r['exchange']:<28} {period:<23} {r['language']:<4} "
                f"{r['state']:<17} {r['version']:<2} {r['item_count']:>5}"
            )
        return "\n".join(out)

    ctx.emit({"ok": True, "digests": rows}, text)
    return 0


# -- show ------------------------------------------------------------------------------------


def _entries_json(d: Digest) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(included items, left-out items) of ``d`` as ``show --json`` lists them."""
    from newsexchange.digest import item_text, left_out_text

    entries = sorted(d.entries, key=lambda e: (not e.included, e.position, e.item_id))
    items = []
    left_out = []
    for e in entries:
        title = item_text(e.item, d.language)[0]
        reason = {k: v for k, v in e.reason.items() if k != "text"}
        if e.included:
            items.append(
                {
                    "position": e.position,
                    "section": e.section,
                    "item_id": e.item_id,
                    "title": title,
                    "source": e.item.source_id,
                    "score": round(e.score, 3),
                    "pinned": e.pinned,
                    "untranslated": e.untranslated,
                    "reason": reason,
                }
            )
        else:
            code = reason.get("left_out", "dropped" if e.dropped else "left_out")
            left_out.append(
                {
                    "item_id": e.item_id,
                    "title": e.item.title,
                    "source": e.item.source_id,
                    "reason": code,
                    "why": left_out_text(code),
                }
            )
    return items, left_out


def _approvals_json(s: Session, d: Digest) -> list[dict[str, Any]]:
    from newsexchange.db.queries import digests as queries

    return [
        {
            "editor": a.editor,
            "decision": a.decision,
            "version": a.digest_version,
            "channel": a.channel,
            "comment": a.comment,
            "at": a.created_at,
        }
        for a in queries.approvals_of(s, d.id)
    ]


def _audit_json(s: Session, d: Digest) -> list[dict[str, Any]]:
    from newsexchange.db.queries import digests as queries

    return [
        {
            "at": a.at,
            "actor": a.actor,
            "action": a.action,
            "channel": a.channel,
            "address": a.address,
            "detail": a.detail,
        }
        for a in queries.audit_of(s, d.id)
    ]


def _summary(ctx: Context, s: Session, d: Digest) -> dict[str, Any]:
    items, left_out = _entries_json(d)
    approvals = _approvals_json(s, d)
    audit = _audit_json(s, d)
    return {
        "ok": True,
        "id": d.id,
        "exchange": d.exchange_id,
        "period": {"start": d.period_start.isoformat(), "end": d.period_end.isoformat()},
        "language": d.language,
        "state": d.state,
        "version": d.version,
        "subject": d.subject,
        "built_at": d.built_at,
        "approved_at": d.approved_at,
        "sent_at": d.sent_at,
        "item_count": len(items),
        "items": items,
        "left_out": left_out,
        "approvals": approvals,
        "audit": audit,
    }


def _summary_text(data: dict[str, Any], tz: tzinfo = UTC) -> str:
    """The summary for a person: audit times in the exchange's time zone (``tz``), each
    entry with its reason or comment (the JSON keeps UTC, for scripts)."""
    lines = [
        f"digest {data['id']}: {data['subject']}",
        f"  exchange {data['exchange']}, {data['period']['start']}…{data['period']['end']}, "
        f"{data['language']}, state {data['state']}, version {data['version']}",
        f"  items ({data['item_count']}):",
    ]
    for it in data["items"]:
        flags = "".join(
            [" [pinned]" if it["pinned"] else "", " [untranslated]" if it["untranslated"] else ""]
        )
        lines.append(
            f"  {it['position']:>3}. [{it['section']}] {it['title'][:70]} — {it['source']} "
            f"(score {it['score']:.2f}){flags}"
        )
    if data["left_out"]:
        lines.append(f"  left out ({len(data['left_out'])}):")
        for lo in data["left_out"]:
            lines.append(f"       {lo['reason']:<16} #{lo['item_id']} {lo['title'][:60]}")
    lines.append("  audit log:" if data["audit"] else "  audit log: (empty)")
    for a in data["audit"]:
        at = a["at"].astimezone(tz).strftime("%Y-%m-%d %H:%M %Z") if a["at"] else ""
        detail = a["detail"] if isinstance(a["detail"], dict) else {}
        why = detail.get("reason") or detail.get("comment") or detail.get("why")
        lines.append(
            f"    {at} {a['actor']} {a['action']} via {a['channel']}"
            + (f": {_one_line(str(why))}" if why else "")
        )
    return "\n".join(lines)


def show(ctx: Context) -> int:
    from newsexchange.db import Digest
    from newsexchange.digest.ics import digest_calendar
    from newsexchange.digest.render import render_digest, to_email

    with ctx.db.session() as s:
        d = s.get(Digest, ctx.args.id)
        if d is None:
            raise DigestNotFound(ctx.args.id)
        tz = ctx.config.exchange_tz(ctx.config.exchange(d.exchange_id))
        if ctx.args.fmt == "summary":
            data = _summary(ctx, s, d)
            if ctx.args.output:
                Path(ctx.args.output).write_text(_summary_text(data, tz) + "\n", encoding="utf-8")
            ctx.emit(data, lambda: _summary_text(data, tz))
            return 0
        rendered = render_digest(s, ctx.config, d)
        calendar = digest_calendar(s, ctx.config, d) if ctx.args.fmt == "eml" else None
    payload: bytes
    if ctx.args.fmt == "html":
        payload = rendered.html.encode("utf-8")
    elif ctx.args.fmt == "text":
        payload = rendered.text.encode("utf-8")
    else:
        # As mailed: with the events' .ics attached when there are events.
        msg = to_email(rendered, config=ctx.config, now=ctx.now(), calendar=calendar)
        payload = msg.as_bytes()
    if ctx.args.output:
        Path(ctx.args.output).write_bytes(payload)
        ctx.emit(
            {
                "ok": True,
                "id": ctx.args.id,
                "format": ctx.args.fmt,
                "subject": rendered.subject,
                "output": str(Path(ctx.args.output).resolve()),
                "bytes": len(payload),
            },
            f"wrote {ctx.args.output} ({len(payload)} bytes, {ctx.args.fmt})",
        )
        return 0
    if ctx.json:
        ctx.emit(
            {
                "ok": True,
                "id": ctx.args.id,
                "format": ctx.args.fmt,
                "subject": rendered.subject,
                "content": payload.decode("utf-8", errors="replace"),
            }
        )
        return 0
    sys.stdout.buffer.write(payload)
    sys.stdout.flush()
    return 0


# -- edit ------------------------------------------------------------------------------------


def edit(ctx: Context) -> int:
    from newsexchange.db import AuditEntry, Digest
    from newsexchange.digest import edit_digest

    a = ctx.args
    if not (a.drop or a.pin or a.order or a.restore):
        raise DigestError("nothing to change (expected --drop, --pin, --order or --restore)")
    with ctx.db.session() as s:
        d = s.get(Digest, a.id)
        if d is None:
            raise DigestNotFound(a.id)
        old_version = d.version
        now = ctx.now()
        edit_digest(s, d, drop=a.drop, pin=a.pin, order=a.order, restore=a.restore, now=now)
        if d.version != old_version:  # logged like the approval page's edits
            s.add(
                AuditEntry(
                    at=now,
                    digest_id=d.id,
                    actor=f"console:{_console_user()}",
                    action="edit",
                    channel="cli",
                    detail={
                        "from_version": old_version,
                        "version": d.version,
                        "drop": a.drop or None,
                        "pin": a.pin or None,
                        "order": a.order,
                        "restore": a.restore or None,
                    },
                )
            )
            s.flush()
        data = _summary(ctx, s, d)
        tz = ctx.config.exchange_tz(ctx.config.exchange(d.exchange_id))
    ctx.emit(data, lambda: _summary_text(data, tz))
    return 0


def _one_line(text: str) -> str:
    return " ".join(text.split())[:200]
