"""Steps 2 and 3 of the translate step: fill every field of every job of a page from the
translation memory, then from the providers.

Per language pair: each field is looked up whole in the memory; what is missing is cut into
sentences (:mod:`.fields`), which are looked up in turn; the sentences still missing go to the
provider chain once each, with the glossary terms protected (:mod:`.glossary`); then each
field is assembled from its sentences. A field with a sentence no provider translated stays
untranslated, with the reason (nothing untranslated is ever presented as translated). No
database transaction is open while a provider is being asked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

from newsexchange.db import Database
from newsexchange.errors import TranslationError
from newsexchange.translate.base import (
    ProviderError,
    error_kind,
    has_letters,
    lost_text,
    normalize,
    provider_error,
)
from newsexchange.translate.chain import Chain
from newsexchange.translate.fields import plan_field
from newsexchange.translate.glossary import RETURNED, Glossary, restore
from newsexchange.translate.jobs import FieldJob, Job
from newsexchange.translate.memory import EDITOR, Entry, key_of, lookup
from newsexchange.translate.report import TranslateReport

__all__ = ["translate_jobs"]

#: Origins that are not a provider.
_NOT_PROVIDERS = ("editor", "memory", "glossary")


def translate_jobs(
    db: Database,
    jobs: list[Job],
    chain: Chain,
    glossary: Glossary,
    report: TranslateReport,
) -> list[Entry]:
    """Fill every field of every job from the memory and the providers; returns the new
    memory entries (sentences and assembled fields) to store with the page."""
    by_pair: dict[tuple[str, str], list[Job]] = {}
    for j in jobs:
        if j.action == "translate":
            by_pair.setdefault(j.pair, []).append(j)
    entries: list[Entry] = []
    for (src, tgt), pair_jobs in by_pair.items():
        pair = _Pair(src, tgt, chain, glossary, report, entries)
        pair.fill(db, pair_jobs)
    return entries


@dataclass
class _Pair:
    """The work of one language pair in one page."""

    src: str
    tgt: str
    chain: Chain
    glossary: Glossary
    report: TranslateReport
    entries: list[Entry]
    #: normalized sentence → (translation, origin)
    translated: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: normalized sentence → why it is not translated
    failures: dict[str, ProviderError] = field(default_factory=dict)

    def fill(self, db: Database, jobs: list[Job]) -> None:
        fields = [f for j in jobs for f in j.fields if f.value.strip()]
        for j in jobs:
            for f in j.fields:
                if not f.value.strip():
                    f.result, f.origin = "", "memory"
        self._whole_fields_from_memory(db, fields)
        cores = self._sentences([f for f in fields if f.result is None])
        self._sentences_from_memory(db, cores)
        self._send([(n, c) for n, c in cores.items() if n not in self.translated])
        for j in jobs:
            self._assemble(j)

    # 2a. whole fields
    def _whole_fields_from_memory(self, db: Database, fields: list[FieldJob]) -> None:
        with db.session() as s:
            known = lookup(s, self.src, self.tgt, (f.value for f in fields))
        for f in fields:
            hit = known.get(key_of(f.value))
            if hit:
                f.result, f.origin = hit[0], _memory_origin(hit[1])
                self.report.cache_hits += 1
                self.report.fields_from_memory += 1

    # 2b. sentences of the fields still missing
    def _sentences(self, missing: list[FieldJob]) -> dict[str, str]:
        """``{normalized sentence: sentence}`` of the fields still missing, each once."""
        cores: dict[str, str] = {}
        split_at = self.chain.split_at
        for f in missing:
            f.plan = plan_field(f.value, html=f.html, split_at=split_at)
            for c in f.plan.cores():
                cores.setdefault(normalize(c), c)
        return cores

    def _sentences_from_memory(self, db: Database, cores: dict[str, str]) -> None:
        if not cores:
            return
        with db.session() as s:
            known = lookup(s, self.src, self.tgt, cores.values())
        for norm, core in cores.items():
            hit = known.get(key_of(core))
            if hit:
                self.translated[norm] = (hit[0], _memory_origin(hit[1]))
                self.report.cache_hits += 1
                self.report.segments_from_memory += 1

    # 3. the providers, each distinct sentence once, glossary terms protected
    def _send(self, to_send: list[tuple[str, str]]) -> None:
        if not to_send:
            return
        protected: list[str] = []
        replacements: list[list[str]] = []
        send_idx: list[int] = []
        for k, (norm, core) in enumerate(to_send):
            text, reps = self.glossary.protect(core, self.src, self.tgt)
            protected.append(text)
            replacements.append(reps)
            if has_letters(RETURNED.sub("", text)):
                send_idx.append(k)
            else:  # nothing but protected terms: no request needed
                self.translated[norm] = (restore(text, reps), "glossary")
        done, errors = self.chain.translate([protected[k] for k in send_idx], self.src, self.tgt)
        for pos, k in enumerate(send_idx):
            norm, core = to_send[k]
            if pos not in done:
                self.failures[norm] = errors[pos]
                continue
            out, provider = done[pos]
            try:
                final = restore(out, replacements[k])
            except ValueError as exc:
                self.failures[norm] = provider_error(provider, "bad_answer", str(exc))
                continue
            final = final.strip()
            if lost_text(core, final):
                self.failures[norm] = provider_error(
                    provider, "bad_answer", "empty translation in the answer"
                )
                continue
            self._keep(norm, core, final, provider)
        if self.failures:
            self._retry_lost_terms(to_send, replacements, protected)

    def _keep(self, norm: str, core: str, final: str, provider: str) -> None:
        self.translated[norm] = (final, provider)
        self.entries.append(Entry(self.src, self.tgt, core, final, provider))

    def _retry_lost_terms(
        self,
        to_send: list[tuple[str, str]],
        replacements: list[list[str]],
        protected: list[str],
    ) -> None:
        """A provider that dropped a placeholder answered the rest well: give only those
        sentences to the providers after it (each one is asked once per run)."""
        failures = self.failures
        lost = [
            k
            for k, (n, _c) in enumerate(to_send)
            if n in failures and "lost protected term" in failures[n].message
        ]
        by_provider: dict[str, list[int]] = {}
        for k in lost:
            by_provider.setdefault(failures[to_send[k][0]].provider or "", []).append(k)
        names = self.chain.names
        for provider, ks in by_provider.items():
            later = names[names.index(provider) + 1 :] if provider in names else []
            if not later:
                continue
            texts = [protected[k] for k in ks]
            done, _errors = self.chain.translate(texts, self.src, self.tgt, only=later)
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
                failures.pop(norm, None)
                self._keep(norm, core, final, prov)

    # 4. assemble
    def _assemble(self, j: Job) -> None:
        for f in j.fields:
            if f.result is not None or f.plan is None:
                continue
            field_cores = [normalize(c) for c in f.plan.cores()]
            lost = [n for n in field_cores if n not in self.translated]
            if lost:
                err = self.failures.get(lost[0])
                j.error = j.error or _reason(err)
                j.retryable = j.retryable and bool(err is None or err.retryable)
                if err is not None and err.retry_after:
                    j.retry_after = max(j.retry_after or 0.0, err.retry_after)
                continue
            origins = {self.translated[n][1] for n in field_cores}
            table = {n: self.translated[n][0] for n in field_cores}
            f.result = f.plan.assemble(partial(_from_table, table))
            providers = [o for o in origins if o not in _NOT_PROVIDERS]
            f.origin = providers[0] if providers else ("editor" if EDITOR in origins else "memory")
            if len(field_cores) > 1 or f.html:
                self.entries.append(
                    Entry(self.src, self.tgt, f.value, f.result, f.origin or "memory")
                )


def _memory_origin(origin: str) -> str:
    return EDITOR if origin == EDITOR else "memory"


def _from_table(table: dict[str, str], core: str) -> str:
    return table[normalize(core)]


def _reason(err: TranslationError | None) -> str:
    if err is None:
        return "not translated"
    return f"{err.provider}: {error_kind(err)}: {err.message}" if err.provider else err.message
