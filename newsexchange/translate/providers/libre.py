"""LibreTranslate's documented HTTP API: ``POST {url}/translate`` ``{q: [...], source, target,
format, api_key?}`` → ``{translatedText: [...]}``; ``GET {url}/languages`` lists the pairs it
has.

**Decision: a direct httpx client, not deep-translator's ``LibreTranslator``.** That class
(1.11.4) has a fixed language list without Finnish, insists on a key and takes no timeout.
Ours sends every segment of a request in one ``q`` list.
"""

from __future__ import annotations

from typing import Any

from newsexchange.config import ProviderSettings
from newsexchange.translate.base import Format, ProviderError, provider_error
from newsexchange.translate.providers.http import HTTPProvider

__all__ = ["LibreTranslator"]

#: LibreTranslate has no limit unless its operator sets ``--char-limit`` (libretranslate.com:
#: 2,000 with a free key), so 2,000 is the safe default.
MAX_CHARS = 2000


class LibreTranslator(HTTPProvider):
    max_texts = 100

    def __init__(self, settings: ProviderSettings, api_key: str | None) -> None:
        if not settings.url:
            raise ValueError("libre needs url")
        super().__init__(settings, api_key, MAX_CHARS)
        self.name = "libre"
        self.url = settings.url.rstrip("/")
        self._pairs: dict[str, set[str]] | None = None

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        return self._request(method, self.url + path, where=path, **kw)

    def _supported(self, source: str, target: str) -> bool:
        """Does the server have this pair? Asked once per run; a server that cannot say
        (older versions, proxies) is simply tried."""
        if self._pairs is None:
            self._pairs = {}
            try:
                resp = self._call("GET", "/languages")
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
        resp = self._call("POST", "/translate", json=body)
        if resp.status_code != 200:
            try:
                message = str(resp.json().get("error", ""))
            except ValueError:
                message = resp.text[:200]
            raise self._status_error(resp, message)
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
