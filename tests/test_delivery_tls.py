"""SMTP over STARTTLS and implicit TLS with AUTH from the environment, against aiosmtpd with a
certificate from a test CA (trusted through SSL_CERT_FILE, which Python's default context
honours — the same verification a real relay's certificate goes through)."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import ipaddress
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from newsexchange.config import Config, load_config
from newsexchange.db import Database
from newsexchange.delivery.send import run_send
from tests.test_delivery_support import NOW, delivery_config, seed_digest


def _certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it."""
    now = dt.datetime.now(dt.UTC)
    # Valid two years either side: OpenSSL checks the validity on the C library's clock, which
    # the suite's run a year ahead (tests/clock_ahead) does not move; what these tests check is
    # the chain and the name, not the dates.
    valid = dt.timedelta(days=730)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "newsexchange test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - valid)
        .not_valid_after(now + valid)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - valid)
        .not_valid_after(now + valid)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem, cert_pem, key_pem = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_pem, cert_pem, key_pem


class TlsSink:
    def __init__(self, folder: Path, *, implicit: bool) -> None:
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult, LoginPassword

        from tests.servers import _free_port

        self.ca, cert, key = _certificates(folder)
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(cert, key)
        self.messages: list[Any] = []
        self.logins: list[tuple[bytes, bool]] = []
        outer = self

        def authenticator(
            server: Any, session: Any, envelope: Any, mechanism: str, data: Any
        ) -> AuthResult:
            ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
                b"relay-user",
                b"relay-pass",
            )
            # (aiosmtpd only knows about STARTTLS; an implicit-TLS listener speaks nothing else)
            outer.logins.append((data.login, implicit or bool(session.ssl)))
            return AuthResult(success=ok, handled=False)  # aiosmtpd sends the 235 or 535

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                if not session.authenticated:
                    return "530 5.7.0 authentication required"
                outer.messages.append(
                    email.message_from_bytes(envelope.content, policy=email.policy.default)
                )
                return "250 OK"

        self.port = _free_port()
        kwargs: dict[str, Any] = {
            "authenticator": authenticator,
            # aiosmtpd counts only STARTTLS as TLS for AUTH; with implicit TLS the whole
            # connection is encrypted, so requiring it there would refuse every login.
            "auth_require_tls": not implicit,
        }
        if implicit:
            kwargs["ssl_context"] = server_ctx
        else:
            kwargs["tls_context"] = server_ctx
            kwargs["require_starttls"] = True
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, **kwargs)


@pytest.fixture(params=["starttls", "tls"])
def tls_sink(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TlsSink]:
    folder = tmp_path / "pki"
    folder.mkdir()
    sink = TlsSink(folder, implicit=request.param == "tls")
    sink.controller.start()
    yield sink
    sink.controller.stop()


def _config(
    write_config: Callable[..., Config], sink: TlsSink, *, password: str, mode: str
) -> Config:
    cfg = delivery_config(write_config, smtp_port=sink.port)
    text = cfg.path.read_text()  # type: ignore[union-attr]
    text = text.replace(
        "connections: 2,",
        f"connections: 2, {mode}: true, username_env: RELAY_USER, password_env: RELAY_PASS,",
    )
    cfg.path.write_text(text)  # type: ignore[union-attr]
    return load_config(
        cfg.path,
        env={
            "NEWSEXCHANGE_SECRET_KEY": "s3cret",
            "RELAY_USER": "relay-user",
            "RELAY_PASS": password,
        },
    )


def test_mail_goes_over_verified_tls_with_auth_from_the_environment(
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
    tls_sink: TlsSink,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_sink.ca))
    mode = "tls" if tls_sink.controller.ssl_context else "starttls"
    cfg = _config(write_config, tls_sink, password="relay-pass", mode=mode)
    db = db_for(cfg)
    did = seed_digest(db, cfg, [("", "a@example.org"), ("", "b@example.org")])

    report = run_send(db, cfg, now=NOW, digest_id=did)

    assert report.sent == 2 and report.ok, report.failures
    assert len(tls_sink.messages) == 2
    assert tls_sink.logins and all(user == b"relay-user" and tls for user, tls in tls_sink.logins)


def test_an_untrusted_certificate_is_refused_and_nothing_is_sent(
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
    tls_sink: TlsSink,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    other_ca, _c, _k = _certificates(other)  # a CA that did not sign the server's cert
    monkeypatch.setenv("SSL_CERT_FILE", str(other_ca))
    mode = "tls" if tls_sink.controller.ssl_context else "starttls"
    cfg = _config(write_config, tls_sink, password="relay-pass", mode=mode)
    db = db_for(cfg)
    did = seed_digest(db, cfg, [("", "a@example.org")])

    report = run_send(db, cfg, now=NOW, digest_id=did)

    assert report.sent == 0 and tls_sink.messages == [] and tls_sink.logins == []
    assert "certificate verify failed" in report.failures[0]["error"]


def test_a_wrong_password_stops_the_send_without_failing_recipients(
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
    tls_sink: TlsSink,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_sink.ca))
    mode = "tls" if tls_sink.controller.ssl_context else "starttls"
    cfg = _config(write_config, tls_sink, password="wrong", mode=mode)
    db = db_for(cfg)
    did = seed_digest(db, cfg, [("", "a@example.org"), ("", "b@example.org")])

    report = run_send(db, cfg, now=NOW, digest_id=did)

    assert report.error is not None and "login refused" in report.error
    assert "RELAY_USER" in report.error and "wrong" not in report.error  # never the secret
    assert report.sent == 0 and report.failed_permanent == 0
