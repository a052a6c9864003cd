"""The provider chain: texts go through the providers in order, and what one cannot do goes to
the next.

Each provider has a slot holding what the chain keeps track of during a run: its pacing
(``requests_per_second``, through the one :class:`~newsexchange.common.pacing.Pacer`), its daily
character budget (``chars_per_day``, counted across runs in ``provider_usage``) and its health:
a provider that failed (timeout, 429, 5xx, quota, bad key) is out for the rest of the run, or
until its Retry-After, so the next provider takes its work instead of every batch waiting for
the same timeout again. A bad answer (a blank text, a lost placeholder) only costs that batch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from newsexchange.common.pacing import Pacer
from newsexchange.config import Config, ProviderSettings
from newsexchange.errors import TranslationError
from newsexchange.textclean import strip_unstorable
from newsexchange.translate.base import (
    ProviderError,
    Translator,
    error_kind,
    lost_text,
    pack,
    provider_error,
)
from newsexchange.translate.report import TranslateReport

__all__ = ["Chain", "combined"]

log = logging.getLogger("newsexchange.translate")

#: ``{index: (translation, provider)}``: what the chain translated.
Done = dict[int, tuple[str, str]]
#: ``{index: every provider's refusal, in order}``.
History = dict[int, list[ProviderError]]


@dataclass
class _Slot:
    translator: Translator
    pacer: Pacer | None
    chars_per_day: int | None
    used_today: int = 0
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
        by_name: dict[str, ProviderSettings] = {p.name: p for p in config.translation.providers}
        self.report = report
        self.sleep = sleep
        self.clock = clock
        self.slots = [self._slot(t, t.settings or by_name.get(t.name)) for t in translators]
        # per provider, for provider_usage: requests, characters, failures, last error
        self.usage: dict[str, dict[str, Any]] = {}

    def _slot(self, translator: Translator, settings: ProviderSettings | None) -> _Slot:
        rps = settings.requests_per_second if settings else None
        pacer = Pacer(rps, clock=self.clock, sleep=self.sleep) if rps else None
        return _Slot(translator, pacer, settings.chars_per_day if settings else None)

    @property
    def names(self) -> list[str]:
        return [s.translator.name for s in self.slots]

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
        self,
        texts: list[str],
        source: str,
        target: str,
        *,
        only: Collection[str] | None = None,
    ) -> tuple[Done, dict[int, ProviderError]]:
        """Translate ``texts`` (already protected); ``({index: (translation, provider)},
        {index: the error})``. Every index is in exactly one of the two. ``only`` keeps the
        providers of those names (in the chain's order)."""
        slots = [s for s in self.slots if only is None or s.translator.name in only]
        remaining = list(range(len(texts)))
        if not slots:
            err = provider_error(
                "none", "unsupported", "no translation provider configured (translation.providers)"
            )
            return {}, dict.fromkeys(remaining, err)
        done: Done = {}
        history: History = {}
        for slot in slots:
            if not remaining:
                break
            left = self._turn(slot, texts, remaining, source, target, done, history)
            remaining = [i for i in left if i not in done]
        return done, {i: combined(history[i]) for i in remaining}

    def _turn(
        self,
        slot: _Slot,
        texts: list[str],
        remaining: list[int],
        source: str,
        target: str,
        done: Done,
        history: History,
    ) -> list[int]:
        """One provider's turn at ``remaining``, packed under its request limit; returns the
        indexes it did not translate (each with its refusal in ``history``)."""
        t = slot.translator
        left: list[int] = []
        packed = pack([texts[i] for i in remaining], t.max_chars, t.max_texts, sep=1)
        batches = [[remaining[j] for j in batch] for batch in packed]
        for bi, idx in enumerate(batches):
            if slot.blocked_until > self.clock():
                _refuse(idx, self._blocked_error(slot), history, left)
                continue
            chars = sum(len(texts[i]) for i in idx)
            if slot.chars_per_day is not None and slot.used_today + chars > slot.chars_per_day:
                err = provider_error(
                    t.name,
                    "quota",
                    f"daily character limit reached ({slot.chars_per_day} in feeds.yaml)",
                )
                self._failed(slot, err)
                _refuse([i for b in batches[bi:] for i in b], err, history, left)
                break
            out = self._send(slot, [texts[i] for i in idx], source, target)
            if isinstance(out, ProviderError):
                self._failed(slot, out)
                _refuse(idx, out, history, left)
                continue
            self._count_characters(slot, len(idx), chars)
            self._take(slot, idx, texts, out, done, history, left)
        return left

    def _send(
        self, slot: _Slot, texts: list[str], source: str, target: str
    ) -> list[str] | ProviderError:
        """One call to the provider (paced, timed, its requests counted): the translations,
        or the classified failure."""
        t = slot.translator
        if slot.pacer is not None:
            t0 = time.perf_counter()
            slot.pacer.wait()
            self.report.provider_seconds += time.perf_counter() - t0
        before = t.requests_made
        t0 = time.perf_counter()
        out: list[str] | ProviderError
        try:
            out = t.translate(texts, source, target)
            if len(out) != len(texts):
                raise provider_error(
                    t.name, "bad_answer", f"sent {len(texts)} texts, got {len(out)} back"
                )
        except TranslationError as exc:
            out = (
                exc
                if isinstance(exc, ProviderError)
                else provider_error(t.name, "server", exc.message)
            )
        self.report.provider_seconds += time.perf_counter() - t0
        self._count_requests(slot, t.requests_made - before)
        return out

    def _take(
        self,
        slot: _Slot,
        idx: list[int],
        texts: list[str],
        out: list[str],
        done: Done,
        history: History,
        left: list[int],
    ) -> None:
        """Keep the answers of one request; a blank one is this provider failing that text."""
        name = slot.translator.name
        blank: ProviderError | None = None
        for i, t in zip(idx, out, strict=True):
            # An answer is outside data like a feed: what the database cannot hold (NUL …)
            # goes before it is remembered or stored.
            t = strip_unstorable(t)
            if lost_text(texts[i], t):
                # An empty or blank answer is not a translation: the next provider gets it,
                # or it stays pending.
                blank = blank or provider_error(
                    name, "bad_answer", "empty translation in the answer"
                )
                _refuse([i], blank, history, left)
                continue
            done[i] = (t, name)
        if blank is not None:
            self._failed(slot, blank)

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

    def _count_requests(self, slot: _Slot, n: int) -> None:
        name = slot.translator.name
        self._use(name)["requests"] += n
        self.report.requests[name] = self.report.requests.get(name, 0) + n

    def _count_characters(self, slot: _Slot, segments: int, chars: int) -> None:
        name = slot.translator.name
        u = self._use(name)
        u["ok"] = True
        u["characters"] += chars
        slot.used_today += chars
        self.report.characters_sent[name] = self.report.characters_sent.get(name, 0) + chars
        self.report.segments_sent += segments


def _refuse(idx: list[int], err: ProviderError, history: History, left: list[int]) -> None:
    for i in idx:
        history.setdefault(i, []).append(err)
        left.append(i)


def combined(errors: list[ProviderError]) -> ProviderError:
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
