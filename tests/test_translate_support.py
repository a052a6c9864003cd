"""Local servers speaking each translation provider's wire format, and item fixtures.

Every server "translates" the same visible way — each word reversed ("Joensuu" → "uusneoJ"),
so a test can tell a translated word from an untouched one and see a name being mangled — and
keeps upper-case codes such as glossary placeholders (XGL0X) and abbreviations (UEF) as real
machine translators do. Line breaks are kept line by line, as real services keep them.

This module holds no tests; it is named test_translate_* so it belongs with the translation
tests it serves.
"""

from __future__ import annotations

import html
import json
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from newsexchange.db import Database, Item, Source
from tests.servers import HTTPServer, Request, Response

WORD = re.compile(r"[^\W\d_]+")
NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def fake_translate(text: str, target: str = "ru") -> str:
    """Reverse every word except upper-case codes (placeholders, abbreviations)."""

    def sub(m: re.Match[str]) -> str:
        w = m.group(0)
        return w if len(w) > 1 and w.isupper() else w[::-1]

    return WORD.sub(sub, text)


@dataclass
class Call:
    texts: list[str]
    source: str
    target: str

    @property
    def chars(self) -> int:
        return sum(len(t) for t in self.texts)


@dataclass
class FakeProvider:
    """Shared bookkeeping: the calls seen, and a failure to answer with while set."""

    server: HTTPServer
    calls: list[Call] = field(default_factory=list)
    failure: Response | None = None
    mangle: bool = False  # answer with placeholders destroyed (a provider that mangles)
    delay: float = 0.0  # seconds before each answer (to make two runs overlap)
    #: text → the answer given for it instead of a translation ("" or "   ": a blank answer)
    blank: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def requests(self) -> int:
        return len(self.calls)

    @property
    def chars(self) -> int:
        return sum(c.chars for c in self.calls)

    def _record(self, texts: list[str], source: str, target: str) -> Response | None:
        with self._lock:
            self.calls.append(Call(texts, source, target))
        if self.delay:
            import time

            time.sleep(self.delay)
        return self.failure

    def _out(self, text: str, target: str) -> str:
        if text in self.blank:
            return self.blank[text]
        out = fake_translate(text, target)
        return re.sub(r"XGL(\d+)X", r"xgl-\1", out) if self.mangle else out


class FakeLibre(FakeProvider):
    """LibreTranslate: POST /translate {q, source, target, format, api_key} and GET /languages."""

    def __init__(
        self,
        server: HTTPServer,
        *,
        api_key: str | None = None,
        languages: Iterable[str] = ("fi", "ru", "en"),
    ) -> None:
        super().__init__(server)
        self.api_key = api_key
        self.languages = list(languages)
        self.formats: list[str] = []
        server.route("/translate", self._translate)
        server.route("/languages", self._languages)

    def _languages(self, req: Request) -> Response:
        data = [
            {"code": c, "name": c, "targets": [t for t in self.languages if t != c]}
            for c in self.languages
        ]
        return Response(200, json.dumps(data), {"Content-Type": "application/json"})

    def _translate(self, req: Request) -> Response:
        body = req.json()
        q = body["q"]
        texts = q if isinstance(q, list) else [q]
        if self.api_key is not None and body.get("api_key") != self.api_key:
            return Response(403, json.dumps({"error": "Invalid API key"}))
        failure = self._record(texts, body["source"], body["target"])
        self.formats.append(body.get("format", ""))
        if failure is not None:
            return failure
        out = [self._out(t, body["target"]) for t in texts]
        answer = {"translatedText": out if isinstance(q, list) else out[0]}
        return Response(200, json.dumps(answer), {"Content-Type": "application/json"})


class FakeGoogle(FakeProvider):
    """translate.google.com/m: GET ?sl=&tl=&q= → an HTML page with div.result-container."""

    def __init__(self, server: HTTPServer) -> None:
        super().__init__(server)
        server.route("/m", self._m)

    def _m(self, req: Request) -> Response:
        q = req.query["q"][0]
        failure = self._record([q], req.query["sl"][0], req.query["tl"][0])
        if failure is not None:
            return failure
        page = (
            "<html><body><div class='result-container'>"
            f"{html.escape(self._out(q, req.query['tl'][0]))}</div></body></html>"
        )
        return Response(200, page, {"Content-Type": "text/html; charset=utf-8"})


