"""DeepL API v2, ``POST {url}/v2/translate`` (form: ``source_lang``, ``target_lang``, ``text``)
with the key in ``Authorization: DeepL-Auth-Key …`` → ``{translations: [{text}]}``; 456 when the
quota is used. A Free key (ending ``:fx``) goes to api-free.deepl.com.

**Decision: a direct httpx client, not deep-translator's ``DeeplTranslator``.** That class
(1.11.4) sends ``GET /v2/translate?auth_key=…&text=…``; DeepL stopped accepting GET on
/translate and keys in query parameters (change notices of March 2025 and November 2025,
final on 2026-01-15), and the class takes no timeout and no base URL. Its messages can hold the
key (``AuthorizationException`` prints it); ours never do. One text per request, as before.
"""

from __future__ import annotations

from newsexchange.config import ProviderSettings
from newsexchange.translate.base import provider_error
from newsexchange.translate.providers.http import KeyedProvider

__all__ = ["DeeplTranslator"]

#: DeepL takes 128 KiB per request.
MAX_CHARS = 30000
URL = "https://api.deepl.com"
FREE_URL = "https://api-free.deepl.com"


class DeeplTranslator(KeyedProvider):
    def __init__(self, settings: ProviderSettings, api_key: str | None) -> None:
        super().__init__(settings, api_key, MAX_CHARS)
        free = bool(api_key and api_key.endswith(":fx"))  # DeepL's mark of a Free key
        root = settings.url.rstrip("/") if settings.url else (FREE_URL if free else URL)
        self.url = root + "/v2/translate"

    def _one(self, text: str, source: str, target: str) -> str:
        resp = self._request(
            "POST",
            self.url,
            data={"source_lang": source, "target_lang": target, "text": text},
            headers={"Authorization": f"DeepL-Auth-Key {self._key}"},
        )
        if not 200 <= resp.status_code < 300:
            raise self._status_error(resp)
        data = self._json(resp)
        try:
            result = data["translations"][0]["text"]
        except (KeyError, IndexError, TypeError):
            result = None
        if not isinstance(result, str):
            raise provider_error(self.name, "bad_answer", "no translation in the answer")
        return result
