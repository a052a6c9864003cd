"""The translate step: every item in every language an exchange will carry it in, plus English.

``run_translate(db, config, *, now, limit=None) -> TranslateReport`` reads the items a page at a
time and, for each page:

1. decides what each item needs (:mod:`.plan`: original / translate / nothing);
2. looks each field (title, summary) up whole in the translation memory, then sentence by
   sentence (:mod:`.memory`), in one query per language pair;
3. sends what is still missing, once per distinct sentence, through the provider chain with the
   glossary terms protected (:mod:`.glossary`), packed under each provider's request limit;
   a provider that fails (timeout, 429, 5xx, quota, bad key) hands the rest to the next one;
4. writes the translations, the memory and the provider usage in one short transaction.

No database transaction is open while a provider is being asked (SQLite takes its write lock
at BEGIN), so the fetch step and the web app are never held up by a slow provider. A page whose
providers all fail leaves those translations pending with the reason and a retry time; the
other items of the page, and every later page, still go through. A translation is marked
done only when every sentence of every field was translated: nothing untranslated is ever
presented as translated.
"""

from __future__ import annotations

import html as _html
import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, insert, or_, select
from sqlalchemy.orm import Session

from newsexchange.config import Config
from newsexchange.db import Database, Item, ProviderUsage, Translation
from newsexchange.errors import TranslationError
from newsexchange.textclean import clean_name, clean_text, strip_unstorable
from newsexchange.translate.base import (
    ProviderError,
    Segment,
    Translator,
    error_kind,
    has_letters,
    lost_text,
    normalize,
    pack,
    provider_error,
    split_long,
    split_sentences,
)
from newsexchange.translate.glossary import _RESTORE, Glossary, load_glossary, restore
from newsexchange.translate.memory import EDITOR, Entry, key_of, lookup, store
from newsexchange.translate.plan import (
    Existing,
    backoff_seconds,
    decide,
    source_language,
    text_hash,
    wanted_languages,
)

__all__ = [
    "TranslateReport",
    "providers_down",
    "run_translate",
    "set_editor_translation",
]

from newsexchange.translate.memory import set_editor_translation  # re-exported

log = logging.getLogger(__name__)
PAGE = 500


# -- the report --------------------------------------------------------------------------------


@dataclass
class TranslateReport:
    items_seen: int = 0
    items_translated: int = 0
    translations_done: int = 0
    originals: int = 0
    cache_hits: int = 0
    fields_from_memory: int = 0
    segments_from_memory: int = 0
    segments_sent: int = 0
    characters_sent: dict[str, int] = field(default_factory=dict)
    requests: dict[str, int] = field(default_factory=dict)
    provider_errors: dict[str, dict[str, Any]] = field(default_factory=dict)
    pending: int = 0
    failed: list[dict[str, Any]] = field(default_factory=list)
    provider_seconds: float = 0.0
    elapsed_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "items_seen": self.items_seen,
            "items_translated": self.items_translated,
            "translations_done": self.translations_done,
            "originals": self.originals,
            "cache_hits": self.cache_hits,
            "fields_from_memory": self.fields_from_memory,
            "segments_from_memory": self.segments_from_memory,
            "segments_sent": self.segments_sent,
            "characters_sent": dict(sorted(self.characters_sent.items())),
            "requests": dict(sorted(self.requests.items())),
            "provider_errors": self.provider_errors,
            "pending": self.pending,
            # An outage fails every item: the first 200 say why, the total says how many.
            "failed": self.failed[:200],
            "failed_total": len(self.failed),
            "provider_seconds": round(self.provider_seconds, 3),
            "elapsed_seconds": round(self.elapsed_seconds, 3),
        }


# -- fields: what gets translated, as a template of literal parts and sentences ----------------

_TAG = re.compile(r"""<(?:[^>"']|"[^"]*"|'[^']*')*>""")
_TAG_NAME = re.compile(r"<\s*(/?)\s*([a-zA-Z][a-zA-Z0-9]*)")
_NO_TRANSLATE = frozenset({"code", "pre", "script", "style", "kbd", "samp"})


@dataclass
class FieldPlan:
    """A field cut into parts: ``("raw", markup)`` kept as is, ``("lit", text)`` kept (escaped
    in HTML), ``("core", sentence)`` translated. ``"".join`` of the parts is the field."""

    html: bool
    parts: list[tuple[str, str]] = field(default_factory=list)

    def cores(self) -> list[str]:
        return [t for k, t in self.parts if k == "core"]

    def assemble(self, translated: Callable[[str], str]) -> str:
        out: list[str] = []
        for kind, text in self.parts:
            if kind == "raw":
                out.append(text)
            else:
                value = translated(text) if kind == "core" else text
                out.append(_html.escape(value, quote=False) if self.html else value)
        return "".join(out)


