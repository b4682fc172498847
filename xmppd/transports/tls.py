"""TLS contexts and the self-signed certificate made on first start."""

from __future__ import annotations

import datetime
import ipaddress
import logging
import ssl
from pathlib import Path

import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ..options import ConfigError

log = logging.getLogger("xmppd.tls")


def ensure_certificate(
    cert: str, key: str, data_dir: Path, domains: list[str]
) -> tuple[Path, Path]:
    """The configured certificate, or a self-signed one in data_dir (made once)."""
    if cert or key:
        if not (cert and key):
            raise ConfigError("set both tls.certificate and tls.key, or neither", "tls")
        return Path(cert), Path(key)
    cert_path, key_path = (
        data_dir / "certs" / "self-signed.crt",
        data_dir / "certs" / "self-signed.key",
    )
    if not (cert_path.exists() and key_path.exists()):
        make_self_signed(cert_path, key_path, domains)
        # A normal first start, not a problem: INFO (tls.certificate names a real one).
        log.info(
            "generated a self-signed certificate for %s at %s (set tls.certificate and tls.key "
            "to use your own)",
            ", ".join(domains),
            cert_path,
        )
    return cert_path, key_path


def make_self_signed(cert_path: Path, key_path: Path, domains: list[str]) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domains[0])])
    now = datetime.datetime.now(datetime.UTC)
    alt_names: list[x509.GeneralName] = [x509.DNSName(d) for d in domains]
    for domain in domains:
        alt_names.append(x509.DNSName(f"*.{domain}"))
    if "localhost" in domains:
        alt_names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


def server_context(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    """TLS 1.2+ only, Python's secure cipher defaults."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    try:
        context.load_cert_chain(cert_path, key_path)
    except FileNotFoundError as exc:
        raise ConfigError(f"cannot read {exc.filename}", "tls.certificate") from exc
    except ssl.SSLError as exc:
        raise ConfigError(
            f"cannot use the certificate/key pair: {exc.reason or exc}", "tls.certificate"
        ) from exc
    # XEP-0368: direct TLS clients may offer the "xmpp-client" ALPN protocol.
    context.set_alpn_protocols(["xmpp-client"])
    return context


def leaf_certificate_der(cert_path: Path) -> bytes:
    """DER of the first certificate in the chain: the input of tls-server-end-point."""
    pem = cert_path.read_bytes()
    return x509.load_pem_x509_certificates(pem)[0].public_bytes(serialization.Encoding.DER)


class HandshakeGate:
    """At most `limit` TLS handshakes at once on one listener.

    A stalled handshake holds OpenSSL state (tens of KiB) until its timeout; thousands at once
    grew the heap by hundreds of MB that glibc kept after they ended (bench/tls_stall_bench.py).
    Past the cap, a listener stops accepting (connections wait in the kernel's accept backlog)
    and a STARTTLS waits for its turn.
    """

    __slots__ = ("limit", "_semaphore")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._semaphore = trio.Semaphore(limit)

    async def acquire(self) -> None:
        await self._semaphore.acquire()

    def release(self) -> None:
        self._semaphore.release()

    @property
    def in_progress(self) -> int:
        return self.limit - self._semaphore.value
