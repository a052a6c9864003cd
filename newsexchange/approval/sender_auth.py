"""Is an email reply really from the domain in its From header? Pure: plain data in, a
verdict and a reason out, no DNS and no network.

A From address costs nothing to forge, so a reply acts only when a receiving server we trust
authenticated it *for the From domain*, DMARC-style:

- a DKIM signature that passed, whose signing domain (``d=``) is aligned with the From
  domain, or
- SPF that passed for the envelope sender (SMTP ``MAIL FROM``), whose domain is aligned with
  the From domain, or
- (Authentication-Results only) ``dmarc=pass`` for exactly the From domain.

**Aligned** means relaxed alignment kept simple: the same domain, or one a subdomain of the
other (``mail.example.fi`` and ``example.fi``), the shorter of the two having at least two
labels, so a bare top-level domain never aligns. Real DMARC compares organizational domains
through the Public Suffix List; this is stricter (``a.example.fi`` and ``b.example.fi`` do
not align here) and needs no list. A reported ``dmarc=fail`` refuses whatever else passed.

Where the verdicts come from:

- **SendGrid Inbound Parse** posts its own checks: ``SPF`` ("pass", "softfail", "fail",
  "none", …, about the envelope sender) and ``dkim``, one entry per signature, e.g.
  ``{@example.fi : pass}`` or ``{@sendgrid.net : pass, @example.fi : fail}``, or ``none``.
  The envelope sender is ``envelope.from``. See :func:`parse_sendgrid_dkim`.
- **IMAP**: the ``Authentication-Results`` header (RFC 8601) that the operator's receiving
  server adds. Anyone can write such a header into a message, so only the ones carrying the
  configured authserv-id (``mail.imap.authserv_id``) count, and of those only the topmost
  group: the ones above the first ``Received`` header below them, i.e. added at the same
  hop, by our server. Without the setting nothing read by IMAP can be verified.
  See :func:`parse_authentication_results`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

#: Longer verification fields (Authentication-Results, SendGrid's dkim) are not read (real
#: ones are well under 2 kB), and only the first so many Authentication-Results headers are
#: looked at (our server's are on top): hostile input costs linear time at most.
MAX_FIELD = 16 * 1024
MAX_HEADERS = 50


@dataclass(frozen=True)
class SenderAuth:
    """The verdict: may the From address be believed, and why (or why not)."""

    ok: bool
    reason: str
    method: str | None = None  # "dkim", "spf" or "dmarc" when ok


# -- alignment ----------------------------------------------------------------------------


def domain_of(value: str | None) -> str:
    """The domain of an address or a bare domain, lowercased ("" when there is none)."""
    v = (value or "").strip().strip("<>").strip().lower()
    if "@" in v:
        v = v.rpartition("@")[2]
    v = v.rstrip(".")
    if not re.fullmatch(
        r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*", v
    ):
        return ""
    return v


def aligned(a: str | None, b: str | None) -> bool:
    """Relaxed alignment, simply: equal, or one a subdomain of the other; the shorter has at
    least two labels (``fi`` never aligns with ``example.fi``)."""
    x, y = domain_of(a), domain_of(b)
    if not x or not y:
        return False
    if x == y:
        return "." in x
    short, long_ = (x, y) if len(x) < len(y) else (y, x)
    return "." in short and long_.endswith("." + short)


# -- SendGrid -----------------------------------------------------------------------------


class AuthFieldError(ValueError):
    """A verification field we cannot read; it then vouches for nothing."""


def _strip_comments(value: str) -> str:
    """Remove (possibly nested) parenthesized comments outside quoted strings."""
    out: list[str] = []
    depth = 0
    quoted = False
    i = 0
    while i < len(value):
        c = value[i]
        if quoted:
            out.append(c)
            if c == "\\" and i + 1 < len(value):
                out.append(value[i + 1])
                i += 2
                continue
            if c == '"':
                quoted = False
        elif depth:
            if c == "\\":
                i += 2
                continue
            if c == "(":
                depth += 1
            elif c == ")":
                depth -= 1
        elif c == "(":
            depth = 1
            out.append(" ")
        elif c == ")":
            raise AuthFieldError("unbalanced ')'")
        else:
            if c == '"':
                quoted = True
            out.append(c)
        i += 1
    if quoted or depth:
        raise AuthFieldError("unterminated quoted string or comment")
    return "".join(out)


_SG_ENTRY = re.compile(r"\s*@?([A-Za-z0-9.-]+)\s*:\s*([A-Za-z]+)\s*")


def parse_sendgrid_dkim(value: str | None) -> list[tuple[str, str]]:
    """SendGrid's ``dkim`` field as ``[(signing domain, result), …]``.

    ``{@example.fi : pass}``, ``{@a.example : pass, @b.example : fail (body hash)}``, ``none``
    or absent. Comments (the verifier's explanations, which may quote DNS text a sender
    controls) are removed first; any entry that does not read ``@domain : result`` makes the
    whole field unreadable (:class:`AuthFieldError`) rather than partly trusted.
    """
    v = (value or "").strip()
    if not v or v.lower() == "none":
        return []
    if len(v) > MAX_FIELD:
        raise AuthFieldError(f"longer than {MAX_FIELD} characters")
    v = _strip_comments(v).strip()
    if v.startswith("{") and v.endswith("}"):
        v = v[1:-1]
    out: list[tuple[str, str]] = []
    for entry in v.split(","):
        if not entry.strip():
            continue
        m = _SG_ENTRY.fullmatch(entry)
        if not m:
            raise AuthFieldError(f"unexpected DKIM entry {entry.strip()[:60]!r}")
        out.append((m.group(1).lower().rstrip("."), m.group(2).lower()))
    return out


def spf_result(value: str | None) -> str:
    """The result word of an SPF verdict ("pass", "softfail", "fail (…)" → "fail"); "none"
    when absent. ``passthrough`` is not ``pass``."""
    m = re.match(r"\s*([A-Za-z]+)(?=$|[\s(;])", value or "")
    return m.group(1).lower() if m else "none"


def verify_sendgrid(
    *, from_address: str, envelope_from: str | None, spf: str | None, dkim: str | None
) -> SenderAuth:
    """SendGrid Inbound Parse's own SPF and DKIM checks, aligned with the From domain."""
    from_domain = domain_of(from_address)
    if not from_domain:
        return SenderAuth(False, "the From header has no usable domain")
    notes: list[str] = []
    try:
        signatures = parse_sendgrid_dkim(dkim)
    except AuthFieldError as exc:
        signatures = []
        notes.append(f"DKIM field unreadable ({exc})")
    for d, result in signatures:
        if result == "pass" and aligned(d, from_domain):
            return SenderAuth(True, f"DKIM pass for {d} (aligned with {from_domain})", "dkim")
    passed = [d for d, r in signatures if r == "pass"]
    if passed:
        notes.append(f"DKIM passed only for {', '.join(passed)}, not {from_domain}")
    elif signatures:
        notes.append(
            "no DKIM signature passed (" + ", ".join(f"{d}: {r}" for d, r in signatures) + ")"
        )
    elif not notes:
        notes.append("no DKIM signature")
    spf_word = spf_result(spf)
    env_domain = domain_of(envelope_from)
    if spf_word == "pass":
        if aligned(env_domain, from_domain):
            return SenderAuth(
                True, f"SPF pass for {env_domain} (aligned with {from_domain})", "spf"
            )
        notes.append(
            f"SPF passed for {env_domain or 'an unknown envelope sender'}, not {from_domain}"
        )
    else:
        notes.append(f"SPF {spf_word}")
    return SenderAuth(False, f"not authenticated for {from_domain}: " + "; ".join(notes))