def _add_text(plan: FieldPlan, text: str, split_at: int) -> None:
    for sentence in split_sentences(text):
        for piece in split_long(sentence, split_at) if len(sentence) > split_at else [sentence]:
            seg = Segment.of(piece)
            if seg.lead:
                plan.parts.append(("lit", seg.lead))
            if seg.core:
                plan.parts.append(("core" if has_letters(seg.core) else "lit", seg.core))
            if seg.trail:
                plan.parts.append(("lit", seg.trail))


def plan_field(value: str, *, html: bool, split_at: int) -> FieldPlan:
    """Cut a field into sentences. HTML (sanitized on the way in) is walked text node by text
    node: tags, attributes and links stay exactly as they were; text inside code/pre stays."""
    plan = FieldPlan(html=html)
    if not html:
        _add_text(plan, value, split_at)
        return plan
    skip = 0
    pos = 0
    for m in _TAG.finditer(value):
        if m.start() > pos:
            text = _html.unescape(value[pos : m.start()])
            if skip:
                plan.parts.append(("lit", text))
            else:
                _add_text(plan, text, split_at)
        tag = m.group(0)
        name = _TAG_NAME.match(tag)
        if name and name.group(2).lower() in _NO_TRANSLATE and not tag.endswith("/>"):
            skip = max(0, skip - 1) if name.group(1) else skip + 1
        plan.parts.append(("raw", tag))
        pos = m.end()
    if pos < len(value):
        text = _html.unescape(value[pos:])
        if skip:
            plan.parts.append(("lit", text))
        else:
            _add_text(plan, text, split_at)
    return plan


# -- jobs --------------------------------------------------------------------------------------


@dataclass
class FieldJob:
    name: str  # title | summary_html | summary_text
    value: str
    html: bool
    result: str | None = None
    origin: str | None = None  # editor / memory / provider name when known
    plan: FieldPlan | None = None


@dataclass
class Job:
    item_id: int
    source: str
    target: str
    action: str
    source_hash: str
    item_title: str
    item_summary_html: str
    item_summary_text: str
    fields: list[FieldJob] = field(default_factory=list)
    error: str | None = None
    retryable: bool = True
    retry_after: float | None = None
    providers: list[str] = field(default_factory=list)
    editor: bool = False

    @property
    def pair(self) -> tuple[str, str]:
        return (self.source, self.target)


# -- the provider chain: order, rate limits, daily characters, health --------------------------


@dataclass
class _Slot:
    translator: Translator
    rps: float | None
    chars_per_day: int | None
    used_today: int = 0
    next_request_at: float = 0.0
    blocked_until: float = 0.0
    blocked_by: ProviderError | None = None


