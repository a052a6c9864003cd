"""``newsexchange approve / reject / approvals run / approvals poll-imap``.

Console decisions go through the same :func:`newsexchange.approval.decide` as links and
replies, with channel ``cli``; the audit log records the console user (user@host) as the
address they came from.
"""

from __future__ import annotations

import argparse
import getpass
import socket
from typing import Any

from newsexchange.commands import Context, add_common, db_int
from newsexchange.errors import ConfigError, DigestNotFound


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("approve", help="approve a digest at the console, as one of its editors")
    add_common(p)
    p.add_argument("digest_id", type=db_int, metavar="ID")
    p.add_argument(
        "--as",
        dest="editor",
        metavar="EDITOR",
        help="the editor approving (needed when the exchange has more than one)",
    )
    p.add_argument("--comment", help="a note for the audit log")
    p.set_defaults(handler=approve, decision="approve")

    p = sub.add_parser("reject", help="reject a digest at the console (it will not be sent)")
    add_common(p)
    p.add_argument("digest_id", type=db_int, metavar="ID")
    p.add_argument("--reason", required=True, help="why (kept in the audit log)")
    p.add_argument("--as", dest="editor", metavar="EDITOR", help="the editor rejecting")
    p.set_defaults(handler=approve, decision="reject")

    p = sub.add_parser("approvals", help="approval requests, reminders, deadlines; email replies")
    asub = p.add_subparsers(dest="approvals_command", metavar="COMMAND")
    asub.required = True
    r = asub.add_parser("run", help="send requests for new drafts, reminders, apply deadlines")
    add_common(r)
    r.set_defaults(handler=run)
    r = asub.add_parser("poll-imap", help="read editors' replies from the IMAP mailbox once")
    add_common(r)
    r.set_defaults(handler=poll)
    r = asub.add_parser("request", help="mail the approval request of one digest (again)")
    add_common(r)
    r.add_argument("digest_id", type=db_int, metavar="ID")
    r.set_defaults(handler=request)


def _console_address() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def approve(ctx: Context) -> int:
    from newsexchange.approval import decide
    from newsexchange.approval.notices import queue_notes
    from newsexchange.db import Digest
    from newsexchange.mail.queue import flush
    from newsexchange.service.queue import start_sending_if_approved

    cfg = ctx.config
    args = ctx.args
    now = ctx.now()
    with ctx.db.session() as session:
        digest = session.get(Digest, args.digest_id)
        if digest is None:
            raise DigestNotFound(args.digest_id)
        exchange = cfg.exchange(digest.exchange_id)
        editor = args.editor
        if not editor:
            if len(exchange.editors) != 1:
                raise ConfigError(
                    f"exchange {exchange.id} has {len(exchange.editors)} editors; say which "
                    f"one you are with --as (one of: {', '.join(exchange.editors)})"
                )
            editor = exchange.editors[0]
        result = decide(
            session,
            cfg,
            digest,
            editor=editor,
            decision=args.decision,
            channel="cli",
            address=_console_address(),
            comment=getattr(args, "reason", None) or getattr(args, "comment", None),
            now=now,
        )
        queue_notes(session, cfg, digest, result.notes, now=now)
    flush(ctx.db, cfg, now=now)  # the notes to the other editors, after the commit
    start_sending_if_approved(cfg, ctx.db, args.digest_id)
    ctx.emit({"ok": True, **result.to_json()}, result.message)
    return 0


def run(ctx: Context) -> int:
    from newsexchange.approval import run_approvals

    report = run_approvals(ctx.db, ctx.config, now=ctx.now())

    def text() -> str:
        lines = [
            f"requested: {len(report.requested)}  reminded: {len(report.reminded)}  "
            f"held: {len(report.held)}  rejected: {len(report.rejected)}"
        ]
        lines += [f"  failed: digest {f['digest']}: {f['error']}" for f in report.failures]
        return "\n".join(lines)

    ctx.emit(report.to_json(), text)
    return 0 if report.ok else 1


def poll(ctx: Context) -> int:
    from newsexchange.approval.inbound import poll_imap

    report = poll_imap(ctx.db, ctx.config, now=ctx.now())

    def text() -> str:
        data = report.to_json()
        lines = [
            f"fetched: {data['fetched']}  acted: {data['acted']}  ignored: {data['ignored']}  "
            f"refused: {data['refused']}  duplicate: {data['duplicate']}"
        ]
        lines += [
            f"  {r.status}: digest {r.digest_id or '-'} {r.sender or ''}: {r.reason}"
            for r in report.results
        ]
        if report.error:
            lines.append(f"error: {report.error}")
        return "\n".join(lines)

    ctx.emit(report.to_json(), text)
    return 0 if report.ok else 1


def request(ctx: Context) -> int:
    from newsexchange.approval import request_approval

    n = request_approval(ctx.db, ctx.config, ctx.args.digest_id, now=ctx.now())
    ctx.emit(
        {"ok": True, "digest_id": ctx.args.digest_id, "editors_mailed": n},
        f"approval request for digest {ctx.args.digest_id} mailed to {n} editor(s)",
    )
    return 0