# -- Authentication-Results (RFC 8601) ------------------------------------------------------


@dataclass(frozen=True)
class MethodResult:
    method: str  # "dkim", "spf", "dmarc", … (lowercased, method version dropped)
    result: str  # "pass", "fail", "softfail", … (lowercased)
    props: Mapping[str, str] = field(default_factory=dict)  # "header.d" → "example.fi"
    reason: str | None = None
    ambiguous: bool = False  # a property given twice: vouches for nothing


@dataclass(frozen=True)
class AuthResults:
    authserv_id: str
    results: tuple[MethodResult, ...]
    version: int | None = None


_QUOTED = r'"(?:[^"\\]|\\.)*"'
# Bounded repeats: a long run of text without "=" must not cost quadratic time.
_PAIR = re.compile(rf'([^\s=";/]{{1,100}}(?:\s*/\s*[0-9]{{1,5}})?)\s*=\s*({_QUOTED}|[^\s";]+)')


def _unquote(v: str) -> str:
    if len(v) >= 2 and v[0] == '"' and v[-1] == '"':
        return re.sub(r"\\(.)", r"\1", v[1:-1])
    return v


def _split_outside_quotes(value: str, sep: str) -> list[str]:
    parts: list[str] = []
    buf: list[str] = []
    quoted = False
    i = 0
    while i < len(value):
        c = value[i]
        if quoted and c == "\\" and i + 1 < len(value):
            buf.append(value[i : i + 2])
            i += 2
            continue
        if c == '"':
            quoted = not quoted
        if c == sep and not quoted:
            parts.append("".join(buf))
            buf = []
        else:
            buf.append(c)
        i += 1
    parts.append("".join(buf))
    return parts


