"""``newsexchange translate`` and ``newsexchange translation set | import | show``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from newsexchange.commands import Context, add_common, db_int
from newsexchange.errors import ConfigError, TranslationError


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "translate",
        help="translate what is due (items into each exchange's language and English)",
    )
    add_common(p)
    p.add_argument("--limit", type=db_int, metavar="N", help="work on at most N items")
    p.set_defaults(handler=translate)

    t = sub.add_parser("translation", help="correct, import or show translations")
    tsub = t.add_subparsers(dest="translation_command", metavar="ACTION", required=True)

    s = tsub.add_parser(
        "set",
        help="store an editor's translation of an item (kept in the memory; wins from then on)",
    )
    add_common(s)
    s.add_argument("item", type=db_int, metavar="ITEM", help="item id (see `newsexchange items`)")
    s.add_argument("language", metavar="LANG", help="fi, ru or en")
    s.add_argument("--title", help="the translated title")
    s.add_argument("--summary", help="the translated summary (plain text)")
    s.add_argument(
        "--file", type=Path, metavar="F.yaml", help="a YAML file with title: and summary:"
    )
    s.set_defaults(handler=translation_set)

    i = tsub.add_parser(
        "import",
        help="import translation memory entries from YAML (list of source_lang, target_lang, "
        "source, target)",
    )
    add_common(i)
    i.add_argument("file", type=Path, metavar="FILE.yaml")
    i.set_defaults(handler=translation_import)

    sh = tsub.add_parser("show", help="show an item's translations")
    add_common(sh)
    sh.add_argument("item", type=db_int, metavar="ITEM")
    sh.set_defaults(handler=translation_show)


def translate(ctx: Context) -> int:
    from newsexchange.translate import run_translate

    if ctx.args.limit is not None and ctx.args.limit < 1:
        raise ConfigError("--limit must be at least 1")
    report = run_translate(ctx.db, ctx.config, now=ctx.now(), limit=ctx.args.limit)
    data = report.to_json()

    def text() -> str:
        sent = ", ".join(
            f"{p}: {report.requests.get(p, 0)} requests, {c} characters"
            for p, c in sorted(report.characters_sent.items())
        )
        lines = [
            f"translated {report.translations_done} translation(s) of "
            f"{report.items_translated} item(s); {report.originals} already in the language",
            f"  from memory: {report.cache_hits}; sent: {sent or 'nothing'}",
            f"  pending: {report.pending}",
        ]
        for name, err in sorted(report.provider_errors.items()):
            lines.append(f"  provider {name}: {err['count']} failure(s), last: {err['last']}")
        for f in report.failed[:20]:
            lines.append(
                f"  item {f['item']} {f['language']}: {f['status']} — {f['reason']} "
                f"(next try {f['next_attempt_at']})"
            )
        if len(report.failed) > 20:
            lines.append(f"  … and {len(report.failed) - 20} more (see --json)")
        return "\n".join(lines)

    ctx.emit(data, text)
    return 0 if report.ok else 1


def _load_set_file(path: Path) -> tuple[str | None, str | None]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("no such file", file=str(path)) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", file=str(path)) from exc
    if not isinstance(data, dict) or not set(data) <= {"title", "summary"} or not data:
        raise ConfigError("expected a mapping with title: and/or summary:", file=str(path))
    title, summary = data.get("title"), data.get("summary")
    if any(v is not None and not isinstance(v, str) for v in (title, summary)):
        raise ConfigError("title and summary must be text", file=str(path))
    return title, summary


def translation_set(ctx: Context) -> int:
    from newsexchange.translate import set_editor_translation, translation_data

    title, summary = ctx.args.title, ctx.args.summary
    if ctx.args.file is not None:
        if title is not None or summary is not None:
            raise ConfigError("give either --file or --title/--summary, not both")
        title, summary = _load_set_file(ctx.args.file)
    if title is None and summary is None:
        raise ConfigError("nothing to set: give --title and/or --summary, or --file F.yaml")
    try:
        with ctx.db.session() as s:
            row = set_editor_translation(
                s, ctx.args.item, ctx.args.language, title=title, summary=summary, now=ctx.now()
            )
            data = {"ok": True, "item": ctx.args.item, "translation": translation_data(row)}
    except TranslationError as exc:
        # A wrong item id or language is a usage mistake, not failed work.
        raise ConfigError(exc.message) from None
    ctx.emit(
        data,
        f"item {ctx.args.item} {ctx.args.language}: stored the editor's translation "
        "(kept in the translation memory)",
    )
    return 0


def translation_import(ctx: Context) -> int:
    from newsexchange.translate import import_memory

    with ctx.db.session() as s:
        n = import_memory(s, ctx.args.file, now=ctx.now())
    ctx.emit(
        {"ok": True, "imported": n, "file": str(ctx.args.file)},
        f"imported {n} translation memory entr{'y' if n == 1 else 'ies'} from {ctx.args.file}",
    )
    return 0


def translation_show(ctx: Context) -> int:
    from newsexchange.db import Item
    from newsexchange.translate import iter_translations

    with ctx.db.session() as s:
        item = s.get(Item, ctx.args.item)
        if item is None:
            raise ConfigError(f"no item with id {ctx.args.item}")
        rows = list(iter_translations(item))
        data: dict[str, Any] = {
            "ok": True,
            "item": item.id,
            "title": item.title,
            "language": item.language,
            "detected_language": item.detected_language,
            "translations": rows,
        }

    def text() -> str:
        lines = [f"item {data['item']} ({data['language']}): {data['title']}"]
        for t in rows:
            what = t["provider"] or "-"
            lines.append(f"  {t['language']} [{t['status']}, {what}] {t['title'] or ''}")
            if t["error"]:
                lines.append(f"      {t['error']} (next try {t['next_attempt_at']})")
        return "\n".join(lines)

    ctx.emit(data, text)
    return 0
