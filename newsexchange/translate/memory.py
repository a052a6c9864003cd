"""Translation memory: every translated text kept by (normalized source text, source language,
target language), so the same text is never sent to a provider twice.

Two kinds of entries share the table: whole fields (an item's title, its summary) and the
sentences they were cut into. The pipeline looks a field up whole first, then sentence by
sentence, and sends only what is still missing. Entries made by an editor (``origin ==
"editor"``: a correction with ``translation set`` or an imported file) are never overwritten by a
provider's answer, so they win from then on.
"""

from __future__ import annotations

import hashlib
import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from newsexchange.config import LANGUAGES
from newsexchange.db import Item, Session, Translation, utcnow
from newsexchange.db.queries.translations import insert_memory, memory_rows
from newsexchange.errors import ConfigError, TranslationError
from newsexchange.translate.base import lost_text, normalize
from newsexchange.translate.plan import source_language, text_hash

EDITOR = "editor"


@lru_cache(maxsize=65536)
def key_of(text: str) -> str:
    """The memory key of a text: SHA-256 of its normalized form."""
    return hashlib.sha256(normalize(text).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Entry:
    source_lang: str
    target_lang: str
    source_text: str
    target_text: str
    origin: str


def lookup(
    session: Session, source: str, target: str, texts: Iterable[str]
) -> dict[str, tuple[str, str]]:
    """``{memory key: (target text, origin)}`` for the texts the memory knows."""
    keys = sorted({key_of(t) for t in texts})
    found: dict[str, tuple[str, str]] = {}
    for h, source_text, text, origin in memory_rows(session, source, target, keys):
        if lost_text(source_text, text):
            continue  # a blank answer remembered before they were refused: ask again
        found[h] = (text, origin)
    return found


def store(session: Session, entries: Sequence[Entry], *, now: datetime) -> None:
    """Remember translations. Editor entries replace what was there; provider entries never
    replace anything (an editor's correction stays)."""
    by_kind: dict[bool, dict[tuple[str, str, str], dict[str, Any]]] = {True: {}, False: {}}
    for e in entries:
        norm = normalize(e.source_text)
        if not norm or not e.target_text.strip() or lost_text(norm, e.target_text):
            continue  # a blank translation is never remembered
        h = key_of(norm)
        by_kind[e.origin == EDITOR][(e.source_lang, e.target_lang, h)] = {
            "source_lang": e.source_lang,
            "target_lang": e.target_lang,
            "source_hash": h,
            "source_text": norm,
            "target_text": e.target_text,
            "origin": e.origin,
            "created_at": now,
            "updated_at": now,
        }
    insert_memory(session, list(by_kind[False].values()), overwrite=False)
    insert_memory(session, list(by_kind[True].values()), overwrite=True)


# -- editor corrections ------------------------------------------------------------------------


def _text_to_html(text: str) -> str:
    """An editor's plain-text summary as safe HTML: escaped, paragraphs kept."""
    paras = [p.strip() for p in text.replace("\r\n", "\n").split("\n\n") if p.strip()]
    return "".join(f"<p>{html.escape(p).replace(chr(10), '<br>')}</p>" for p in paras)


def set_editor_translation(
    session: Session,
    item_id: int,
    language: str,
    *,
    title: str | None,
    summary: str | None,
    now: datetime | None = None,
) -> Translation:
    """Store an editor's translation of an item; it is kept in the memory with origin
    "editor", so the same title or summary anywhere gets the editor's words from then on.

    ``summary`` is plain text (escaped into the HTML version). Either may be ``None`` to keep
    the current done translation of that field.
    """
    now = now or utcnow()
    if language not in LANGUAGES:
        raise TranslationError(
            f"unknown language {language!r} (expected one of: {', '.join(LANGUAGES)})"
        )
    item = session.get(Item, item_id)
    if item is None:
        raise TranslationError(f"no item with id {item_id}")
    row = next((t for t in item.translations if t.language == language), None)
    title, summary_html, summary_text = _editor_fields(item, row, language, title, summary)

    src = source_language(item.language, item.detected_language)
    if src != language:
        # the item's own texts → the editor's words, each a memory entry of its own
        pairs: list[tuple[str, str | None]] = [(item.title, title)]
        if summary is not None:
            pairs += [(item.summary_html, summary_html), (item.summary_text, summary_text)]
        entries = [Entry(src, language, a, b or "", EDITOR) for a, b in pairs if a]
        store(session, entries, now=now)

    if row is None:
        row = Translation(item_id=item.id, language=language, created_at=now)
        session.add(row)
        item.translations.append(row)
    _set_editor_row(row, item, title, summary_html or "", summary_text or "", now)
    session.flush()
    return row


def _set_editor_row(
    row: Translation, item: Item, title: str, summary_html: str, summary_text: str, now: datetime
) -> None:
    row.title = title
    row.summary_html = summary_html
    row.summary_text = summary_text
    row.provider = EDITOR
    row.status = "done"
    row.error = None
    row.next_attempt_at = None
    row.source_hash = text_hash(item.title, item.summary_html, item.summary_text)
    row.updated_at = now


def _editor_fields(
    item: Item, row: Translation | None, language: str, title: str | None, summary: str | None
) -> tuple[str, str | None, str | None]:
    """``(title, summary_html, summary_text)`` an editor sets: what was given, the current done
    translation of a field not given, or a refusal (nothing to keep, an empty title)."""
    done = row is not None and row.status == "done"
    if title is None:
        if not done or row is None or row.title is None:
            raise TranslationError(
                f"item {item.id} has no {language} title yet; give the title too"
            )
        title = row.title
    summary_html: str | None
    summary_text: str | None
    if summary is None:
        if (item.summary_html or item.summary_text) and (not done or row is None):
            raise TranslationError(
                f"item {item.id} has no {language} summary yet; give the summary too"
            )
        summary_html = row.summary_html if row is not None and done else ""
        summary_text = row.summary_text if row is not None and done else ""
    else:
        summary_html, summary_text = _text_to_html(summary), summary.strip()
    title = title.strip()
    if not title:
        raise TranslationError("the title is empty")
    return title, summary_html, summary_text


def import_memory(session: Session, path: Path, *, now: datetime | None = None) -> int:
    """Load a YAML list of ``{source_lang, target_lang, source, target}`` as editor entries
    (a translator's glossary of phrases, or the translations of the bundled sample sources, so
    the demo runs without any provider). Returns how many entries were stored."""
    now = now or utcnow()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("no such file", file=str(path)) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", file=str(path)) from exc
    if isinstance(data, dict) and "entries" in data:
        data = data["entries"]
    if not isinstance(data, list):
        raise ConfigError(
            "expected a list of {source_lang, target_lang, source, target}", file=str(path)
        )
    entries: list[Entry] = []
    for i, row in enumerate(data):
        if not isinstance(row, dict) or set(row) != {
            "source_lang",
            "target_lang",
            "source",
            "target",
        }:
            raise ConfigError(
                f"entry {i + 1}: expected exactly the keys source_lang, target_lang, source, "
                f"target (got {sorted(row) if isinstance(row, dict) else type(row).__name__})",
                file=str(path),
            )
        for k in ("source_lang", "target_lang"):
            if row[k] not in LANGUAGES:
                raise ConfigError(
                    f"entry {i + 1}: {k} {row[k]!r} is not one of {', '.join(LANGUAGES)}",
                    file=str(path),
                )
        if not isinstance(row["source"], str) or not isinstance(row["target"], str):
            raise ConfigError(f"entry {i + 1}: source and target must be text", file=str(path))
        if not row["source"].strip() or not row["target"].strip():
            raise ConfigError(f"entry {i + 1}: source and target must not be empty", file=str(path))
        entries.append(
            Entry(row["source_lang"], row["target_lang"], row["source"], row["target"], EDITOR)
        )
    store(session, entries, now=now)
    return len(entries)
