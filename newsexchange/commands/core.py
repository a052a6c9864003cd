"""``newsexchange check``: validate the configuration and say what would run."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from newsexchange.commands import Context, add_common
from newsexchange.errors import ConfigError

if TYPE_CHECKING:
    from newsexchange.config import Config


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("check", help="validate feeds.yaml and print what would run")
    add_common(p)
    p.add_argument(
        "--sources",
        action="store_true",
        help="also run the source watchdog over the stored items (off-region, stale, "
        "wrong language); needs the database",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="run the source watchdog (implies --sources) and exit 1 when a source is flagged",
    )
    p.set_defaults(handler=check)

    p = sub.add_parser(
        "migrate",
        help="bring the database schema up to date, then exit (a deploy's first step)",
    )
    add_common(p)
    p.set_defaults(handler=migrate)


def check(ctx: Context) -> int:
    from newsexchange.config import database_url

    cfg = ctx.config
    if not cfg.sources:
        # Valid, but it would collect nothing: `check` is where a new editor learns that.
        raise ConfigError(
            "no sources: nothing would be collected (expected a sources: list with at least "
            "one feed; see the bundled feeds.yaml)",
            file=str(cfg.path) if cfg.path else None,
            line=cfg.line_of("sources") or 1,
        )
    by_region: dict[str, int] = {}
    for s in cfg.sources:
        by_region[s.region] = by_region.get(s.region, 0) + 1
    url = database_url(cfg)
    safe_url = url.split("@")[-1] if "@" in url else url  # never print a password
    if not (getattr(ctx.args, "sources", False) or getattr(ctx.args, "strict", False)):
        ctx.emit(_summary(cfg, by_region, safe_url), lambda: _text(cfg, by_region, safe_url))
        return 0
    return _check_sources(ctx, cfg, _summary(cfg, by_region, safe_url), url)


def _check_sources(ctx: Context, cfg: Config, summary: dict[str, Any], url: str) -> int:
    """``check --sources``: the config's summary plus the watchdog's findings (under the
    ``watchdog`` key: ``sources`` already counts the configured sources). Exit 0 with the
    findings printed (a finding is a warning), 1 with ``--strict`` and a flagged source, or
    when the database cannot be read (absent, unreachable, behind: said so)."""
    from newsexchange.db.queries.watchdog import database_problem
    from newsexchange.ingest.watchdog import watch_sources

    problem = database_problem(url, busy_timeout=cfg.database_busy_timeout)
    if problem is not None:
        summary["watchdog"] = {"error": problem}
        ctx.emit(summary, lambda: _text_base(cfg, summary) + f"\nsources: not checked: {problem}")
        return 1
    report = watch_sources(ctx.db, cfg, now=ctx.now())
    summary["watchdog"] = report.to_json()

    def text() -> str:
        head = f"sources: {report.checked} checked"
        if report.unfetched:
            head += f" ({len(report.unfetched)} not fetched yet: {', '.join(report.unfetched)})"
        lines = [_text_base(cfg, summary), head]
        for f in report.findings:
            lines.append(f"  {f.message}")
        if not report.findings:
            lines.append("  no findings")
        return "\n".join(lines)

    ctx.emit(summary, text)
    return 1 if ctx.args.strict and report.flagged else 0


def _text_base(cfg: Config, summary: dict[str, Any]) -> str:
    by_region = {rid: r["sources"] for rid, r in summary["regions"].items()}
    return _text(cfg, by_region, summary["database"])


def migrate(ctx: Context) -> int:
    """Migrate, under PostgreSQL's advisory lock, and say where the schema stands. Every
    command migrates on start anyway; this is the step of its own that a deploy runs before
    the workers and the web app (systemd ``ExecStartPre``, a container's init), so they all
    start on a current schema."""
    from newsexchange.config import database_url
    from newsexchange.db import schema_revision

    url = database_url(ctx.config)
    safe_url = url.split("@")[-1] if "@" in url else url
    revision = schema_revision(ctx.db)  # opening the database ran the migrations
    ctx.emit(
        {"ok": True, "database": safe_url, "revision": revision},
        f"{safe_url}: schema at revision {revision}",
    )
    return 0


def _summary(cfg: Config, by_region: dict[str, int], safe_url: str) -> dict[str, Any]:
    """What ``check --json`` prints."""
    return {
        "ok": True,
        "config": str(cfg.path),
        "database": safe_url,
        "timezone": cfg.timezone,
        "mail_backend": cfg.mail.backend,
        "regions": {
            rid: {"name": r.name, "language": r.language, "sources": by_region.get(rid, 0)}
            for rid, r in cfg.regions.items()
        },
        "sources": len(cfg.sources),
        "sources_enabled": sum(1 for s in cfg.sources if s.enabled),
        "translation_providers": [p.name for p in cfg.translation.providers],
        "lists": sorted(cfg.lists),
        "exchanges": [
            {
                "id": e.id,
                "from": e.from_,
                "language": e.language,
                "schedule": {
                    "days": e.schedule.days,
                    "time": e.schedule.time,
                    "timezone": str(cfg.exchange_tz(e)),
                },
                "editors": len(e.editors),
                "approvals_required": e.approvals_required,
                "lists": e.lists,
                "max_items": e.max_items,
            }
            for e in cfg.exchanges
        ],
    }


def _text(cfg: Config, by_region: dict[str, int], safe_url: str) -> str:
    """What ``check`` prints for a person."""
    lines = [
        f"{cfg.path}: OK",
        f"  database: {safe_url}",
        f"  mail: {cfg.mail.backend}",
        f"  time zone: {cfg.timezone}",
    ]
    for rid, r in cfg.regions.items():
        lines.append(f"  region {rid} ({r.name}, {r.language}): {by_region.get(rid, 0)} sources")
    provs = ", ".join(p.name for p in cfg.translation.providers) or "none"
    lines.append(f"  translation: {provs}")
    for e in cfg.exchanges:
        lines.append(
            f"  exchange {e.id}: {'+'.join(e.from_)} → {e.language}, days "
            f"{', '.join(map(str, e.schedule.days))} at {e.schedule.time} "
            f"({cfg.exchange_tz(e)}), {len(e.editors)} editor(s), lists: "
            f"{', '.join(e.lists) or 'none'}"
        )
    return "\n".join(lines)
