"""Request bodies read with a cap, before anything parses them.

Starlette reads a whole body into memory on ``request.body()`` / ``request.form()``, however
large. The webhooks are public URLs, so each route caps its body: a declared
``Content-Length`` over the cap is refused before a byte is read, and a body sent without
one (chunked) is refused as soon as what has arrived passes the cap — the rest is never read.

    body = await read_body(request, config.mail.sendgrid.webhook_max_bytes,
                           setting="mail.sendgrid.webhook_max_bytes")

For a route that then wants ``request.form()``, :func:`capped_request` reads the body the
same way and returns a request that replays it::

    try:
        request = await capped_request(request, limit, setting="...")
    except BodyTooLarge as exc:
        return too_large(exc)
    form = await request.form()
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import Message


class BodyTooLarge(Exception):
    """The request body is over ``limit`` bytes (``declared`` when Content-Length said so)."""

    def __init__(self, limit: int, *, setting: str, declared: int | None = None) -> None:
        self.limit = limit
        self.setting = setting
        self.declared = declared
        size = f"{declared} bytes" if declared is not None else f"over {limit} bytes"
        super().__init__(f"request body is {size}; the limit is {limit} bytes ({setting})")


async def read_body(request: Request, limit: int, *, setting: str) -> bytes:
    """The body, read chunk by chunk; :class:`BodyTooLarge` once it passes ``limit``."""
    declared = request.headers.get("content-length", "").strip()
    # Digits only: uvicorn already refuses a malformed length; a 10,000-digit one is over.
    if declared.isascii() and declared.isdigit():
        size = int(declared) if len(declared) <= 18 else None
        if size is None or size > limit:
            raise BodyTooLarge(limit, setting=setting, declared=size)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit, setting=setting)
        chunks.append(chunk)
    return b"".join(chunks)


async def capped_request(request: Request, limit: int, *, setting: str) -> Request:
    """A request like ``request`` whose body has been read under ``limit`` and is replayed
    to whatever reads it next (``form()``, ``json()``, ``body()``)."""
    body = await read_body(request, limit, setting=setting)
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(request.scope, replay)


def too_large(exc: BodyTooLarge) -> Response:
    """413 with the reason. ``Connection: close``: the unread rest of the body is dropped."""
    return PlainTextResponse(f"{exc}\n", 413, headers={"Connection": "close"})
