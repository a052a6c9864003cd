"""What the HTTP providers share: one httpx client per provider (timeouts, no proxies from the
environment, TCP_NODELAY), failures classified into
:class:`~newsexchange.translate.base.ProviderError`, and keys kept out of every message.

deep-translator (1.11.4) is not used: its classes take no timeout and no base URL, turn an
HTTP error into a bare exception without the status or ``Retry-After`` header, and some send
what the provider no longer accepts (DeepL's GET with ``auth_key``). Each provider module says
what it speaks instead.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import httpx

from newsexchange.config import ProviderSettings
from newsexchange.translate.base import Format, ProviderError, classify_status, provider_error

__all__ = ["HTTPProvider", "KeyedProvider", "OneTextPerRequest", "error_text", "scrub"]

log = logging.getLogger("newsexchange.translate.providers")


def scrub(message: str, secret: str | None) -> str:
    return message.replace(secret, "***") if secret else message


def error_text(resp: httpx.Response) -> str:
    """The provider's own words in an error answer (JSON ``error``/``message``, or the text)."""
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


class HTTPProvider:
    """A provider spoken to over httpx. ``requests_made`` counts every request sent."""

    #: May one call become one request per text (see :class:`OneTextPerRequest`)?
    resends_per_text = False
    max_texts = 50

    def __init__(self, settings: ProviderSettings, api_key: str | None, max_chars: int) -> None:
        self.name = settings.name
        self.settings: ProviderSettings | None = settings
        self.max_chars = settings.max_chars or max_chars
        self.timeout = settings.timeout
        self.requests_made = 0
        self._key = api_key
        # TCP_NODELAY: httpx writes a POST's headers and body separately; with Nagle on, the
        # body waits for the server's delayed ACK (~40 ms per request on Linux).
        transport = httpx.HTTPTransport(
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
        )
        self._client = httpx.Client(
            timeout=httpx.Timeout(settings.timeout), trust_env=False, transport=transport
        )

    def close(self) -> None:
        self._client.close()

    def translate(
        self, texts: list[str], source: str, target: str, *, fmt: Format = "text"
    ) -> list[str]:
        raise NotImplementedError

    def _request(self, method: str, url: str, *, where: str = "", **kw: Any) -> httpx.Response:
        """One request; a timeout or a connection failure raised as classified. ``where`` (a
        path) is named in the message when given."""
        self.requests_made += 1
        try:
            return self._client.request(method, url, **kw)
        except httpx.TimeoutException as exc:
            at = f" at {where}" if where else ""
            raise provider_error(self.name, "timeout", f"{type(exc).__name__}{at}") from exc
        except httpx.HTTPError as exc:
            detail = f": {exc}" if where else ""
            raise provider_error(self.name, "unreachable", f"{type(exc).__name__}{detail}") from exc

    def _status_error(self, resp: httpx.Response, message: str | None = None) -> ProviderError:
        """A non-2xx answer, classified by its status, the provider's words and Retry-After."""
        text = error_text(resp) if message is None else message
        return classify_status(
            self.name, resp.status_code, scrub(text, self._key), resp.headers.get("Retry-After")
        )

    def _json(self, resp: httpx.Response) -> Any:
        try:
            return resp.json()
        except ValueError as exc:
            raise provider_error(self.name, "bad_answer", "the answer is not JSON") from exc


class OneTextPerRequest(HTTPProvider):
    """An API spoken one text per request (Google's page, MyMemory, DeepL and Microsoft as
    deep-translator spoke them). Several segments are joined with newlines into one request (the
    pipeline packs them under ``max_chars`` counting the newlines); when the answer does not
    come back with as many lines, each segment is sent on its own, so a provider that merges
    lines costs requests but never misplaces a sentence."""

    resends_per_text = True
    #: Refused at this length or more (the provider's own limit).
    hard_limit: int | None = None

    def _missing_key(self) -> str:
        """Why no request can be made (a key the provider needs is unset), or ``""``."""
        return ""

    def _one(self, text: str, source: str, target: str) -> str:
        raise NotImplementedError

    def _checked(self, text: str, source: str, target: str) -> str:
        if self.hard_limit is not None and len(text) >= self.hard_limit:
            raise provider_error(
                self.name, "bad_answer", f"NotValidLength: {self.hard_limit} characters or more"
            )
        result = self._one(text, source, target)
        if not result.strip() and text.strip():
            raise provider_error(self.name, "bad_answer", "no translation in the answer")
        return result

    def translate(
        self, texts: list[str], source: str, target: str, *, fmt: Format = "text"
    ) -> list[str]:
        missing = self._missing_key()
        if missing:
            raise provider_error(self.name, "auth", missing)
        if len(texts) > 1 and not any("\n" in t for t in texts):
            joined = self._checked("\n".join(texts), source, target)
            lines = joined.split("\n")
            if len(lines) == len(texts):
                return lines
            log.debug(
                "provider merged lines; sending one by one",
                extra={"provider": self.name, "sent": len(texts), "got": len(lines)},
            )
        return [self._checked(t, source, target) for t in texts]


class KeyedProvider(OneTextPerRequest):
    """A provider that refuses every request without a key (DeepL, Microsoft): checked here so
    the report says which variable is missing, and no request is made."""

    def _missing_key(self) -> str:
        if self._key:
            return ""
        env = self.settings.api_key_env if self.settings else None
        return f"no key: the environment variable {env} is unset"
