"""Reading a response body within ``fetch.max_body_bytes``, its Content-Encoding (gzip,
deflate, br) undone here rather than by httpx so that the *decompressed* size is bounded too:
a compression bomb stops after at most one limit's worth of output (httpx's own decoders
inflate a whole network chunk at once, without a bound)."""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator

import httpx

from newsexchange.errors import FetchError

__all__ = ["CHUNK", "read_capped"]

CHUNK = 64 * 1024


class _Decoder:
    """Undo one Content-Encoding, never producing more than ``room`` bytes in total."""

    def __init__(self, encoding: str, limit: int, url: str) -> None:
        self.encoding = encoding
        self.limit = limit
        self.url = url
        self.out = 0
        self._zlib: zlib._Decompress | None = None
        self._br: object | None = None
        self._first = True
        if encoding in ("gzip", "x-gzip"):
            self._zlib = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._zlib = zlib.decompressobj()
        elif encoding == "br":
            import brotli  # type: ignore[import-untyped]

            self._br = brotli.Decompressor()
        else:
            raise FetchError(
                f"unsupported Content-Encoding {encoding!r} (expected gzip, deflate or br)",
                url=url,
                retryable=False,
            )

    def _bomb(self) -> FetchError:
        return FetchError(
            f"the {self.encoding}-compressed body inflates past the {self.limit} byte limit "
            "(fetch.max_body_bytes; a compression bomb?)",
            url=self.url,
            retryable=False,
        )

    def feed(self, data: bytes) -> list[bytes]:
        chunks: list[bytes] = []
        try:
            if self._zlib is not None:
                d = self._zlib
                if self._first and self.encoding == "deflate" and data:
                    self._first = False
                    # "deflate" is meant to be zlib-wrapped, but many servers send raw deflate
                    # (httpx's DeflateDecoder makes the same allowance).
                    if data[0] & 0x0F != 8:
                        d = self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)
                buf = data
                while True:
                    room = self.limit - self.out + 1
                    piece = d.decompress(buf, room)
                    self.out += len(piece)
                    if self.out > self.limit:
                        raise self._bomb()
                    if piece:
                        chunks.append(piece)
                    buf = d.unconsumed_tail
                    if not buf:
                        break
            elif self._br is not None:
                br = self._br
                piece = _br_process(br, data, self.limit - self.out + 1)
                while True:
                    self.out += len(piece)
                    if self.out > self.limit:
                        raise self._bomb()
                    if piece:
                        chunks.append(piece)
                    if _br_can_accept(br):
                        break
                    piece = _br_process(br, b"", self.limit - self.out + 1)
        except FetchError:
            raise
        except Exception as exc:  # zlib.error, brotli.error
            raise FetchError(
                f"the body is not valid {self.encoding} ({exc})", url=self.url, retryable=False
            ) from exc
        return chunks

    def flush(self) -> list[bytes]:
        if self._zlib is not None:
            tail = self._zlib.flush()
            self.out += len(tail)
            if self.out > self.limit:
                raise self._bomb()
            return [tail] if tail else []
        return []


def _br_process(br: object, data: bytes, limit: int) -> bytes:
    try:
        return br.process(data, output_buffer_limit=limit)  # type: ignore[attr-defined,no-any-return]
    except TypeError:  # brotli < 1.2 has no output limit: bounded per network chunk only
        return br.process(data)  # type: ignore[attr-defined,no-any-return]


def _br_can_accept(br: object) -> bool:
    fn = getattr(br, "can_accept_more_data", None)
    return True if fn is None else bool(fn())


async def read_capped(resp: httpx.Response, limit: int, url: str) -> bytes:
    declared = resp.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise FetchError(
            f"the body is {int(declared)} bytes, over the {limit} byte limit "
            "(fetch.max_body_bytes)",
            url=url,
            retryable=False,
        )
    codings = [
        c.strip().lower()
        for c in (resp.headers.get("content-encoding") or "").split(",")
        if c.strip() and c.strip().lower() != "identity"
    ]
    decoders = [_Decoder(c, limit, url) for c in reversed(codings)]
    out = bytearray()
    raw = 0
    stream: AsyncIterator[bytes] = resp.aiter_raw(CHUNK)
    async for chunk in stream:
        raw += len(chunk)
        if raw > limit:
            raise FetchError(
                f"the body is over the {limit} byte limit (fetch.max_body_bytes)",
                url=url,
                retryable=False,
            )
        pieces = [chunk]
        for dec in decoders:
            pieces = [p for piece in pieces for p in dec.feed(piece)]
        for p in pieces:
            out += p
    for i, dec in enumerate(decoders):
        tail = dec.flush()
        for later in decoders[i + 1 :]:
            tail = [p for piece in tail for p in later.feed(piece)]
        for p in tail:
            out += p
    if len(out) > limit:
        raise FetchError(
            f"the body is over the {limit} byte limit (fetch.max_body_bytes)",
            url=url,
            retryable=False,
        )
    return bytes(out)