def parse_authentication_results(value: str) -> AuthResults:
    """One ``Authentication-Results`` field value (RFC 8601 section 2.2)::

        mx.example.org 1; dkim=pass (good) header.d=example.fi header.s=sel;
            spf=pass smtp.mailfrom=anna@example.fi; dmarc=pass header.from=example.fi

    Comments are removed; a field whose first part is not an authserv-id (some servers
    start with ``spf=…`` directly) raises :class:`AuthFieldError`.
    """
    if len(value) > MAX_FIELD:
        raise AuthFieldError(f"longer than {MAX_FIELD} characters")
    text = _strip_comments(value.replace("\r", " ").replace("\n", " "))
    head, *rest = _split_outside_quotes(text, ";")
    words = re.findall(rf"{_QUOTED}|[^\s]+", head.strip())
    if not words or any("=" in w for w in words if not w.startswith('"')):
        raise AuthFieldError("no authserv-id before the first ';'")
    authserv_id = _unquote(words[0]).strip().lower()
    version: int | None = None
    if len(words) > 2 or (len(words) == 2 and not words[1].isdigit()):
        raise AuthFieldError(f"unexpected text after the authserv-id: {head.strip()[:60]!r}")
    if len(words) == 2:
        version = int(words[1])
    results: list[MethodResult] = []
    for segment in rest:
        seg = segment.strip()
        if not seg or seg.lower() == "none":
            continue
        pairs = _PAIR.findall(seg)
        if not pairs:
            continue  # not a resinfo we can read: it vouches for nothing
        method = re.sub(r"\s*/.*$", "", pairs[0][0]).lower()
        result = _unquote(pairs[0][1]).lower()
        props: dict[str, str] = {}
        reason: str | None = None
        ambiguous = False
        for key, raw in pairs[1:]:
            k = key.lower()
            v = _unquote(raw)
            if k == "reason":
                reason = v
            elif "." in k:
                if k in props:
                    ambiguous = True
                props[k] = v
        results.append(MethodResult(method, result, props, reason, ambiguous))
    return AuthResults(authserv_id, tuple(results), version)


def trusted_results(
    headers: Sequence[tuple[int, str]], authserv_id: str
) -> tuple[list[MethodResult], list[str]]:
    """The results our own server reported, and notes on the headers that were not trusted.

    ``headers`` are ``(hop, value)`` in message order, top first, where ``hop`` counts the
    ``Received`` headers above the field. Trusted: fields naming ``authserv_id`` at the hop
    of the topmost such field; fields further down were there before our server saw the
    message (a sender can write them) and fields naming another server are ignored.
    """
    want = authserv_id.strip().lower()
    notes: list[str] = []
    trusted_hop: int | None = None
    out: list[MethodResult] = []
    for hop, value in headers[:MAX_HEADERS]:
        if trusted_hop is not None and hop != trusted_hop:
            notes.append("Authentication-Results below our server's ignored")
            break
        try:
            parsed = parse_authentication_results(value)
        except AuthFieldError as exc:
            notes.append(f"unreadable Authentication-Results ignored ({exc})")
            continue
        if parsed.authserv_id != want:
            notes.append(f"Authentication-Results from {parsed.authserv_id!r} not trusted")
            continue
        if trusted_hop is None:
            trusted_hop = hop
        out.extend(parsed.results)
    return out, notes


def verify_authentication_results(
    *, from_address: str, headers: Sequence[tuple[int, str]], authserv_id: str | None
) -> SenderAuth:
    """The receiving server's ``Authentication-Results``, aligned with the From domain."""
    from_domain = domain_of(from_address)
    if not from_domain:
        return SenderAuth(False, "the From header has no usable domain")
    if not (authserv_id or "").strip():
        return SenderAuth(
            False,
            "replies read by IMAP cannot be verified: mail.imap.authserv_id is not set "
            "(the authserv-id your receiving server writes in Authentication-Results)",
        )
    assert authserv_id is not None
    results, notes = trusted_results(headers, authserv_id)
    if not results:
        why = f"no Authentication-Results from {authserv_id.strip().lower()}"
        return SenderAuth(False, why + (f" ({'; '.join(notes)})" if notes else ""))
    usable = [r for r in results if not r.ambiguous]
    for r in usable:
        if r.method == "dmarc" and r.result == "fail":
            return SenderAuth(False, f"DMARC failed for {from_domain} (Authentication-Results)")
    for r in usable:
        if r.method == "dkim" and r.result == "pass":
            d = r.props.get("header.d") or domain_of(r.props.get("header.i"))
            if aligned(d, from_domain):
                return SenderAuth(True, f"DKIM pass for {d} (aligned with {from_domain})", "dkim")
    for r in usable:
        if r.method == "spf" and r.result == "pass":
            mailfrom = domain_of(r.props.get("smtp.mailfrom"))
            if aligned(mailfrom, from_domain):
                return SenderAuth(
                    True, f"SPF pass for {mailfrom} (aligned with {from_domain})", "spf"
                )
    for r in usable:
        if (
            r.method == "dmarc"
            and r.result == "pass"
            and domain_of(r.props.get("header.from")) == from_domain
        ):
            return SenderAuth(True, f"DMARC pass for {from_domain}", "dmarc")
    summary = ", ".join(_describe(r) for r in results) or "no results"
    if notes:
        summary += f" ({'; '.join(notes)})"
    return SenderAuth(False, f"not authenticated for {from_domain}: {summary}")


def _describe(r: MethodResult) -> str:
    subject = r.props.get("header.d") or r.props.get("smtp.mailfrom") or r.props.get("header.from")
    return f"{r.method}={r.result}" + (f" ({subject})" if subject else "")
