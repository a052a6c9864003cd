"""The translation providers: one class per wire format, chosen by ``translation.providers``.

- ``libre``: LibreTranslate's documented HTTP API over httpx (``POST /translate`` with ``q`` as a
  list, ``GET /languages``). deep-translator 1.11.4's ``LibreTranslator`` has a fixed language
  list without Finnish and insists on a key, so it is not used.
- ``google``, ``deepl``, ``microsoft``, ``mymemory``: through deep-translator 1.11.4.
- ``argos``: Argos Translate, offline, when its fi/ru/en packages are installed (optional extra
  ``argos``; imported lazily because it pulls in torch/CTranslate2).

**No hung step.** deep-translator calls ``requests.get``/``post`` with no timeout (e.g.
``GoogleTranslator.translate``), so a provider that accepts the connection and never answers
would block forever. Two bounds apply to every provider call:

1. per socket operation: inside deep-translator's provider modules the name ``requests`` is
   rebound to :class:`_BoundedRequests`, which forwards to ``requests.request`` with the
   provider's ``timeout`` (and remembers the response, so a failure can be classified by its
   real status and ``Retry-After`` even though the library turns it into a bare exception);
   httpx gets the same timeout for LibreTranslate;
2. wall clock: :func:`bounded_call` runs the call in a daemon thread and stops waiting after
   ``timeout`` seconds, which also covers a server that drips its answer a byte at a time
   (each read within the socket timeout, the whole far beyond it). The abandoned thread ends at
   its next socket timeout; the step moves on to the next provider at once.

Errors are classified into :class:`~newsexchange.translate.base.ProviderError` (timeout, 429
with Retry-After, 5xx, quota, bad key, unsupported pair, bad answer). Messages never contain a
key: deep-translator's own exception texts can (``AuthorizationException`` prints the DeepL
key), so only their type names are used, and every message is scrubbed of the key anyway.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
import requests

from newsexchange.config import Config, ProviderSettings
from newsexchange.errors import TranslationError
from newsexchange.translate.base import Format, ProviderError, classify_status, provider_error

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Request limits (characters per request) of each provider's API, before config overrides.
#: Google's web endpoint refuses 5,000 characters or more (deep-translator checks
#: ``len(text) < 5000``); MyMemory refuses 500 or more; DeepL takes 128 KiB per request;
#: Microsoft 50,000 per request; LibreTranslate has no limit unless its operator sets
#: ``--char-limit`` (libretranslate.com: 2,000 with a free key), so 2,000 is the safe default.
DEFAULT_MAX_CHARS = {
    "libre": 2000,
    "google": 4999,
    "deepl": 30000,
    "microsoft": 10000,
    "mymemory": 499,
    "argos": 2000,
}

#: Default service roots; a provider's ``url`` in feeds.yaml replaces them (tests point them
#: at a local server speaking the provider's wire format).
DEFAULT_URLS = {
    "google": "https://translate.google.com",
    "deepl": "https://api.deepl.com",
    "deepl-free": "https://api-free.deepl.com",
    "microsoft": "https://api.cognitive.microsofttranslator.com",
    "mymemory": "https://api.mymemory.translated.net",
}


def bounded_call(fn: Callable[[], T], *, timeout: float, provider: str) -> T:
    """Run ``fn`` and give up waiting after ``timeout`` seconds (see the module docstring)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed over to the waiting thread below
            box["error"] = exc

    thread = threading.Thread(target=run, name=f"translate-{provider}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise provider_error(provider, "timeout", f"no answer within {timeout:g} s")
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


def _scrub(message: str, secret: str | None) -> str:
    return message.replace(secret, "***") if secret else message


# -- LibreTranslate ----------------------------------------------------------------------------


class LibreTranslator:
    """LibreTranslate's HTTP API: ``POST /translate`` ``{q: [...], source, target, format,
    api_key?}`` → ``{translatedText: [...]}``; ``GET /languages`` lists the pairs it has."""

    max_texts = 100

    def __init__(self, settings: ProviderSettings, api_key: str | None) -> None:
        if not settings.url:
            raise ValueError("libre needs url")
        self.name = "libre"
        self.url = settings.url.rstrip("/")
        self.max_chars = settings.max_chars or DEFAULT_MAX_CHARS["libre"]
        self.timeout = settings.timeout
        self._key = api_key
        # TCP_NODELAY: httpx writes a POST's headers and body separately; with Nagle on, the
        # body waits for the server's delayed ACK (~40 ms per request on Linux).
        transport = httpx.HTTPTransport(
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
        )
        self._client = httpx.Client(
            timeout=httpx.Timeout(settings.timeout), trust_env=False, transport=transport
        )
        self._pairs: dict[str, set[str]] | None = None
        self.requests_made = 0

    def close(self) -> None:
        self._client.close()

    def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        self.requests_made += 1
        try:
            return self._client.request(method, self.url + path, **kw)
        except httpx.TimeoutException as exc:
            raise provider_error(self.name, "timeout", f"{type(exc).__name__} at {path}") from exc
        except httpx.HTTPError as exc:
            raise provider_error(self.name, "unreachable", f"{type(exc).__name__}: {exc}") from exc

    def _supported(self, source: str, target: str) -> bool:
        """Does the server have this pair? Asked once per run; a server that cannot say
        (older versions, proxies) is simply tried."""
        if self._pairs is None:
            self._pairs = {}
            try:
                resp = self._request("GET", "/languages")
                if resp.status_code == 200:
                    for lang in resp.json():
                        self._pairs[str(lang["code"])] = {str(t) for t in lang.get("targets", [])}
            except (ProviderError, ValueError, KeyError, TypeError):
                self._pairs = {}
        if not self._pairs:
            return True
        return target in self._pairs.get(source, set())

    def translate(
        self, texts: list[str], source: str, target: str, *, fmt: Format = "text"
    ) -> list[str]:
        if not self._supported(source, target):
            raise provider_error(
                self.name,
                "unsupported",
                f"{source}→{target} is not installed on {self.url} (see GET /languages)",
            )
        body: dict[str, Any] = {"q": texts, "source": source, "target": target, "format": fmt}
        if self._key:
            body["api_key"] = self._key
        resp = self._request("POST", "/translate", json=body)
        if resp.status_code != 200:
            try:
                message = str(resp.json().get("error", ""))
            except ValueError:
                message = resp.text[:200]
            raise classify_status(
                self.name,
                resp.status_code,
                _scrub(message, self._key),
                resp.headers.get("Retry-After"),
            )
        try:
            out = resp.json().get("translatedText")
        except (ValueError, AttributeError) as exc:
            raise provider_error(self.name, "bad_answer", "the answer is not JSON") from exc
        if isinstance(out, str) and len(texts) == 1:
            out = [out]
        if (
            not isinstance(out, list)
            or len(out) != len(texts)
            or not all(isinstance(t, str) for t in out)
        ):
            raise provider_error(
                self.name,
                "bad_answer",
                f"expected {len(texts)} translations in translatedText, got {type(out).__name__}",
            )
        return out


# -- deep-translator ---------------------------------------------------------------------------

_calls = threading.local()


class _BoundedRequests:
    """Stands in for the ``requests`` module inside deep-translator's provider modules: every
    call gets the provider's timeout, and the last response/exception is kept per thread so the
    caller can classify a failure by its HTTP status and Retry-After header."""

    exceptions = requests.exceptions

    def __init__(
        self,
        rewrite: Callable[[str, str, dict[str, Any]], tuple[str, str, dict[str, Any]]]
        | None = None,
    ) -> None:
        self._rewrite = rewrite

    def get(self, url: str, params: Any = None, **kw: Any) -> requests.Response:
        return self.request("GET", url, params=params, **kw)

    def post(self, url: str, **kw: Any) -> requests.Response:
        return self.request("POST", url, **kw)

    def request(self, method: str, url: str, **kw: Any) -> requests.Response:
        kw["timeout"] = getattr(_calls, "timeout", 30.0)
        if self._rewrite:
            method, url, kw = self._rewrite(method, url, kw)
        _calls.response = None
        _calls.exc = None
        try:
            resp = requests.request(method, url, **kw)  # noqa: S113 - timeout is in kw
        except requests.RequestException as exc:
            _calls.exc = exc
            raise
        _calls.response = resp
        return resp


def _deepl_rewrite(method: str, url: str, kw: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """deep-translator 1.11.4 sends DeepL ``GET /v2/translate?auth_key=…&text=…``. DeepL stopped
    accepting GET on /translate and keys in query parameters (change notices of March 2025 and
    November 2025, final on 2026-01-15): send the same fields as a POST form with the key in the
    ``Authorization: DeepL-Auth-Key …`` header instead, and keep the key out of every URL."""
    params = dict(kw.pop("params", None) or {})
    key = params.pop("auth_key", "")
    headers = dict(kw.pop("headers", None) or {})
    headers["Authorization"] = f"DeepL-Auth-Key {key}"
    return "POST", url, {**kw, "data": params, "headers": headers}


_installed = False
_install_lock = threading.Lock()


def _install_bounded_requests() -> None:
    global _installed
    with _install_lock:
        if _installed:
            return
        from deep_translator import deepl, google, microsoft, mymemory

        google.requests = _BoundedRequests()  # type: ignore[attr-defined]
        mymemory.requests = _BoundedRequests()  # type: ignore[attr-defined]
        microsoft.requests = _BoundedRequests()  # type: ignore[attr-defined]
        deepl.requests = _BoundedRequests(_deepl_rewrite)  # type: ignore[attr-defined]
        _installed = True


class DeepTranslator:
    """Google, DeepL, Microsoft or MyMemory through deep-translator, one text per request.

    These APIs take one text per call in deep-translator, so several segments are joined with
    newlines into one request (the pipeline packs them under ``max_chars`` counting the
    newlines); when the answer does not come back with as many lines, each segment is sent on
    its own, so a provider that merges lines costs requests but never misplaces a sentence.
    """

    max_texts = 50

    def __init__(self, settings: ProviderSettings, api_key: str | None) -> None:
        _install_bounded_requests()
        self.name = settings.name
        self.settings = settings
        self.max_chars = settings.max_chars or DEFAULT_MAX_CHARS[settings.name]
        self.timeout = settings.timeout
        self._key = api_key
        if settings.name in ("deepl", "microsoft") and not api_key:
            # Checked here so the report says which variable is missing.
            self._missing_key = f"no key: the environment variable {settings.api_key_env} is unset"
        else:
            self._missing_key = ""
        self.requests_made = 0

    def close(self) -> None:
        pass

    # The library objects are cheap and keep per-call state in ``_url_params``: one per call.
    def _library(self, source: str, target: str) -> Any:
        from deep_translator import (
            DeeplTranslator,
            GoogleTranslator,
            MyMemoryTranslator,
        )

        url = self.settings.url.rstrip("/") if self.settings.url else None
        if self.name == "google":
            t = GoogleTranslator(source=source, target=target)
            t._base_url = (url or DEFAULT_URLS["google"]) + "/m"
        elif self.name == "mymemory":
            codes = {"fi": "fi-FI", "ru": "ru-RU", "en": "en-GB"}
            t = MyMemoryTranslator(
                source=codes.get(source, source), target=codes.get(target, target)
            )
            t._base_url = (url or DEFAULT_URLS["mymemory"]) + "/get"
        elif self.name == "deepl":
            free = bool(self._key and self._key.endswith(":fx"))  # DeepL's mark of a Free key
            t = DeeplTranslator(source=source, target=target, api_key=self._key)
            t._base_url = (url or DEFAULT_URLS["deepl-free" if free else "deepl"]) + "/v2/"
        elif self.name == "microsoft":
            t = _Microsoft(
                source=source, target=target, api_key=self._key, region=self.settings.region
            )
            t._base_url = (url or DEFAULT_URLS["microsoft"]) + "/translate?api-version=3.0"
        else:  # pragma: no cover - config validation limits the names
            raise provider_error(self.name, "unsupported", "unknown provider")
        return t

    def _one(self, text: str, source: str, target: str) -> str:
        """One request, bounded, with the failure classified."""
        _calls.timeout = self.timeout
        _calls.response = None
        _calls.exc = None
        self.requests_made += 1
        try:
            result = self._library(source, target).translate(text)
        except ProviderError:
            raise
        except Exception as exc:
            raise self._classify(exc) from None
        resp: requests.Response | None = _calls.response
        if self.name == "mymemory" and resp is not None:
            self._check_mymemory(resp, result)
        if not isinstance(result, str) or (not result.strip() and text.strip()):
            raise provider_error(self.name, "bad_answer", "no translation in the answer")
        return result

    def _check_mymemory(self, resp: requests.Response, result: Any) -> None:
        """MyMemory answers HTTP 200 even when it refuses: the refusal is in responseStatus and
        the "translation" is a warning text (quota: "MYMEMORY WARNING: YOU USED ALL AVAILABLE
        FREE TRANSLATIONS FOR TODAY…"). deep-translator returns that text as the translation."""
        try:
            status = int(resp.json().get("responseStatus", 200))
        except (ValueError, TypeError, AttributeError):
            status = 200
        text = result if isinstance(result, str) else ""
        if "MYMEMORY WARNING" in text.upper():
            raise provider_error(self.name, "quota", text[:200])
        if status != 200:
            raise classify_status(self.name, status, text, resp.headers.get("Retry-After"))

    def _classify(self, exc: Exception) -> TranslationError:
        net: BaseException | None = getattr(_calls, "exc", None)
        resp: requests.Response | None = getattr(_calls, "response", None)
        if isinstance(net, requests.Timeout):
            return provider_error(self.name, "timeout", f"{type(net).__name__}")
        if isinstance(net, requests.RequestException):
            return provider_error(self.name, "unreachable", f"{type(net).__name__}")
        if resp is not None and not 200 <= resp.status_code < 300:
            return classify_status(
                self.name,
                resp.status_code,
                _scrub(_error_text(resp), self._key),
                resp.headers.get("Retry-After"),
            )
        name = type(exc).__name__
        if name in ("LanguageNotSupportedException", "InvalidSourceOrTargetLanguage"):
            return provider_error(self.name, "unsupported", f"{name}: language not supported")
        if name == "ApiKeyException":
            return provider_error(self.name, "auth", "no key given")
        return provider_error(self.name, "bad_answer", f"{name} from deep-translator")

    def translate(
        self, texts: list[str], source: str, target: str, *, fmt: Format = "text"
    ) -> list[str]:
        if self._missing_key:
            raise provider_error(self.name, "auth", self._missing_key)
        if len(texts) > 1 and not any("\n" in t for t in texts):
            joined = self._one("\n".join(texts), source, target)
            lines = joined.split("\n")
            if len(lines) == len(texts):
                return lines
            log.debug(
                "provider merged lines; sending one by one",
                extra={"provider": self.name, "sent": len(texts), "got": len(lines)},
            )
        return [self._one(t, source, target) for t in texts]


def _error_text(resp: requests.Response) -> str:
    try:
        data = resp.json()
    except ValueError:
        return resp.text[:200]
    if isinstance(data, dict):
        err = data.get("error", data.get("message", ""))
        if isinstance(err, dict):
            return str(err.get("message", err))
        return str(err)
    return ""


def _microsoft_class() -> type:
    from deep_translator import MicrosoftTranslator

    class Microsoft(MicrosoftTranslator):  # type: ignore[misc]
        """deep-translator asks Microsoft for its language list in the constructor (an
        unbounded request to a fixed URL on every construction); the exchange needs three."""

        def _get_supported_languages(self) -> dict[str, str]:
            return {"english": "en", "finnish": "fi", "russian": "ru"}

    return Microsoft


def _Microsoft(**kw: Any) -> Any:
    return _microsoft_class()(**kw)


# -- Argos Translate (offline) -----------------------------------------------------------------


class ArgosTranslator:
    """Argos Translate with its installed packages; a pair without a package of its own goes
    through English (fi→en→ru), as LibreTranslate itself does."""

    max_texts = 50

    def __init__(self, settings: ProviderSettings) -> None:
        self.name = "argos"
        self.max_chars = settings.max_chars or DEFAULT_MAX_CHARS["argos"]
        self.timeout = settings.timeout
        self.requests_made = 0

    def close(self) -> None:
        pass

    def _translation(self, source: str, target: str) -> Any:
        try:
            import argostranslate.translate as argos
        except ImportError:
            raise provider_error(
                self.name,
                "unsupported",
                "argostranslate is not installed (pip install 'newsexchange[argos]'; see "
                "docs/translation.md for the fi/ru/en packages)",
            ) from None
        langs = {lang.code: lang for lang in argos.get_installed_languages()}
        if source not in langs or target not in langs:
            raise provider_error(
                self.name,
                "unsupported",
                f"no Argos package for {source}→{target} (installed: {', '.join(sorted(langs))})",
            )
        direct = langs[source].get_translation(langs[target])
        if direct is not None:
            return direct
        if "en" in langs:
            first = langs[source].get_translation(langs["en"])
            second = langs["en"].get_translation(langs[target])
            if first is not None and second is not None:
                return _Pivot(first, second)
        raise provider_error(
            self.name, "unsupported", f"no Argos package for {source}→{target}, nor via English"
        )

    def translate(
        self, texts: list[str], source: str, target: str, *, fmt: Format = "text"
    ) -> list[str]:
        tr = self._translation(source, target)
        self.requests_made += 1
        return [str(tr.translate(t)) for t in texts]


class _Pivot:
    def __init__(self, first: Any, second: Any) -> None:
        self.first, self.second = first, second

    def translate(self, text: str) -> str:
        return str(self.second.translate(self.first.translate(text)))


# -- the chain ---------------------------------------------------------------------------------


class BoundedTranslator:
    """A provider with the wall-clock bound around every call (see the module docstring)."""

    def __init__(
        self, inner: Any, timeout: float, *, settings: ProviderSettings | None = None
    ) -> None:
        self.inner = inner
        self.settings = settings
        self.name: str = inner.name
        self.max_chars: int = inner.max_chars
        self.max_texts: int = inner.max_texts
        self.timeout = timeout

    def translate(
        self, texts: list[str], source: str, target: str, *, fmt: Format = "text"
    ) -> list[str]:
        # deep-translator providers may send one request per text after a line mismatch, so
        # the bound grows with the texts; a single request still gets ``timeout``.
        single = isinstance(self.inner, LibreTranslator | ArgosTranslator)
        budget = self.timeout * (1 if single else max(1, min(len(texts), 3)))

        def call() -> list[str]:
            return list(self.inner.translate(texts, source, target, fmt=fmt))

        return bounded_call(call, timeout=budget, provider=self.name)

    def close(self) -> None:
        self.inner.close()


def build_translators(config: Config) -> list[BoundedTranslator]:
    """The configured chain, in order. Keys come from the environment variables named in the
    file; a missing key is reported when the provider is tried, not here, so the rest of the
    chain still runs. A second provider of the same kind (two LibreTranslate servers) is named
    ``libre-2`` in reports and usage, so each has its own limits and health."""
    out: list[BoundedTranslator] = []
    seen: dict[str, int] = {}
    for p in config.translation.providers:
        key = config.secret(p.api_key_env)
        inner: Any
        if p.name == "libre":
            inner = LibreTranslator(p, key)
        elif p.name == "argos":
            inner = ArgosTranslator(p)
        else:
            inner = DeepTranslator(p, key)
        seen[p.name] = seen.get(p.name, 0) + 1
        if seen[p.name] > 1:
            inner.name = f"{p.name}-{seen[p.name]}"
        out.append(BoundedTranslator(inner, p.timeout, settings=p))
    return out
