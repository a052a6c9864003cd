"""Property-based tests (hypothesis): hostile and broken input never escapes as an exception
and never comes out unsafe (issue 10).

* random bytes, and random mutations of real feeds (the shared corpus, plus a few seeds
  written here), go to the feed parser: it returns a feed or raises ``FetchError`` (the only
  error it documents), and what it returns is safe to store and show: HTML only from the
  allowlist (no ``<script``, no ``on*=`` handlers, href/src only http(s)), links http(s), no
  NUL or other unstorable character, no bidi embeddings/overrides, titles and authors free of
  invisible characters;
* random text goes to the HTML cleaner with the same checks;
* random MIME messages go to the reply reader (``parse_message`` → ``judge_reply``, and the
  SendGrid raw-message path): no exception, and a message without the digest's token never
  acts.

Each test is bounded (``max_examples``, ``deadline``) so the module runs in well under a minute
on a two-core machine, and derandomized without an example database so CI always runs the
same examples.
"""

from __future__ import annotations

import email
import email.policy
import html as _html
import json
import re
from datetime import timedelta
from html.parser import HTMLParser

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from newsexchange.approval.inbound import from_sendgrid, judge_reply, parse_message
from newsexchange.errors import FetchError
from newsexchange.ingest.clean import ALLOWED_ATTRIBUTES, ALLOWED_TAGS, sanitize_html
from newsexchange.ingest.model import ParsedFeed
from newsexchange.ingest.parse import parse_feed
from tests.conftest import CORPUS

SETTINGS = settings(
    derandomize=True,
    database=None,
    deadline=timedelta(seconds=5),  # per example; a loaded CI box is slow, not hung
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=False,
)

URL = "http://127.0.0.1:8765/feed"

# -- what "safe" means -------------------------------------------------------------------------

_UNSTORABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")
_EMBEDDINGS = re.compile("[\u202a-\u202e\u2066-\u2069]")
_INVISIBLE = re.compile("[\u061c\u200b-\u200f\u202a-\u202e\u2060-\u206f\ufeff]")
_HTTP = re.compile(r"^https?://", re.IGNORECASE)


class _Tags(HTMLParser):
    """Every start tag and its attributes, as a browser's tokenizer would see them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, attrs))

    handle_startendtag = handle_starttag


def assert_safe_html(out: str) -> None:
    assert "<script" not in out.lower(), out
    parser = _Tags()
    parser.feed(out)
    parser.close()
    for tag, attrs in parser.found:
        assert tag in ALLOWED_TAGS, (tag, out)
        allowed = ALLOWED_ATTRIBUTES.get(tag, set()) | ({"rel"} if tag == "a" else set())
        for name, value in attrs:
            assert not name.startswith("on"), (name, out)
            assert name in allowed, (tag, name, out)
            if name in ("href", "src"):
                assert value is not None and _HTTP.match(_html.unescape(value)), (value, out)


def assert_storable(value: str | None, *, name: bool) -> None:
    if not value:
        return
    value.encode("utf-8")  # a lone surrogate would raise here
    assert not _UNSTORABLE.search(value), repr(value)
    assert not (_INVISIBLE if name else _EMBEDDINGS).search(value), repr(value)


def assert_safe_feed(feed: ParsedFeed) -> None:
    assert_storable(feed.title, name=True)
    assert_storable(feed.link, name=True)
    assert_storable(feed.language, name=False)
    assert feed.link is None or _HTTP.match(feed.link)
    for e in feed.entries:
        assert_safe_html(e.summary_html)
        for value in (e.title, e.author, e.guid):
            assert_storable(value, name=True)
        for value in (e.summary_html, e.summary_text):
            assert_storable(value, name=False)
        for url in (e.link, e.image_url):
            assert url is None or _HTTP.match(url), url
            assert_storable(url, name=True)


def parse_safely(body: bytes) -> ParsedFeed | None:
    try:
        feed = parse_feed(body, url=URL)
    except FetchError as exc:
        assert exc.message  # says what is wrong
        return None
    assert_safe_feed(feed)
    return feed


# -- random bytes and random text ----------------------------------------------------------------


@settings(SETTINGS, max_examples=300)
@given(st.binary(max_size=2048))
def test_random_bytes_give_a_safe_feed_or_a_fetch_error(body: bytes) -> None:
    parse_safely(body)


HOSTILE_TEXT = [
    "<script>alert(1)</script>",
    '<img src=x onerror="alert(1)">',
    '<a href="javascript:alert(1)">x</a>',
    '<a href="java&#x09;script:alert(1)">x</a>',
    '<a href=" JaVaScRiPt:alert(1)">x</a>',
    '<a href="data:text/html;base64,PHNjcmlwdD4=">x</a>',
    '<a href="mailto:x@example.fi">m</a>',
    '<img src="ftp://example.fi/a.png">',
    '<svg onload="alert(1)"><circle/></svg>',
    '<p style="x" onmouseover="alert(1)">p</p>',
    '<iframe src="http://evil.example/"></iframe>',
    "<math><mi xlink:href='javascript:alert(1)'>x</mi></math>",
    "<!--<script>x</script>-->",
    "<scr<script>ipt>alert(1)</script>",
    "\x00",
    "\u202e",
    "\u2066",
    "&#0;",
    "&#x202E;",
    "&#xFFFE;",
    "\ud800",
    "<a href='http://ok.example/' onclick='x()'>ok</a>",
]


@settings(SETTINGS, max_examples=400)
@given(
    st.lists(
        st.one_of(st.sampled_from(HOSTILE_TEXT), st.text(max_size=40)), min_size=1, max_size=8
    ),
    st.sampled_from([None, "https://example.fi/feed", "http://127.0.0.1/x", "javascript:x"]),
)
def test_sanitized_html_from_hostile_fragments_is_always_safe(
    parts: list[str], base: str | None
) -> None:
    out = sanitize_html("".join(parts), base)
    assert_safe_html(out)


# -- random mutations of real feeds --------------------------------------------------------------

SEEDS: list[bytes] = [
    b"""<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/"><channel>
