"""``newsexchange lists …`` (media lists, GDPR access/erasure) and ``newsexchange send ID``."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from newsexchange.commands import Context, add_common, db_int, to_json
from newsexchange.errors import ConfigError

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction[Any]) -> None:
    _register_lists(sub)
    p = sub.add_parser("send", help="deliver an approved digest to its lists (resumable)")
    add_common(p)
    p.add_argument("digest_id", metavar="ID", type=db_int, help="the digest id")
    p.set_defaults(handler=send)


def _register_lists(sub: argparse._SubParsersAction[Any]) -> None:
    lists = sub.add_parser("lists", help="media lists: import, show, export; GDPR erase/export")
    lsub = lists.add_subparsers(dest="lists_command", metavar="ACTION")
    lsub.required = True

    p = lsub.add_parser("import", help="import a CSV (name,email,outlet,language,lists,notes)")
    add_common(p)
    p.add_argument("list", metavar="LIST", help="the list id from feeds.yaml")
    p.add_argument(
        "file",
        metavar="FILE.csv",
        nargs="?",
        help="the CSV (default: the list's file: in feeds.yaml)",
    )
    p.add_argument(
        "--replace",
        action="store_true",
        help="members of LIST missing from the file leave the list",
    )
    p.set_defaults(handler=lists_import)

    p = lsub.add_parser("show", help="the members of a list and their state")
    add_common(p)
    p.add_argument("list", metavar="LIST")
    p.set_defaults(handler=lists_show)

    p = lsub.add_parser("export", help="the list as CSV (the import format)")
    add_common(p)
    p.add_argument("list", metavar="LIST")
    p.add_argument("--output", "-o", metavar="F.csv", help="write here instead of stdout")
    p.set_defaults(handler=lists_export)

    p = lsub.add_parser("erase", help="GDPR erasure: remove a contact and its personal data")
    add_common(p)
    p.add_argument("email", metavar="EMAIL")
    p.add_argument(
        "--keep-out",
        action="store_true",
        help="also never mail the address again (kept as a hash only)",
    )
    p.set_defaults(handler=lists_erase)

    p = lsub.add_parser("export-contact", help="GDPR access: everything held on an address")
    add_common(p)
    p.add_argument("email", metavar="EMAIL")
    p.set_defaults(handler=lists_export_contact)


def lists_import(ctx: Context) -> int:

    from newsexchange.delivery.lists import check_list, import_rows, parse_csv

    cfg = ctx.config
    list_id = ctx.args.list
    check_list(cfg, list_id)
    file = ctx.args.file or cfg.lists[list_id].file
    if not file:
        raise ConfigError(f"no FILE.csv given and list {list_id!r} has no file: in feeds.yaml")
    path = Path(file) if ctx.args.file else cfg.resolve(file)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason}); save it as CSV UTF-8") from None
    parsed = parse_csv(text, list_id=list_id, known_lists=cfg.lists)
    with ctx.db.session() as s:
        report = import_rows(s, parsed, list_id=list_id, now=ctx.now(), replace=ctx.args.replace)
    data = report.to_json()

    def text_out() -> str:
        lines = [
            f"{list_id}: {report.read} row(s) read: {report.imported} imported, "
            f"{report.updated} updated, "
            f"{report.unchanged} unchanged, {report.merged_duplicates} duplicate row(s) merged, "
            f"{len(report.skipped)} skipped"
            + (f", {report.removed} removed" if ctx.args.replace else "")
            + (
                f", {report.suppressed} suppressed (will not be mailed)"
                if report.suppressed
                else ""
            )
        ]
        for p in report.skipped:
            lines.append(f"  {path}:{p.line}: skipped: {p.error}")
        return "\n".join(lines)

    ctx.emit(data, text_out)
    return 1 if report.skipped else 0


def lists_show(ctx: Context) -> int:

    from newsexchange.delivery.lists import check_list, members, suppression_map
    from newsexchange.delivery.unsubscribe import email_hash

    cfg = ctx.config
    list_id = ctx.args.list
    check_list(cfg, list_id)
    with ctx.db.session() as s:
        contacts = members(s, list_id)
        emails = [c.email for c in contacts]
        sups = suppression_map(s, emails + [email_hash(e) for e in emails])
        rows = []
        for c in contacts:
            found = sups.get(c.email, []) + sups.get(email_hash(c.email), [])
            blocking = [x for x in found if x.list_id in (None, list_id)]
            rows.append(
                {
                    "email": c.email,
                    "name": c.name,
                    "outlet": c.outlet,
                    "language": c.language or cfg.lists[list_id].language,
                    "lists": sorted(m.list_id for m in c.memberships),
                    "status": blocking[0].reason if blocking else "active",
                }
            )
    active = sum(1 for r in rows if r["status"] == "active")
    data = {
        "ok": True,
        "list": list_id,
        "name": cfg.lists[list_id].name or list_id,
        "language": cfg.lists[list_id].language,
        "members": len(rows),
        "active": active,
        "contacts": rows,
    }

    def text() -> str:
        out = [
            f"{data['name']} ({list_id}, {data['language']}): {len(rows)} members, {active} active"
        ]
        for r in rows:
            who = f"{r['name']} <{r['email']}>" if r["name"] else r["email"]
            extra = f" — {r['outlet']}" if r["outlet"] else ""
            flag = "" if r["status"] == "active" else f"  [{r['status']}]"
            out.append(f"  {who}{extra}{flag}")
        return "\n".join(out)

    ctx.emit(data, text)
    return 0


def lists_export(ctx: Context) -> int:

    from newsexchange.delivery.lists import check_list, export_csv

    check_list(ctx.config, ctx.args.list)
    with ctx.db.session() as s:
        text, rows = export_csv(s, ctx.args.list)
    if ctx.args.output:
        Path(ctx.args.output).write_text(text, encoding="utf-8")
        ctx.emit(
            {"ok": True, "list": ctx.args.list, "rows": rows, "output": ctx.args.output},
            f"wrote {rows} contact(s) to {ctx.args.output}",
        )
    elif ctx.json:
        ctx.emit({"ok": True, "list": ctx.args.list, "rows": rows, "csv": text})
    else:
        sys.stdout.write(text)
    return 0


def lists_erase(ctx: Context) -> int:

    from newsexchange.delivery.lists import erase_contact, normalize_email

    try:
        addr = normalize_email(ctx.args.email)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    with ctx.db.session() as s:
        report = erase_contact(s, addr, now=ctx.now(), keep_out=ctx.args.keep_out)
    data = report.to_json()
    ctx.emit(
        data,
        f"erased {addr}: contact {'removed' if report.contact_removed else 'not found'}, "
        f"{report.memberships_removed} list membership(s) removed, "
        f"{report.deliveries_anonymized} delivery record(s) anonymized, "
        f"{report.suppressions_hashed} suppression(s) kept as a hash only",
    )
    return 0


def lists_export_contact(ctx: Context) -> int:

    from newsexchange.delivery.lists import contact_export, normalize_email

    try:
        addr = normalize_email(ctx.args.email)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    with ctx.db.session() as s:
        data = contact_export(s, addr)
    if data is None:
        ctx.emit({"ok": True, "email": addr, "found": False}, f"nothing is held on {addr}")
        return 0
    out = {"ok": True, "found": True, **data}
    # Always JSON: a GDPR access answer is handed to the person as a file.
    sys.stdout.write(to_json(out) + "\n")
    return 0


def send(ctx: Context) -> int:
    """Send one digest. SIGTERM stops it the way it stops ``serve``: the chunk on the wire
    finishes and is recorded, the deliveries claimed but not sent are handed back (pending
    again, for the next run), and the command reports what it did and exits 0."""

    from newsexchange.delivery.progress import send_progress
    from newsexchange.delivery.send import SendStopped, run_send

    cfg = ctx.config
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda _sig, _frame: stop.set())
    try:
        with send_progress(enabled=ctx.interactive) as bar:

            def progress(done: int, total: int) -> None:
                if bar is not None:
                    bar(done, total)
                if stop.is_set() and done < total:
                    log.warning("signal received: stopping", extra={"signal": "SIGTERM"})
                    raise SendStopped("SIGTERM")

            report = run_send(
                ctx.db, cfg, now=ctx.now(), digest_id=ctx.args.digest_id, progress=progress
            )
    finally:
        signal.signal(signal.SIGTERM, previous)
    data = report.to_json()
    ctx.emit(data, report.to_text)
    return 0 if data["ok"] else 1
