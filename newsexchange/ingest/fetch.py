"""Getting a source's bytes: conditional GET over httpx, or a file from disk, with limits.

The fetch step talks to the outside world only through the small :class:`Fetcher` protocol
(compare lemon24/reader's retrievers in ``_parser/http.py`` and ``file.py``); the one real
implementation, :class:`DefaultFetcher`, picks HTTP or the file system by URL scheme, so
bundled sample sources (``file:samples/…``) go through the same pipeline as real feeds.

What it guarantees, whatever the server does:

- **Conditional GET**: ``If-None-Match`` / ``If-Modified-Since`` from the stored validators; a
  304 comes back as ``not_modified`` with no body, so nothing is parsed.
- **Time**: httpx enforces the connect and read timeouts, but a server that drips one byte
  per read-timeout would never trip them, so the total is enforced here with
  ``asyncio.timeout_at`` around the whole fetch, retries included.
- **Size**: the body is read as it streams and refused past ``fetch.max_body_bytes``; the
  content coding (gzip, deflate, br) is decoded by :mod:`.decode`, not by httpx, so the
  *decompressed* size is bounded too and a gzip bomb stops after at most one limit's worth of
  output (httpx's own decoders inflate a whole network chunk at once, without a bound).
- **Redirects**: at most ``fetch.max_redirects``; a loop ends as an error. When every hop
  was permanent (301/308) the final URL is reported, and the step stores it.
- **Retries**: timeouts, 408, 429 and 5xx are retried with exponential backoff and jitter;
  ``Retry-After`` is honoured when it is no longer than ``max_retry_wait``. A longer one ends
  the fetch with ``FetchError.retry_after`` set so the source's next attempt waits for it.
- **Politeness**: a bound on requests in flight overall and per host; slots are released while
  waiting to retry, so one slow host never holds up the others. The User-Agent names the
  project and its public URL.
- **Addresses**: every connection, redirects included, goes through
  :class:`~.addresses.GuardedBackend`: loopback, private, link-local, shared, multicast,
  reserved and unspecified addresses are refused after DNS, before anything is sent, unless
  ``fetch.allow_private`` lists that ``host:port``. A refusal is a per-source error that is
  not retried within the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import certifi
import httpcore
import httpx

from newsexchange import __version__
from newsexchange.common.addresses import AddressPolicy, AddressRefused
from newsexchange.common.retry import Backoff, parse_retry_after
from newsexchange.config import Config
from newsexchange.errors import FetchError
from newsexchange.ingest.decode import read_capped
from newsexchange.ingest.guard import GuardedBackend, Resolver

FEED_ACCEPT = (
    "application/rss+xml, application/atom+xml, application/rdf+xml;q=0.9, "
    "application/xml;q=0.9, text/xml;q=0.9, application/feed+json;q=0.8, "
    "text/html;q=0.3, */*;q=0.1"
)
HTML_ACCEPT = "text/html, application/xhtml+xml;q=0.9, */*;q=0.1"
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524})
PERMANENT_REDIRECTS = frozenset({301, 308})


@dataclass(frozen=True)
class FetchResult:
    """What one fetch brought back. ``body`` is None exactly when ``not_modified``."""

    url: str  # the URL asked for
    final_url: str  # after redirects
    status: int  # of the last response (200, 304; 0 for a file)
    not_modified: bool
    body: bytes | None
    content_type: str | None
    etag: str | None
    last_modified: str | None
    permanent_url: str | None = None  # set when every redirect was permanent: store it
    attempts: int = 1


@dataclass(frozen=True)
class FetchOptions:
    """The limits a fetcher works within (from ``config.fetch``)."""

    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    total_timeout: float = 60.0
    max_body_bytes: int = 10_000_000
    max_redirects: int = 5
    concurrency: int = 50
    per_host: int = 4
    retries: int = 2
    max_retry_wait: float = 30.0  # a longer Retry-After ends the fetch; the source waits
    backoff_base: float = 0.5  # first in-run retry after ~0.5 s, then 1 s, 2 s …
    user_agent: str = f"newsexchange/{__version__}"
    # host:port exceptions to the refusal of internal addresses (fetch.allow_private)
    allow_private: tuple[str, ...] = ()


def fetch_options(config: Config) -> FetchOptions:
    """The limits of ``config.fetch`` (and the User-Agent) as a fetcher takes them."""
    f = config.fetch
    return FetchOptions(
        connect_timeout=f.connect_timeout,
        read_timeout=f.read_timeout,
        total_timeout=f.total_timeout,
        max_body_bytes=f.max_body_bytes,
        max_redirects=f.max_redirects,
        concurrency=f.concurrency,
        per_host=f.per_host,
        retries=f.retries,
        user_agent=config.user_agent,
        allow_private=tuple(f.allow_private),
    )


class Fetcher(Protocol):
    """Fetch one URL, conditionally. Raises :class:`FetchError` (with status and whether
    a later try may help) for anything that is not a usable response."""

    async def fetch(
        self,
        url: str,
        *,
        etag: str | None = None,
        last_modified: str | None = None,
        accept: str = FEED_ACCEPT,
    ) -> FetchResult: ...

    async def aclose(self) -> None: ...


Sleep = Callable[[float], Awaitable[None]]


class DefaultFetcher:
    """httpx for ``http(s):``, the file system for ``file:`` (relative to ``base_dir``).

    ``resolver`` and ``network`` replace the system's DNS and socket layer beneath the
    address check (tests use them to refuse addresses without connecting anywhere); a
    ``transport`` replaces the whole HTTP layer, address check included."""

    def __init__(
        self,
        options: FetchOptions,
        *,
        base_dir: Path | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
        resolver: Resolver | None = None,
        network: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.options = options
        self.base_dir = base_dir or Path.cwd()
        self._sleep = sleep
        self._global = asyncio.Semaphore(options.concurrency)
        self._hosts: dict[str, asyncio.Semaphore] = {}
        self._transport = transport
        # One backend for every pool: it holds no connections, only the policy.
        self._backend = GuardedBackend(
            AddressPolicy(options.allow_private), resolver=resolver, inner=network
        )
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._ssl: ssl.SSLContext | None = None

    def _client_for(self, host: str) -> httpx.AsyncClient:
        """One small client (connection pool) per host.

        httpcore's pool scans every connection it holds on every request (with a
        ``getpeername`` call per connection): one shared pool of 50 connections cost ~6 ms
        of event-loop time per request, capping an unchanged refresh near 150 feeds/s. Per
        host the pool holds at most ``per_host`` connections, which is also the politeness
        bound. They share one SSL context (building one costs ~10 ms).
        """
        client = self._clients.get(host)
        if client is None:
            opts = self.options
            if self._ssl is None:
                self._ssl = ssl.create_default_context(cafile=certifi.where())
            limits = httpx.Limits(
                max_connections=opts.per_host,
                max_keepalive_connections=opts.per_host,
                keepalive_expiry=10.0,
            )
            client = self._clients[host] = _Client(
                timeout=httpx.Timeout(
                    connect=opts.connect_timeout,
                    read=opts.read_timeout,
                    write=opts.read_timeout,
                    pool=opts.total_timeout,
                ),
                follow_redirects=True,
                max_redirects=opts.max_redirects,
                headers={
                    "User-Agent": opts.user_agent,
                    # Decoded by decode.py (not httpx) so the inflated size is bounded.
                    "Accept-Encoding": "gzip, deflate, br",
                },
                transport=self._transport or _GuardedTransport(self._ssl, limits, self._backend),
                trust_env=False,  # a stray HTTP(S)_PROXY in a service's env must not reroute
            )
        return client

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()

    async def fetch(
        self,
        url: str,
        *,
        etag: str | None = None,
        last_modified: str | None = None,
        accept: str = FEED_ACCEPT,
    ) -> FetchResult:
        scheme = urlsplit(url).scheme.lower()
        if scheme == "file":
            return await self._fetch_file(url, etag=etag)
        if scheme not in ("http", "https"):
            raise FetchError(
                f"unsupported URL scheme {scheme!r} (expected http, https or file)",
                url=url,
                retryable=False,
            )
        return await self._fetch_http(url, etag=etag, last_modified=last_modified, accept=accept)

    # -- HTTP ----------------------------------------------------------------------------------

    def _host_slot(self, host: str) -> asyncio.Semaphore:
        sem = self._hosts.get(host)
        if sem is None:
            sem = self._hosts[host] = asyncio.Semaphore(self.options.per_host)
        return sem

    async def _fetch_http(
        self, url: str, *, etag: str | None, last_modified: str | None, accept: str
    ) -> FetchResult:
        opts = self.options
        headers = {"Accept": accept}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        loop = asyncio.get_running_loop()
        host = (urlsplit(url).hostname or "").lower()
        deadline: float | None = None
        attempt = 0
        while True:
            attempt += 1
            error: FetchError
            # Host slot first, then the global one: a queue of sources on one busy host must
            # not sit on global slots that other hosts could use.
            async with self._host_slot(host), self._global:
                if deadline is None:
                    deadline = loop.time() + opts.total_timeout  # time in the queue is free
                try:
                    async with asyncio.timeout_at(deadline):
                        result = await self._attempt(self._client_for(host), url, headers)
                    return _with_attempts(result, attempt)
                except TimeoutError:
                    raise FetchError(
                        f"gave up after {opts.total_timeout:g} s in total (fetch.total_timeout)",
                        url=url,
                        retryable=True,
                    ) from None
                except FetchError as exc:
                    error = exc
            # Slots are released while we wait, so other sources go on.
            retry_now = isinstance(error, _TimeoutError) or error.status in RETRY_STATUSES
            if not retry_now or attempt > opts.retries:
                raise error
            wait = _retry_wait(error, attempt, opts)
            if wait is None or loop.time() + wait >= deadline:
                raise error
            await self._sleep(wait)

    async def _attempt(
        self, client: httpx.AsyncClient, url: str, headers: dict[str, str]
    ) -> FetchResult:
        try:
            async with client.stream("GET", url, headers=headers) as resp:
                return await self._result(resp, url)
        except AddressRefused as exc:
            # Not retried in this run (nor worth it: the address will not change its class);
            # the source backs off like any failing one.
            raise FetchError(str(exc), url=url, retryable=False) from None
        except httpx.HTTPError as exc:
            raise _transport_error(exc, url, self.options) from exc

    async def _result(self, resp: httpx.Response, url: str) -> FetchResult:
        status = resp.status_code
        final_url = str(resp.url)
        permanent = bool(resp.history) and all(
            r.status_code in PERMANENT_REDIRECTS for r in resp.history
        )
        if status == 304:
            # Read to the end (a 304 has no body; h11 reports its end at once): httpcore
            # returns a connection to the pool only when the response was read whole, and
            # drops it otherwise, so every conditional request would open a new one.
            async for _ in resp.aiter_raw():
                pass
            return FetchResult(
                url=url,
                final_url=final_url,
                status=304,
                not_modified=True,
                body=None,
                content_type=None,
                etag=resp.headers.get("etag"),
                last_modified=resp.headers.get("last-modified"),
                permanent_url=final_url if permanent else None,
            )
        if status != 200 and not (200 <= status < 300 and status != 204):
            raise _status_error(resp, url)
        body = await read_capped(resp, self.options.max_body_bytes, url)
        return FetchResult(
            url=url,
            final_url=final_url,
            status=status,
            not_modified=False,
            body=body,
            content_type=resp.headers.get("content-type"),
            etag=resp.headers.get("etag"),
            last_modified=resp.headers.get("last-modified"),
            permanent_url=final_url if permanent else None,
        )

    # -- files ---------------------------------------------------------------------------------

    async def _fetch_file(self, url: str, *, etag: str | None) -> FetchResult:
        path = file_url_path(url, self.base_dir)
        try:
            st = path.stat()
        except OSError as exc:
            raise FetchError(
                f"cannot read {path}: {exc.strerror or exc}", url=url, retryable=False
            ) from exc
        # The file's own validator: unchanged mtime and size behave like a 304.
        tag = f'"{st.st_mtime_ns:x}-{st.st_size:x}"'
        if etag == tag:
            return FetchResult(url, url, 304, True, None, None, tag, None)
        if st.st_size > self.options.max_body_bytes:
            raise FetchError(
                f"{path} is {st.st_size} bytes, over the {self.options.max_body_bytes} byte "
                "limit (fetch.max_body_bytes)",
                url=url,
                retryable=False,
            )
        body = await asyncio.to_thread(path.read_bytes)
        ctype = "text/html" if path.suffix.lower() in (".html", ".htm") else None
        return FetchResult(url, url, 0, False, body, ctype, tag, None)


class _TimeoutError(FetchError):
    """A timeout of one attempt (connect or read): worth another try in the same run."""


class _Cookies(httpx.Cookies):
    """A client's cookie jar that looks at a response only when it sets a cookie.

    httpx hands every response to the standard library's ``CookieJar`` through two adapter
    objects (a ``urllib.request.Request`` among them), ~5 % of a 304's cost, even when the
    response has no ``Set-Cookie``; feeds rarely set one. Those that do are kept as before
    (a site that sets a cookie and redirects to itself still gets it back)."""

    def extract_cookies(self, response: httpx.Response) -> None:
        if "set-cookie" in response.headers:
            super().extract_cookies(response)


class _Client(httpx.AsyncClient):
    """httpx's client with the jar above (the jar httpx builds in ``__init__`` is left unused;
    its ``cookies`` setter would wrap what it is given in a new plain ``Cookies``)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._jar = _Cookies(kwargs.get("cookies"))

    @property
    def cookies(self) -> httpx.Cookies:
        return self._jar

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        self._jar = _Cookies(cookies)