<title>Karjalan uutiset</title><link>https://example.fi/</link><language>fi</language>
<item><title>Kirjasto avataan</title><link>https://example.fi/a?utm_source=rss</link>
<guid>a1</guid><pubDate>Mon, 23 Nov 2026 10:00:00 +0200</pubDate><author>t@example.fi (Toimitus)</author>
<description>&lt;p&gt;Avajaiset &lt;a href="/ohjelma"&gt;maanantaina&lt;/a&gt;.&lt;/p&gt;</description>
<content:encoded><![CDATA[<p>Koko juttu <img src="https://example.fi/k.jpg" width="600"></p>]]></content:encoded>
</item></channel></rss>""",
    """<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xml:lang="ru"><title>Новости Карелии</title>
<link href="https://example.ru/"/><id>urn:x</id><updated>2026-11-23T10:00:00Z</updated>
<entry><title type="html">&lt;b&gt;Порт&lt;/b&gt; открывается</title><id>urn:e1</id>
<link rel="alternate" href="https://example.ru/1"/><updated>2026-11-23T10:00:00Z</updated>
<author><name>Редакция</name></author>
<content type="html">&lt;p&gt;Суда придут &lt;em&gt;весной&lt;/em&gt;.&lt;/p&gt;</content></entry></feed>""".encode(),
    b"""<?xml version="1.0"?><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"
