"""The :class:`Translator` protocol and the pure helpers every provider shares.

A translator turns a list of plain-text segments into a list of translations, one request's
worth at a time: the pipeline (``newsexchange.translate``) has already split the text at
sentence boundaries, packed the segments under the provider's ``max_chars`` and protected the
glossary terms, so a provider only speaks its wire format and classifies its failures.

Failures are always :class:`newsexchange.errors.TranslationError` with ``retryable`` (may a
later attempt succeed: timeouts, 429, 5xx) and ``retry_after`` (seconds, from Retry-After);
``kind`` says what happened so the report and provider health can say it too.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from newsexchange.common.retry import parse_retry_after as common_parse_retry_after
from newsexchange.config import ProviderSettings
from newsexchange.errors import TranslationError

Format = Literal["text", "html"]

#: What went wrong, in words a report can show (``TranslationError.kind``).
ErrorKind = Literal[
    "timeout", "unreachable", "rate_limited", "server", "quota", "auth", "unsupported", "bad_answer"
]


@runtime_checkable
class Translator(Protocol):
    """One translation provider, as the chain uses it. ``translate`` sends at most
    ``max_chars`` characters in at most ``max_texts`` texts (the pipeline packs them so), keeps
    the order and raises :class:`TranslationError`.

    ``settings`` are the provider's entry in ``translation.providers`` (rate, daily characters;
    ``None``: looked up by ``name``); ``requests_made`` counts the requests sent so far (one call
    may make several: a language list, one request per text), for the report and usage.
    """

    @property
    def name(self) -> str: ...
    @property
    def max_chars(self) -> int: ...
    @property
    def max_texts(self) -> int: ...
    @property
    def settings(self) -> ProviderSettings | None: ...
    @property
    def requests_made(self) -> int: ...

    def translate(
        self, texts: list[str], source: str, target: str, *, fmt: Format = "text"
    ) -> list[str]: ...

    def close(self) -> None: ...


class Provider(Translator, Protocol):
    """A provider module's translator: a :class:`Translator` that also says whether one call
    may become one request per text (its wall-clock bound grows with the texts then)."""

    @property
    def resends_per_text(self) -> bool: ...


class ProviderError(TranslationError):
    """A classified provider failure: :class:`TranslationError` plus ``kind``."""

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        kind: ErrorKind,
        retryable: bool,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, provider=provider, retryable=retryable, retry_after=retry_after)
        self.kind: ErrorKind = kind


def provider_error(
    provider: str,
    kind: ErrorKind,
    message: str,
    *,
    retry_after: float | None = None,
) -> ProviderError:
    """A :class:`TranslationError` whose ``retryable`` follows from ``kind``.

    Bad keys, exhausted quotas and unsupported language pairs do not heal by retrying the same
    provider in a minute, so the chain moves on and the item is retried after the full backoff;
    everything else (timeouts, 429, 5xx, connection refused) may succeed soon.
    """
    retryable = kind in ("timeout", "unreachable", "rate_limited", "server", "bad_answer")
    return ProviderError(
        message, provider=provider, kind=kind, retryable=retryable, retry_after=retry_after
    )


def error_kind(err: TranslationError) -> str:
    if isinstance(err, ProviderError):
        return err.kind
    return "server" if err.retryable else "unsupported"


def classify_status(
    provider: str, status: int, body: str, retry_after: str | None = None
) -> ProviderError:
    """An HTTP error status (and the provider's message) → a classified error."""
    text = " ".join(body.split())[:200]
    lowered = text.lower()
    if status == 429:
        return provider_error(
            provider,
            "rate_limited",
            f"HTTP 429 too many requests{': ' + text if text else ''}",
            retry_after=parse_retry_after(retry_after),
        )
    if status == 456 or "quota" in lowered or "limit exceeded" in lowered:
        return provider_error(provider, "quota", f"HTTP {status} quota exhausted: {text}")
    if status in (401, 403) or "api key" in lowered or "api_key" in lowered:
        return provider_error(provider, "auth", f"HTTP {status} key refused: {text}")
    if status >= 500:
        return provider_error(
            provider,
            "server",
            f"HTTP {status} server error{': ' + text if text else ''}",
            retry_after=parse_retry_after(retry_after),
        )
    if status == 400 and ("language" in lowered or "not supported" in lowered):
        return provider_error(provider, "unsupported", f"HTTP 400: {text}")
    return provider_error(provider, "bad_answer", f"HTTP {status}: {text}")


def parse_retry_after(value: str | None, *, cap: float = 24 * 3600) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date), at most ``cap``: the one
    parser in :mod:`newsexchange.common.retry`."""
    return common_parse_retry_after(value, cap=cap)


# -- text: normalisation, sentences, packing ---------------------------------------------------

_WS = re.compile(r"\s+")


def normalize(text: str) -> str:
    """The translation-memory key form of a text: NFC, whitespace collapsed, trimmed.

    Case and punctuation are kept: "Joensuu." and "joensuu" may translate differently.
    """
    if not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    return _WS.sub(" ", text).strip()


# A sentence ends at . ! ? … (with closing quotes/brackets) followed by space and something
# that can open a sentence. Abbreviations that end in a dot are common in both languages
# ("esim.", "mm.", "klo", "г.", "ул.", initials "A."), so those do not end a sentence.
_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"»”’)\]]*\s+(?=[\"«„“(\[A-ZÅÄÖÜА-ЯЁ0-9—–-])")
_LAST_WORD = re.compile(r"(\w+)\W*$")
_ABBREVIATION_TEXT = """esim mm ns ks vrt jne yms tms klo n noin prof dos tri fil ts os puh p s
    ym ko eli г гг ул д др т тт им пр проф руб коп тыс млн млрд см стр рис акад св
    e g i dr mr mrs ms st no vs etc jr sr inc ltd co"""
_ABBREVIATIONS = frozenset(_ABBREVIATION_TEXT.split())


def split_sentences(text: str) -> list[str]:
    """Split plain text into sentences, keeping every character (``"".join(parts) == text``).

    Each part but the last keeps the whitespace that followed it, so putting translated
    sentences back together keeps the original spacing.
    """
    parts: list[str] = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        before = text[start : m.start()]
        word = _LAST_WORD.search(before[-60:])
        if word and (word.group(1).lower() in _ABBREVIATIONS or len(word.group(1)) == 1):
            continue
        parts.append(text[start : m.end()])
        start = m.end()
    if start < len(text):
        parts.append(text[start:])
    return parts


def split_long(text: str, max_chars: int) -> list[str]:
    """Cut a text longer than ``max_chars`` at the last clause or word boundary that fits
    (never inside a word unless a single word is longer than the limit)."""
    out: list[str] = []
    while len(text) > max_chars:
        window = text[:max_chars]
        cut = max(window.rfind(sep) for sep in ("; ", ", ", ": ", " — ", " – "))
        if cut > max_chars // 3:
            cut += 2
        else:
            cut = window.rfind(" ")
            cut = cut + 1 if cut > 0 else max_chars
        out.append(text[:cut])
        text = text[cut:]
    if text:
        out.append(text)
    return out


def pack(texts: Sequence[str], max_chars: int, max_texts: int, sep: int = 0) -> Iterator[list[int]]:
    """Group text indexes into requests: each group's characters (plus ``sep`` per text for a
    joining separator) stay within ``max_chars`` and it holds at most ``max_texts`` texts.
    Every text must already fit on its own (see :func:`split_long`)."""
    group: list[int] = []
    size = 0
    for i, t in enumerate(texts):
        n = len(t) + sep
        if group and (size + n > max_chars or len(group) >= max_texts):
            yield group
            group, size = [], 0
        group.append(i)
        size += n
    if group:
        yield group


def has_letters(text: str) -> bool:
    """Is there anything a translator would change? (Numbers, punctuation and placeholders
    alone are kept as they are, without a request.)"""
    return any(ch.isalpha() for ch in text)


_MARKUP = re.compile(r"<[^>]*>|&#?\w+;")


def is_blank(text: str | None) -> bool:
    """No letter or digit in it, markup and entities aside: "", "   ", "<p> </p>", "\u200b".

    A provider answering that for a text with letters has not translated it (issue 10: 32
    empty answers were stored as done and their items vanished from every digest).
    """
    if not text:
        return True
    if "<" in text or "&" in text:
        text = _MARKUP.sub(" ", text)
    return not any(ch.isalnum() for ch in text)


def lost_text(source: str | None, result: str | None) -> bool:
    """Whether ``result`` lost everything ``source`` had to say (a blank translation of a
    text with words): such a result is a failure, never a translation."""
    return is_blank(result) and not is_blank(source)


@dataclass(frozen=True)
class Segment:
    """One sentence to translate: ``core`` without its surrounding whitespace."""

    lead: str
    core: str
    trail: str

    @classmethod
    def of(cls, text: str) -> Segment:
        core = text.strip()
        if not core:
            return cls(text, "", "")
        start = text.index(core)
        return cls(text[:start], core, text[start + len(core) :])