class Chain:
    """Send texts through the providers in order; what one cannot do goes to the next."""

    def __init__(
        self,
        translators: Sequence[Translator],
        config: Config,
        report: TranslateReport,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        by_name = {p.name: p for p in config.translation.providers}
        self.slots = []
        for t in translators:
            settings = getattr(t, "settings", None) or by_name.get(t.name)  # type: ignore[call-overload]
            self.slots.append(
                _Slot(
                    t,
                    settings.requests_per_second if settings else None,
                    settings.chars_per_day if settings else None,
                )
            )
        self.report = report
        self.sleep = sleep
        self.clock = clock
        # per provider, for provider_usage: requests, characters, failures, last error
        self.usage: dict[str, dict[str, Any]] = {}

    @property
    def split_at(self) -> int:
        """Sentences longer than this are cut before packing: 90 % of the smallest request
        limit in the chain, leaving room for glossary placeholders."""
        limits = [s.translator.max_chars for s in self.slots]
        return max(100, int(min(limits) * 0.9)) if limits else 2000

    def _use(self, name: str) -> dict[str, Any]:
        return self.usage.setdefault(
            name, {"requests": 0, "characters": 0, "failures": 0, "error": None, "ok": False}
        )

    def _failed(self, slot: _Slot, err: TranslationError) -> None:
        name = slot.translator.name
        kind = error_kind(err)
        u = self._use(name)
        u["failures"] += 1
        u["error"] = f"{kind}: {err.message}"
        e = self.report.provider_errors.setdefault(name, {"count": 0})
        e["count"] += 1
        e["last"] = f"{kind}: {err.message}"
        log.warning(
            "translation provider failed",
            extra={"provider": name, "kind": kind, "error": err.message},
        )
        if kind != "bad_answer":
            # Out for the rest of this run (or until Retry-After): the next provider takes
            # its work instead of every batch waiting for the same timeout again.
            wait = err.retry_after if err.retry_after is not None else float("inf")
            slot.blocked_until = self.clock() + wait
            slot.blocked_by = err if isinstance(err, ProviderError) else None

    def translate(
        self, texts: list[str], source: str, target: str
    ) -> tuple[dict[int, tuple[str, str]], dict[int, ProviderError]]:
        """Translate ``texts`` (already protected); ``({index: (translation, provider)},
        {index: last error})``. Every index is in exactly one of the two."""
        done: dict[int, tuple[str, str]] = {}
        errors: dict[int, ProviderError] = {}
        history: dict[int, list[ProviderError]] = {}  # every provider's refusal, in order
        remaining = list(range(len(texts)))
        if not self.slots:
            err = provider_error(
                "none", "unsupported", "no translation provider configured (translation.providers)"
            )
            return done, dict.fromkeys(remaining, err)
        for slot in self.slots:
            if not remaining:
                break
            name = slot.translator.name
            left: list[int] = []
            batches = list(
                pack(
                    [texts[i] for i in remaining],
                    slot.translator.max_chars,
                    slot.translator.max_texts,
                    sep=1,
                )
            )
            for bi, batch in enumerate(batches):
                idx = [remaining[j] for j in batch]
                if slot.blocked_until > self.clock():
                    err = self._blocked_error(slot)
                    for i in idx:
                        errors[i] = err
                        history.setdefault(i, []).append(errors[i])
                    left.extend(idx)
                    continue
                chars = sum(len(texts[i]) for i in idx)
                if slot.chars_per_day is not None and slot.used_today + chars > slot.chars_per_day:
                    err = provider_error(
                        name,
                        "quota",
                        f"daily character limit reached ({slot.chars_per_day} in feeds.yaml)",
                    )
                    self._failed(slot, err)
                    for i in idx + [remaining[j] for b in batches[bi + 1 :] for j in b]:
                        errors[i] = err
                        history.setdefault(i, []).append(errors[i])
                        left.append(i)
                    break
                if slot.rps:
                    wait = slot.next_request_at - self.clock()
                    if wait > 0:
                        t0 = time.perf_counter()
                        self.sleep(wait)
                        self.report.provider_seconds += time.perf_counter() - t0
                    slot.next_request_at = max(slot.next_request_at, self.clock()) + 1 / slot.rps
                before = getattr(getattr(slot.translator, "inner", None), "requests_made", None)
                t0 = time.perf_counter()
                try:
                    out = slot.translator.translate([texts[i] for i in idx], source, target)
                    if len(out) != len(idx):
                        raise provider_error(
                            name, "bad_answer", f"sent {len(idx)} texts, got {len(out)} back"
                        )
                except TranslationError as exc:
                    perr = (
                        exc
                        if isinstance(exc, ProviderError)
                        else provider_error(name, "server", exc.message)
                    )
                    self.report.provider_seconds += time.perf_counter() - t0
                    self._count_requests(slot, before, 1)
                    self._failed(slot, perr)
                    for i in idx:
                        errors[i] = perr
                        history.setdefault(i, []).append(errors[i])
                    left.extend(idx)
                    continue
                self.report.provider_seconds += time.perf_counter() - t0
                self._count_requests(slot, before, 1)
                u = self._use(name)
                u["ok"] = True
                u["characters"] += chars
                slot.used_today += chars
                self.report.characters_sent[name] = self.report.characters_sent.get(name, 0) + chars
                self.report.segments_sent += len(idx)
                blank: ProviderError | None = None
                for i, t in zip(idx, out, strict=True):
                    # An answer is outside data like a feed: what the database cannot hold
                    # (NUL …) goes before it is remembered or stored.
                    t = strip_unstorable(t)
                    if lost_text(texts[i], t):
                        # An empty or blank answer is this provider failing that text, not a
                        # translation: the next provider gets it, or it stays pending.
                        blank = blank or provider_error(
                            name, "bad_answer", "empty translation in the answer"
                        )
                        errors[i] = blank
                        history.setdefault(i, []).append(blank)
                        left.append(i)
                        continue
                    done[i] = (t, name)
                    errors.pop(i, None)
                if blank is not None:
                    self._failed(slot, blank)
            remaining = [i for i in left if i not in done]
        return done, {i: _combined(history[i]) for i in remaining}

    def _blocked_error(self, slot: _Slot) -> ProviderError:
        """The error that took a provider out of this run, with the Retry-After left."""
        first = slot.blocked_by
        if first is None:
            return provider_error(slot.translator.name, "unreachable", "failed earlier in this run")
        left = slot.blocked_until - self.clock()
        return ProviderError(
            first.message,
            provider=slot.translator.name,
            kind=first.kind,
            retryable=first.retryable,
            retry_after=left if first.retry_after is not None else None,
        )

    def _count_requests(self, slot: _Slot, before: int | None, default: int) -> None:
        after = getattr(getattr(slot.translator, "inner", None), "requests_made", None)
        n = after - before if isinstance(after, int) and isinstance(before, int) else default
        name = slot.translator.name
        self._use(name)["requests"] += n
        self.report.requests[name] = self.report.requests.get(name, 0) + n


# -- the step ----------------------------------------------------------------------------------


def _detector() -> Callable[[str], str | None] | None:
    try:
        from newsexchange.ingest.langdetect import detect_language
    except ImportError:  # ingestion not there: the declared language stands
        return None
    return detect_language


def _snapshot(
    item: Item,
    config: Config,
    exchanges: list[tuple[Sequence[str], str]],
    now: datetime,
    detect: Callable[[str], str | None] | None,
) -> list[Job]:
    detected = item.detected_language
    if detected is None and detect is not None:
        try:
            detected = detect(f"{item.title}\n{item.summary_text}")
        except Exception:  # detection is a hint; never let it stop translation
            detected = None
    src = source_language(item.language, detected)
    h = text_hash(item.title, item.summary_html, item.summary_text)
    existing = {
        t.language: Existing(t.status, t.provider, t.source_hash, t.next_attempt_at)
        for t in item.translations
        # A "done" translation that lost the item's words (stored blank before empty answers
        # were refused) is no translation: it is done again.
        if not (t.status == "done" and t.provider != "original" and _lost(item, t))
    }
    needs = decide(
        wanted=wanted_languages(item.region, exchanges),
        source=src,
        current_hash=h,
        existing=existing,
        now=now,
    )
    jobs = []
    for need in needs:
        job = Job(
            item_id=item.id,
            source=src,
            target=need.language,
            action=need.action,
            source_hash=h,
            item_title=item.title,
            item_summary_html=item.summary_html,
            item_summary_text=item.summary_text,
        )
        if need.action == "translate":
            job.fields.append(FieldJob("title", item.title, html=False))
            if item.summary_html.strip():
                job.fields.append(FieldJob("summary_html", item.summary_html, html=True))
            elif item.summary_text.strip():
                job.fields.append(FieldJob("summary_text", item.summary_text, html=False))
        jobs.append(job)
    return jobs


def _lost(item: Item, t: Translation) -> bool:
    """Whether a stored translation is blank where the item has words."""
    if lost_text(item.title, t.title):
        return True
    summary = item.summary_html if item.summary_html.strip() else item.summary_text
    return lost_text(summary, t.summary_html if item.summary_html.strip() else t.summary_text)


def _translate_jobs(
    db: Database,
    jobs: list[Job],
    chain: Chain,
    glossary: Glossary,
    report: TranslateReport,
) -> list[Entry]:
    """Fill every field of every job from the memory and the providers (steps 2 and 3)."""
    work = [j for j in jobs if j.action == "translate"]
    by_pair: dict[tuple[str, str], list[Job]] = {}
    for j in work:
        by_pair.setdefault(j.pair, []).append(j)
    new_entries: list[Entry] = []
    split_at = chain.split_at
    for (src, tgt), pair_jobs in by_pair.items():
        fields = [f for j in pair_jobs for f in j.fields if f.value.strip()]
        for j in pair_jobs:
            for f in j.fields:
                if not f.value.strip():
                    f.result, f.origin = "", "memory"
        # 2a. whole fields
        with db.session() as s:
            known = lookup(s, src, tgt, (f.value for f in fields))
        for f in fields:
            hit = known.get(key_of(f.value))
            if hit:
                f.result, f.origin = hit[0], _memory_origin(hit[1])
                report.cache_hits += 1
                report.fields_from_memory += 1
        # 2b. sentences of the fields still missing
        missing = [f for f in fields if f.result is None]
        cores: dict[str, str] = {}
        for f in missing:
            f.plan = plan_field(f.value, html=f.html, split_at=split_at)
            for c in f.plan.cores():
                cores.setdefault(normalize(c), c)
        translated: dict[str, tuple[str, str]] = {}
        if cores:
            with db.session() as s:
                seg_known = lookup(s, src, tgt, cores.values())
            for norm, core in cores.items():
                hit = seg_known.get(key_of(core))
                if hit:
                    translated[norm] = (hit[0], _memory_origin(hit[1]))
                    report.cache_hits += 1
                    report.segments_from_memory += 1
        # 3. the providers, each distinct sentence once, glossary terms protected
        to_send = [(n, c) for n, c in cores.items() if n not in translated]
        failures: dict[str, ProviderError] = {}
        if to_send:
            protected: list[str] = []
            replacements: list[list[str]] = []
            send_idx: list[int] = []
            for k, (_n, core) in enumerate(to_send):
                text, reps = glossary.protect(core, src, tgt)
                protected.append(text)
                replacements.append(reps)
                if has_letters(_RESTORE.sub("", text)):
                    send_idx.append(k)
                else:  # nothing but protected terms: no request needed
                    translated[to_send[k][0]] = (restore(text, reps), "glossary")
            done, errors = chain.translate([protected[k] for k in send_idx], src, tgt)
            for pos, k in enumerate(send_idx):
                norm, core = to_send[k]
                if pos in done:
                    out, provider = done[pos]
                    try:
                        final = restore(out, replacements[k])
                    except ValueError as exc:
                        failures[norm] = provider_error(provider, "bad_answer", str(exc))
                        continue
                    final = final.strip()
                    if lost_text(core, final):
                        failures[norm] = provider_error(
                            provider, "bad_answer", "empty translation in the answer"
                        )
                        continue
                    translated[norm] = (final, provider)
                    new_entries.append(Entry(src, tgt, core, final, provider))
                else:
                    failures[norm] = errors[pos]
            if failures:
                _retry_lost_terms(
                    failures,
                    to_send,
                    replacements,
                    protected,
                    chain,
                    src,
                    tgt,
                    translated,
                    new_entries,
                )
        # 4. assemble
        for j in pair_jobs:
            for f in j.fields:
                if f.result is not None or f.plan is None:
                    continue
                field_cores = [normalize(c) for c in f.plan.cores()]
                lost = [n for n in field_cores if n not in translated]
                if lost:
                    err = failures.get(lost[0])
                    reason = _reason(err)
                    j.error = j.error or reason
                    j.retryable = j.retryable and bool(err is None or err.retryable)
                    if err is not None and err.retry_after:
                        j.retry_after = max(j.retry_after or 0.0, err.retry_after)
                    continue
                origins = {translated[n][1] for n in field_cores}
                table = {n: translated[n][0] for n in field_cores}
                f.result = f.plan.assemble(partial(_from_table, table))
                providers = [o for o in origins if o not in ("editor", "memory", "glossary")]
                f.origin = (
                    providers[0] if providers else ("editor" if EDITOR in origins else "memory")
                )
                if len(field_cores) > 1 or f.html:
                    new_entries.append(Entry(src, tgt, f.value, f.result, f.origin or "memory"))
    return new_entries


def _combined(errors: list[ProviderError]) -> ProviderError:
    """One error naming every provider that failed a text, for the translation's reason.
    Retryable if any provider may recover; a Retry-After only when every provider gave one."""
    if len(errors) == 1:
        return errors[0]
    seen: dict[str, ProviderError] = {}
    for e in errors:
        seen[e.provider or ""] = e
    parts = [f"{p}: {e.kind}: {e.message}" for p, e in seen.items()]
    afters = [e.retry_after for e in seen.values()]
    return ProviderError(
        "; ".join(parts),
        provider="",
        kind=errors[-1].kind,
        retryable=any(e.retryable for e in seen.values()),
        retry_after=min(a for a in afters if a is not None)
        if all(a is not None for a in afters)
        else None,
    )


def _memory_origin(origin: str) -> str:
    return EDITOR if origin == EDITOR else "memory"


def _from_table(table: dict[str, str], core: str) -> str:
    return table[normalize(core)]


def _retry_lost_terms(
    failures: dict[str, ProviderError],
    to_send: list[tuple[str, str]],
    replacements: list[list[str]],
    protected: list[str],
    chain: Chain,
    src: str,
    tgt: str,
    translated: dict[str, tuple[str, str]],
    new_entries: list[Entry],
) -> None:
    """A provider that dropped a placeholder answered the rest well: give only those sentences
    to the providers after it (each one is asked once per run)."""
    lost = [
        k
        for k, (n, _c) in enumerate(to_send)
        if n in failures and "lost protected term" in failures[n].message
    ]
    if not lost:
        return
    by_provider: dict[str, list[int]] = {}
    for k in lost:
        by_provider.setdefault(failures[to_send[k][0]].provider or "", []).append(k)
    names = [s.translator.name for s in chain.slots]
    for provider, ks in by_provider.items():
        later = names[names.index(provider) + 1 :] if provider in names else []
        if not later:
            continue
        saved = chain.slots
        chain.slots = [s for s in saved if s.translator.name in later]
        try:
            done, _errors = chain.translate([protected[k] for k in ks], src, tgt)
        finally:
            chain.slots = saved
        for pos, k in enumerate(ks):
            if pos not in done:
                continue
            out, prov = done[pos]
            try:
                final = restore(out, replacements[k]).strip()
            except ValueError:
                continue
            norm, core = to_send[k]
            if lost_text(core, final):
                continue
            translated[norm] = (final, prov)
            failures.pop(norm, None)
            new_entries.append(Entry(src, tgt, core, final, prov))


def _reason(err: TranslationError | None) -> str:
    if err is None:
        return "not translated"
    return f"{err.provider}: {error_kind(err)}: {err.message}" if err.provider else err.message


def _summary_text(summary_html: str, original_text: str, limit: int) -> str:
    """The plain-text summary of a translated HTML summary, bounded like the original."""
    try:
        from newsexchange.ingest.clean import to_text
    except ImportError:
        text = " ".join(_html.unescape(_TAG.sub(" ", summary_html)).split())
        return text[:limit]
    return to_text(summary_html, max(limit, len(original_text)))


def _write(
    db: Database,
    jobs: list[Job],
    entries: list[Entry],
    chain: Chain,
    config: Config,
    report: TranslateReport,
    now: datetime,
) -> None:
    """Step 4: one short transaction for the page."""
    cap = config.translation.max_attempts_backoff_hours
    with db.session() as s:
        store(s, entries, now=now)
        ids = sorted({j.item_id for j in jobs})
        rows: dict[tuple[int, str], Translation] = {}
        for i in range(0, len(ids), 500):
            for t in s.scalars(
                select(Translation).where(Translation.item_id.in_(ids[i : i + 500]))
            ):
                rows[(t.item_id, t.language)] = t
        finished: set[int] = set()
        new_rows: list[_NewRow] = []
        for j in jobs:
            row: Any = rows.get((j.item_id, j.target))
            if row is None:
                # New rows (most of them) go in as one executemany below: the ORM's unit of
                # work costs more than the rest of the page's writing.
                row = _NewRow(item_id=j.item_id, language=j.target, created_at=now)
                new_rows.append(row)
                rows[(j.item_id, j.target)] = row
            row.updated_at = now
            row.source_hash = j.source_hash
            if j.action == "original":
                row.title, row.summary_html = j.item_title, j.item_summary_html
                row.summary_text = j.item_summary_text
                row.provider, row.status, row.error = "original", "done", None
                row.next_attempt_at, row.attempts = None, 0
                report.originals += 1
                finished.add(j.item_id)
                continue
            blank = [
                f.name for f in j.fields if f.result is not None and lost_text(f.value, f.result)
            ]
            if blank and j.error is None:
                # The last guard: whatever path produced it, a blank field is not done.
                j.error = f"empty translation of the {blank[0].replace('_', ' ')}"
            if j.error is None and all(f.result is not None for f in j.fields):
                values = {f.name: clean_text(f.result or "") for f in j.fields}
                # A title is shown in subjects and lists: no bidi or zero-width characters.
                row.title = clean_name(values.get("title", ""))
                if "summary_html" in values:
                    row.summary_html = values["summary_html"]
                    row.summary_text = _summary_text(
                        values["summary_html"], j.item_summary_text, config.fetch.summary_chars
                    )
                else:
                    row.summary_text = values.get("summary_text", "")
                    row.summary_html = _text_html(row.summary_text)
                origins = [f.origin for f in j.fields if f.origin]
                providers = [o for o in origins if o not in ("editor", "memory", "glossary")]
                row.provider = (
                    providers[0] if providers else ("editor" if "editor" in origins else "memory")
                )
                row.status, row.error, row.next_attempt_at = "done", None, None
                row.attempts = (row.attempts or 0) + 1
                report.translations_done += 1
                finished.add(j.item_id)
                continue
            # Not translated: keep it pending (retryable) or failed (needs a fix: key, quota,
            # language), with the reason, and try again later. Stale text is cleared so an
            # outdated translation never stands in for the changed item.
            row.attempts = (row.attempts or 0) + 1
            row.status = "pending" if j.retryable else "failed"
            row.error = j.error or "not translated"
            delay = (
                backoff_seconds(row.attempts, cap_hours=cap, retry_after=j.retry_after)
                if j.retryable
                else cap * 3600.0
            )
            row.next_attempt_at = now + timedelta(seconds=delay)
            row.title = row.summary_html = row.summary_text = None
            row.provider = None
            report.failed.append(
                {
                    "item": j.item_id,
                    "language": j.target,
                    "status": row.status,
                    "reason": row.error,
                    "attempts": row.attempts,
                    "next_attempt_at": row.next_attempt_at.isoformat(),
                }
            )
        if new_rows:
            s.flush()
            s.connection().execute(_insert_new(s), [vars(r) for r in new_rows])
        report.items_translated += len(finished)
        _record_usage(s, chain, now)
        chain.usage.clear()


def _insert_new(session: Session) -> Any:
    """INSERT of new translation rows. Two runs at once (the service and a console command)
    can both translate the same new item; the first to commit wins and the other's identical
    row is dropped instead of failing the page."""
    dialect = session.get_bind().dialect.name
    if dialect in ("sqlite", "postgresql"):
        from sqlalchemy.dialects import postgresql, sqlite

        ins: Any = sqlite.insert if dialect == "sqlite" else postgresql.insert
        return ins(Translation).on_conflict_do_nothing(index_elements=["item_id", "language"])
    return insert(Translation)


@dataclass
class _NewRow:
    """The columns of a Translation row not yet in the database."""

    item_id: int
    language: str
    created_at: datetime
    updated_at: datetime | None = None
    title: str | None = None
    summary_html: str | None = None
    summary_text: str | None = None
    provider: str | None = None
    status: str = "pending"
    error: str | None = None
    attempts: int = 0
    next_attempt_at: datetime | None = None
    source_hash: str | None = None


def _text_html(text: str) -> str:
    return f"<p>{_html.escape(text, quote=False)}</p>" if text else ""


def _record_usage(session: Session, chain: Chain, now: datetime) -> None:
    """Requests, characters and health per provider per UTC day (provider_usage)."""
    day = now.date()
    for name, u in chain.usage.items():
        row = _usage_row(session, name, day)
        row.requests = (row.requests or 0) + u["requests"]
        row.characters = (row.characters or 0) + u["characters"]
        row.failures = (row.failures or 0) + u["failures"]
        if u["error"] and not u["ok"]:
            row.last_error = u["error"]
            if row.down_since is None:
                row.down_since = now
        elif u["ok"]:
            row.down_since = None
            if u["error"]:
                row.last_error = u["error"]


def _usage_row(session: Session, provider: str, day: date) -> ProviderUsage:
    row = session.scalars(
        select(ProviderUsage).where(ProviderUsage.provider == provider, ProviderUsage.day == day)
    ).first()
    if row is None:
        # A provider down since yesterday is still down since yesterday.
        prev = session.scalars(
            select(ProviderUsage)
            .where(ProviderUsage.provider == provider, ProviderUsage.day < day)
            .order_by(ProviderUsage.day.desc())
        ).first()
        row = ProviderUsage(
            provider=provider,
            day=day,
            requests=0,
            characters=0,
            failures=0,
            down_since=prev.down_since if prev else None,
            last_error=prev.last_error if prev and prev.down_since else None,
        )
        session.add(row)
        session.flush()
    return row


def providers_down(
    session: Session, *, now: datetime, longer_than: timedelta = timedelta(hours=1)
) -> list[dict[str, Any]]:
    """Providers failing without a success for longer than ``longer_than`` (for the service's
    operator alert): ``[{provider, down_since, last_error}]``."""
    latest: dict[str, ProviderUsage] = {}
    for row in session.scalars(select(ProviderUsage).order_by(ProviderUsage.day)):
        latest[row.provider] = row
    return [
        {"provider": p, "down_since": r.down_since, "last_error": r.last_error}
        for p, r in sorted(latest.items())
        if r.down_since is not None and now - r.down_since >= longer_than
    ]


#: Items changed this recently are always looked at (their text hash decides). A fetch run
#: stamps changed items with the ``now`` it started with, which can be earlier than a translate
#: run that finished meanwhile; within this window every run compares the hashes, so such a
#: change is never missed unless one fetch run lasts longer than this.
RECHECK = timedelta(hours=6)


def _maybe_due(
    config: Config, exchanges: list[tuple[Sequence[str], str]], now: datetime
) -> ColumnElement[bool]:
    """A SQL filter that leaves out items certainly done: every wanted language has a done
    translation written after the item's last change, and the item has not changed lately.
    Without it, every run would load every item ever stored; the pure decision
    (:func:`.plan.decide`) still judges each item that passes."""
    wanted = {r: len(wanted_languages(r, exchanges)) for r in config.regions}
    need: Any = case(wanted, value=Item.region, else_=1) if wanted else 1
    # Only item_id in the WHERE: with the status there too, SQLite's planner picks the
    # (status, next_attempt_at) index and scans every done row for every item (minutes for
    # 10,000 items); the conditions go into the count instead.
    # A done row with a blank title for an item with one is not current (blank answers were
    # once stored as done; :func:`_lost` judges them exactly).
    blank_title = and_(
        func.trim(func.coalesce(Translation.title, "")) == "", func.trim(Item.title) != ""
    )
    current = and_(
        Translation.status == "done",
        Translation.updated_at >= Item.updated_at,
        ~blank_title,
    )
    done_current = (
        select(func.count(case((current, 1))))
        .where(Translation.item_id == Item.id)
        .correlate(Item)
        .scalar_subquery()
    )
    return or_(Item.updated_at >= now - RECHECK, done_current < need)


def _load_glossary(config: Config) -> Glossary:
    if not config.translation.glossary:
        return Glossary()
    return load_glossary(config.resolve(config.translation.glossary))


def _used_today(db: Database, chain: Chain, now: datetime) -> None:
    with db.session() as s:
        for slot in chain.slots:
            if slot.chars_per_day is None:
                continue
            row = s.scalars(
                select(ProviderUsage).where(
                    ProviderUsage.provider == slot.translator.name,
                    ProviderUsage.day == now.date(),
                )
            ).first()
            slot.used_today = row.characters if row else 0


def run_translate(
    db: Database,
    config: Config,
    *,
    now: datetime,
    limit: int | None = None,
    translators: Sequence[Translator] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> TranslateReport:
    """Translate what is due (see the module docstring). ``limit`` caps the items worked on.
    ``translators`` replaces the configured chain (the benchmark and tests of the chain)."""
    started = time.perf_counter()
    report = TranslateReport()
    glossary = _load_glossary(config)
    own = translators is None
    if translators is None:
        from newsexchange.translate.providers import build_translators

        translators = build_translators(config)
    chain = Chain(translators, config, report, sleep=sleep)
    exchanges: list[tuple[Sequence[str], str]] = [(e.from_, e.language) for e in config.exchanges]
    detect = _detector()
    try:
        _used_today(db, chain, now)
        due = _maybe_due(config, exchanges, now)
        last_id = 0
        worked = 0
        while limit is None or worked < limit:
            with db.session() as s:
                items = list(
                    s.scalars(
                        select(Item).where(Item.id > last_id, due).order_by(Item.id).limit(PAGE)
                    )
                )
                if not items:
                    break
                last_id = items[-1].id
                jobs: list[Job] = []
                for item in items:
                    report.items_seen += 1
                    item_jobs = _snapshot(item, config, exchanges, now, detect)
                    if not item_jobs:
                        continue
                    if limit is not None and worked >= limit:
                        break
                    worked += 1
                    jobs.extend(item_jobs)
            if not jobs:
                continue
            entries = _translate_jobs(db, jobs, chain, glossary, report)
            _write(db, jobs, entries, chain, config, report, now)
        with db.session() as s:
            report.pending = len(
                list(
                    s.scalars(
                        select(Translation.id).where(Translation.status.in_(("pending", "failed")))
                    )
                )
            )
    finally:
        if own:
            for t in translators:
                t.close()
    report.elapsed_seconds = time.perf_counter() - started
    log.info("translated", extra={k: v for k, v in report.to_json().items() if k != "failed"})
    return report


def iter_translations(item: Item) -> Iterable[dict[str, Any]]:
    """An item's translations as plain data (for ``items --json`` and ``translation show``)."""
    for t in sorted(item.translations, key=lambda t: t.language):
        yield {
            "language": t.language,
            "status": t.status,
            "provider": t.provider,
            "title": t.title,
            "summary_text": t.summary_text,
            "summary_html": t.summary_html,
            "error": t.error,
            "attempts": t.attempts,
            "next_attempt_at": t.next_attempt_at,
            "updated_at": t.updated_at,
        }