xmlns="http://purl.org/rss/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/">
<channel rdf:about="https://example.fi/"><title>RDF</title><link>https://example.fi/</link></channel>
<item rdf:about="https://example.fi/r1"><title>Silta</title><link>https://example.fi/r1</link>
<dc:date>2026-11-23T10:00:00+02:00</dc:date><description>Valmistuu.</description></item></rdf:RDF>""",
    json.dumps(
        {
            "version": "https://jsonfeed.org/version/1.1",
            "title": "JSON",
            "items": [
                {
                    "id": "1",
                    "url": "https://example.fi/j1",
                    "title": "Satama",
                    "content_html": "<p>Laivat <b>tulevat</b>.</p>",
                    "authors": [{"name": "Nimi"}],
                }
            ],
        }
    ).encode(),
]


def corpus_seeds(limit: int = 40, max_bytes: int = 6000) -> list[bytes]:
    """A few dozen corpus feeds, spread over its folders (hostile HTML first), picked the same
    way every run."""
    if not CORPUS.is_dir():
        return []
    picked: list[bytes] = []
    folders = [
        "wellformed/sanitize",
        "wellformed/rss",
        "wellformed/atom10",
        "wellformed/rdf",
        "illformed",
        "encoding",
        "entities",
        "json",
    ]
    per = {"wellformed/sanitize": 12, "wellformed/rss": 6, "wellformed/atom10": 6}
    for folder in folders:
        files = sorted(p for p in (CORPUS / folder).rglob("*") if p.is_file())
        files = [p for p in files if p.suffix in (".xml", ".json", ".rss", ".atom", "")]
        files = [p for p in files if p.stat().st_size <= max_bytes]
        n = per.get(folder, 4)
        step = max(1, len(files) // n)
        picked.extend(p.read_bytes() for p in files[::step][:n])
    return picked[:limit]


ALL_SEEDS = SEEDS + corpus_seeds()

INJECT = [
    b"\x00",
    b"\x01\x0b",
    b"\xef\xbf\xbe",  # U+FFFE
    b"\xe2\x80\xae",  # U+202E
    b"\xe2\x81\xa6",  # U+2066
    b"\xe2\x80\x8b",  # U+200B
    b"\xed\xa0\x80",  # a surrogate, as (invalid) UTF-8
    b"\xff\xfe",
    b"\xc3",
    b"&#0;",
    b"&#x202E;",
    b"&#xFFFE;",
    b"&#xD800;",
    b"&#8238;",
    b"<script>alert(1)</script>",
    b"&lt;script&gt;alert(1)&lt;/script&gt;",
    b"&lt;img src=x onerror=alert(1)&gt;",
    b'<a href="javascript:alert(1)">x</a>',
    b'&lt;a href="java&amp;#x09;script:alert(1)"&gt;x&lt;/a&gt;',
    b"&lt;a href=&quot;data:text/html,x&quot;&gt;d&lt;/a&gt;",
    b"<![CDATA[<p onclick=x>c</p><script>y</script>]]>",
    b"]]>",
    b"<!ENTITY x 'y'>",
    b"<!DOCTYPE rss [<!ENTITY a 'aaaaaaaa'><!ENTITY b '&a;&a;&a;&a;'>]>",
    b"&b;&nbsp;&laquo;",
    b"<item><title>t\xe2\x80\xae</title><link>javascript:alert(1)</link>"
    b"<description>&lt;p onclick=x&gt;d&lt;/p&gt;</description></item>",
    b"<entry><title type='html'>&lt;b onmouseover=x&gt;t&lt;/b&gt;</title>"
    b"<link href='data:text/html,x'/><content type='xhtml'><div xmlns='http://www.w3.org/1999/xhtml'>"
    b"<script>x</script><a href='javascript:y'>z</a></div></content></entry>",
    b'<?xml version="1.0" encoding="koi8-r"?>',
    b"\r\n",
    b"<",
    b">",
    b"&",
]
#: Where text goes: injecting just after these puts bytes inside a field.
ANCHORS = [
    b"<title>",
    b"<description>",
    b"<content:encoded>",
    b"<content",
    b"<summary",
    b"<author>",
    b"<name>",
    b"<link>",
    b"<guid>",
    b'href="',
    b'"title": "',
]

position = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
mutation = st.one_of(
    st.tuples(
        st.just("insert"), position, st.one_of(st.sampled_from(INJECT), st.binary(max_size=8))
    ),
    st.tuples(st.just("into"), st.sampled_from(ANCHORS), st.sampled_from(INJECT)),
    st.tuples(st.just("delete"), position, st.integers(min_value=1, max_value=64)),
    st.tuples(st.just("replace"), position, st.binary(min_size=1, max_size=4)),
    st.tuples(st.just("duplicate"), position, st.integers(min_value=1, max_value=300)),
    st.tuples(st.just("truncate"), position, st.just(b"")),
)


def mutate(body: bytes, ops: list[tuple[str, object, object]]) -> bytes:
    for op, where, what in ops:
        if op == "into":
            assert isinstance(where, bytes) and isinstance(what, bytes)
            i = body.find(where)
            if i >= 0:
                j = i + len(where)
                if where in (b"<content", b"<summary"):
                    j = body.find(b">", j) + 1 or j
                body = body[:j] + what + body[j:]
            continue
        assert isinstance(where, float)
        i = int(where * len(body))
        if op == "insert":
            assert isinstance(what, bytes)
            body = body[:i] + what + body[i:]
        elif op == "delete":
            assert isinstance(what, int)
            body = body[:i] + body[i + what :]
        elif op == "replace":
            assert isinstance(what, bytes)
            body = body[:i] + what + body[i + len(what) :]
        elif op == "duplicate":
            assert isinstance(what, int)
            body = body[:i] + body[i : i + what] * 2 + body[i + what :]
        elif op == "truncate":
            body = body[:i]
    return body


def test_the_mutation_seeds_include_corpus_feeds_when_the_corpus_is_there() -> None:
    if not CORPUS.is_dir():
        pytest.skip(f"feed corpus not found at {CORPUS}: mutating the built-in seeds only")
    assert len(ALL_SEEDS) >= len(SEEDS) + 30
    # The seeds themselves parse: mutations start from real, readable feeds.
    assert sum(1 for s in ALL_SEEDS if parse_safely(s) is not None) >= len(ALL_SEEDS) * 3 // 4


@settings(SETTINGS, max_examples=800)
@given(st.sampled_from(ALL_SEEDS), st.lists(mutation, min_size=1, max_size=6))
def test_mutated_real_feeds_give_a_safe_feed_or_a_fetch_error(
    seed: bytes, ops: list[tuple[str, object, object]]
) -> None:
    parse_safely(mutate(seed, ops))


# -- random MIME to the reply reader --------------------------------------------------------------

TOKEN = "q7w8e9r0t1y2u3i4o5p6a7s8d9f0g1h2"  # never generated below: no message may act
EDITOR = "ed@example.fi"
AUTHSERV = "mx.example.org"  # the operator's receiving server (mail.imap.authserv_id)

header_text = st.one_of(
    st.text(max_size=60),
    st.sampled_from(
        [
            EDITOR,
            f"Editor <{EDITOR}>",
            "=?utf-8?b?0KDQtdC00LDQutGC0L7RgA==?= <ed@example.fi>",
            "=?utf-8?q?broken=ZZ?=",
            "=?x-unknown?b?AAAA?=",
            "news+0123456789abcdef.v1@example.org",
            "Re: [nx:0123456789abcdef0123] APPROVE",
            "spf=pass smtp.mailfrom=example.fi; dkim=pass header.d=evil.example; dmarc=fail",
            "auto-replied",
            "bulk",
            "<nx-approval.1.v2.abcdef@example.org>",
            "<>",
            "\r\n\tfolded",
            "a" * 300,
        ]
    ),
)
header_name = st.sampled_from(
    [
        "From",
        "To",
        "Cc",
        "Subject",
        "Message-ID",
        "In-Reply-To",
        "References",
        "Return-Path",
        "Delivered-To",
        "Auto-Submitted",
        "Precedence",
        "List-Id",
        "Authentication-Results",
        "MIME-Version",
        "Content-Transfer-Encoding",
        "X-Autoreply",
        "Content-Disposition",
    ]
)
content_type = st.sampled_from(
    [
        "text/plain; charset=utf-8",
        "text/plain; charset=koi8-r",
        "text/plain; charset=x-no-such-charset",
        "text/html; charset=utf-8",
        "multipart/alternative; boundary=BOUND",
        "multipart/mixed; boundary=BOUND",
        'multipart/report; report-type=delivery-status; boundary="BOUND"',
        "message/rfc822",
        "application/octet-stream",
        "multipart/alternative",  # no boundary
        "text/plain; charset=",
        ";;;",
    ]
)
body_text = st.one_of(
    st.binary(max_size=400),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.sampled_from(
        [
            b"APPROVE\r\n",
            b"REJECT because\r\n> APPROVE\r\n",
            b"DROP 3, 7, 99999999999999999999\r\n",
            b"<html><body><p>APPROVE</p><blockquote>x</blockquote></body></html>",
            b"QVBQUk9WRQ==",
            b"=41PPROVE=\r\n=ZZ",
        ]
    ),
)


@st.composite
def mime_messages(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()) and draw(st.booleans()):
        return draw(st.binary(max_size=1500))  # a quarter: bytes that may not be mail at all
    lines = [
        f"{n}: {v}" for n, v in draw(st.lists(st.tuples(header_name, header_text), max_size=8))
    ]
    ctype = draw(content_type)
    lines.append(f"Content-Type: {ctype}")
    if draw(st.booleans()):
        cte = draw(st.sampled_from(["base64", "quoted-printable", "8bit", "x-garbage", "7bit"]))
        lines.append(f"Content-Transfer-Encoding: {cte}")
    head = "\r\n".join(lines).encode("utf-8", "surrogatepass")
    if ctype.startswith("multipart") or ctype == "message/rfc822":
        parts = draw(st.lists(st.tuples(content_type, body_text), max_size=3))
        body = b"".join(
            b"--BOUND\r\nContent-Type: " + ct.encode() + b"\r\n\r\n" + b + b"\r\n"
            for ct, b in parts
        )
        if draw(st.booleans()):
            body += b"--BOUND--\r\n"
    else:
        body = draw(body_text)
    return head + b"\r\n\r\n" + body


def _judge(raw_msg: object) -> None:
    from newsexchange.approval.inbound import InboundMessage

    assert isinstance(raw_msg, InboundMessage)
    verdict = judge_reply(
        raw_msg,
        editor_tokens={EDITOR: TOKEN},
        digest_version=2,
        local="news",
        domain="example.org",
        authserv_id=AUTHSERV,
    )
    assert not verdict.act, verdict  # no random message carries this digest's token
    assert verdict.reason


def stdlib_header_bug(raw: bytes) -> bool:
    """Whether Python's own header parser (email.policy.default) raises IndexError reading
    this message's headers: a CPython bug (``From: <``, ``Message-ID: <>``, an unclosed
    quote …). parse_message reads such a header as its raw text;
    :func:`test_known_stdlib_header_crashes_do_not_escape_the_reply_reader` keeps the cases
    that showed it."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    try:
        for _k, v in msg.items():
            str(v)
    except IndexError:
        return True
    return False