class FakeDeepl(FakeProvider):
    """DeepL v2: POST /v2/translate (form) with ``Authorization: DeepL-Auth-Key``; refuses the
    legacy GET/auth_key forms as DeepL does since 2026-01-15; 456 when the quota is used."""

    def __init__(self, server: HTTPServer, *, api_key: str) -> None:
        super().__init__(server)
        self.api_key = api_key
        server.route("/v2/translate", self._translate)

    def _translate(self, req: Request) -> Response:
        if req.method != "POST" or "auth_key" in req.query:
            return Response(403, json.dumps({"message": "Legacy authentication method"}))
        form = {k: v[0] for k, v in parse_qs(req.body.decode()).items()}
        if "auth_key" in form or req.header("Authorization") != f"DeepL-Auth-Key {self.api_key}":
            return Response(403, json.dumps({"message": "Wrong key"}))
        failure = self._record([form["text"]], form["source_lang"], form["target_lang"])
        if failure is not None:
            return failure
        data = {
            "translations": [
                {
                    "detected_source_language": form["source_lang"].upper(),
                    "text": self._out(form["text"], form["target_lang"]),
                }
            ]
        }
        return Response(200, json.dumps(data), {"Content-Type": "application/json"})


class FakeMicrosoft(FakeProvider):
    """Microsoft Translator v3: POST /translate?api-version=3.0&from=&to= with a JSON list of
    {"Text"}; errors are {"error": {"code", "message"}}."""

    def __init__(self, server: HTTPServer, *, api_key: str) -> None:
        super().__init__(server)
        self.api_key = api_key
        self.regions: list[str | None] = []
        server.route("/translate", self._translate)

    def _translate(self, req: Request) -> Response:
        if req.header("Ocp-Apim-Subscription-Key") != self.api_key:
            err = {"error": {"code": 401000, "message": "The request is not authorized."}}
            return Response(401, json.dumps(err), {"Content-Type": "application/json"})
        self.regions.append(req.header("Ocp-Apim-Subscription-Region"))
        body = req.json()
        texts = [b.get("text", b.get("Text")) for b in body]
        to = req.query["to"][0]
        failure = self._record(texts, req.query["from"][0], to)
        if failure is not None:
            return failure
        data = [{"translations": [{"text": self._out(t, to), "to": to}]} for t in texts]
        return Response(200, json.dumps(data), {"Content-Type": "application/json"})


class FakeMyMemory(FakeProvider):
    """MyMemory: GET /get?q=&langpair=fi-FI|ru-RU → {responseData: {translatedText}, …}; it
    refuses inside HTTP 200 (responseStatus, a "MYMEMORY WARNING" text) when the quota is used."""

    def __init__(self, server: HTTPServer) -> None:
        super().__init__(server)
        self.quota_used = False
        server.route("/get", self._get)

    def _get(self, req: Request) -> Response:
        q = req.query["q"][0]
        src, tgt = req.query["langpair"][0].split("|")
        failure = self._record([q], src, tgt)
        if failure is not None:
            return failure
        if self.quota_used:
            data: dict[str, Any] = {
                "responseData": {
                    "translatedText": "MYMEMORY WARNING: YOU USED ALL AVAILABLE FREE "
                    "TRANSLATIONS FOR TODAY. NEXT AVAILABLE IN  10 HOURS 20 MINUTES",
                    "match": 0,
                },
                "responseStatus": 429,
                "quotaFinished": True,
                "matches": [],
            }
        else:
            data = {
                "responseData": {"translatedText": self._out(q, tgt[:2]), "match": 0.99},
                "responseStatus": 200,
                "quotaFinished": False,
                "matches": [],
            }
        return Response(200, json.dumps(data), {"Content-Type": "application/json"})


# -- items -------------------------------------------------------------------------------------


def add_item(
    db: Database,
    *,
    title: str,
    summary_html: str = "",
    summary_text: str | None = None,
    region: str = "joensuu",
    language: str = "fi",
    detected: str | None = None,
    source: str | None = None,
    updated_at: datetime | None = None,
) -> int:
    """Store one item (and its source) as the ingestion step would."""
    source = source or f"src-{region}"
    if summary_text is None:
        summary_text = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", summary_html)).split())
    with db.session() as s:
        if s.get(Source, source) is None:
            s.add(Source(id=source, config_url=f"https://{source}.example/rss", url="x"))
            s.flush()
        n = len(list(s.query(Item.id)))
        item = Item(
            source_id=source,
            identity=f"item-{n}",
            title=title,
            summary_html=summary_html,
            summary_text=summary_text,
            region=region,
            language=language,
            detected_language=detected,
            published_at=NOW,
            content_hash=f"h{n}",
        )
        if updated_at is not None:
            item.first_seen_at = item.updated_at = updated_at
        s.add(item)
        s.flush()
        return item.id


def exchange_config(providers: str, *, glossary: str | None = None, extra: str = "") -> str:
    """The YAML added to the test BASE_CONFIG: the two exchanges and the provider chain."""
    g = f"\n  glossary: {glossary}" if glossary else ""
    return (
        f"translation:\n  providers:\n{providers}{g}\n"
        "exchanges:\n"
        "  - {id: j2p, from: [joensuu], language: ru, editors: [ed@example.org]}\n"
        "  - {id: p2j, from: [petrozavodsk], language: fi, editors: [ed@example.org]}\n" + extra
    )