class _GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport on a connection pool whose every connection is opened by
    :class:`~.addresses.GuardedBackend`.

    httpx 0.28 takes no network backend (encode/httpx#3749 proposes the argument), so the
    pool it builds is replaced by the same pool with the backend; request and response
    mapping, and the mapping of httpcore's exceptions, stay httpx's."""

    def __init__(
        self, ssl_context: ssl.SSLContext, limits: httpx.Limits, backend: GuardedBackend
    ) -> None:
        super().__init__(verify=ssl_context, limits=limits, trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=backend,
        )


def _transport_error(exc: httpx.HTTPError, url: str, opts: FetchOptions) -> FetchError:
    """What an httpx error means for the source, and whether another try may help."""
    if isinstance(exc, httpx.TooManyRedirects):
        return FetchError(
            f"too many redirects (more than {opts.max_redirects}, fetch.max_redirects; "
            "a redirect loop?)",
            url=url,
            retryable=False,
        )
    if isinstance(exc, httpx.TimeoutException):
        what = {
            httpx.ConnectTimeout: f"connecting took over {opts.connect_timeout:g} s",
            httpx.ReadTimeout: f"the server sent nothing for {opts.read_timeout:g} s",
            httpx.WriteTimeout: "sending the request timed out",
            httpx.PoolTimeout: "no free connection in time",
        }.get(type(exc), "timed out")
        return _TimeoutError(f"timeout: {what}", url=url, retryable=True)
    if isinstance(exc, httpx.UnsupportedProtocol):
        return FetchError(f"redirected to an unsupported URL ({exc})", url=url, retryable=False)
    if isinstance(exc, httpx.ConnectError):
        return FetchError(f"cannot connect: {exc or type(exc).__name__}", url=url, retryable=True)
    # protocol errors, a reset mid-body, bad headers …
    return FetchError(f"HTTP error: {type(exc).__name__}: {exc}", url=url, retryable=True)


def file_url_path(url: str, base_dir: Path) -> Path:
    """``file:relative/path`` from ``base_dir`` (the folder of feeds.yaml), or ``file:///abs``."""
    rest = url[len("file:") :]
    if rest.startswith("//"):
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise FetchError(
                f"file URL names a host ({parts.netloc!r}); expected file:///absolute/path "
                "or file:relative/path",
                url=url,
                retryable=False,
            )
        return Path(unquote(parts.path))
    p = Path(unquote(rest))
    return p if p.is_absolute() else base_dir / p


def _with_attempts(result: FetchResult, attempts: int) -> FetchResult:
    if attempts == 1:
        return result
    return replace(result, attempts=attempts)


def _status_error(resp: httpx.Response, url: str) -> FetchError:
    status = resp.status_code
    reason = resp.reason_phrase or ""
    retry_after = parse_retry_after(resp.headers.get("retry-after"))
    retryable = status in RETRY_STATUSES
    hint = ""
    if status in (404, 410):
        hint = " (the feed is gone or moved: check the source's url)"
    elif status in (401, 403):
        hint = " (the server refuses us)"
    return FetchError(
        f"HTTP {status} {reason}".rstrip() + hint,
        url=url,
        status=status,
        retryable=retryable,
        retry_after=retry_after,
    )


def _retry_wait(error: FetchError, attempt: int, opts: FetchOptions) -> float | None:
    """How long to wait before the next in-run attempt; None when it is not worth it."""
    after: float | None = error.retry_after
    if after is not None:
        return float(after) if after <= opts.max_retry_wait else None
    return Backoff(base=opts.backoff_base, cap=opts.max_retry_wait, jitter=0.25).delay(attempt)


@contextlib.asynccontextmanager
async def open_fetcher(
    options: FetchOptions, *, base_dir: Path | None = None
) -> AsyncIterator[DefaultFetcher]:
    fetcher = DefaultFetcher(options, base_dir=base_dir)
    try:
        yield fetcher
    finally:
        await fetcher.aclose()