@settings(SETTINGS, max_examples=400)
@given(mime_messages())
def test_random_mime_replies_never_raise_and_never_act(raw: bytes) -> None:
    msg = parse_message(raw, envelope_to=["news@example.org"])
    _judge(msg)


#: Minimal messages hypothesis found; each makes email.policy.default raise IndexError.
STDLIB_CRASHES = [
    b"From: <\r\nContent-Type: text/plain\r\n\r\nAPPROVE\r\n",
    b"Message-ID: <>\r\nIn-Reply-To: x\r\n\r\nAPPROVE\r\n",
    b'From: ed@example.fi\r\nCc: "\r\n\r\nAPPROVE\r\n',
    b"From: a@\r\nAuthentication-Results: <>\r\n\r\nAPPROVE\r\n",
]


@pytest.mark.parametrize("raw", STDLIB_CRASHES)
def test_known_stdlib_header_crashes_do_not_escape_the_reply_reader(raw: bytes) -> None:
    assert stdlib_header_bug(raw)
    _judge(parse_message(raw, envelope_to=["news@example.org"]))


@settings(SETTINGS, max_examples=150)
@given(mime_messages(), st.sampled_from(["", "pass", "fail", "softfail", "none"]))
def test_random_raw_mime_through_sendgrid_never_raises_and_never_acts(raw: bytes, spf: str) -> None:
    form = {
        "email": raw.decode("utf-8", "surrogateescape"),
        "envelope": json.dumps({"to": ["news@example.org"], "from": EDITOR}),
        "SPF": spf,
        "dkim": "{@example.fi : pass}",
    }
    _judge(from_sendgrid(form))


def test_the_reader_would_act_on_a_well_formed_reply_with_the_token() -> None:
    """The guard for the properties above: "never acts" is not "never can act"."""
    raw = (
        f"Authentication-Results: {AUTHSERV}; dkim=pass header.d=example.fi\r\n"
        f"From: Editor <{EDITOR}>\r\nTo: news+{TOKEN}.v2@example.org\r\n"
        "Subject: Re: digest\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nAPPROVE\r\n"
    ).encode()
    msg = parse_message(raw)
    verdict = judge_reply(
        msg,
        editor_tokens={EDITOR: TOKEN},
        digest_version=2,
        local="news",
        domain="example.org",
        authserv_id=AUTHSERV,
    )
    assert verdict.act and verdict.command is not None and verdict.command.verb == "approve"
