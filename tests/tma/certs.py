"""Test certificates for mutual TLS, made with ``cryptography``: a CA, the TMA's
server certificate for 127.0.0.1, a client certificate, and a client certificate
from a CA the TMA does not trust."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from semtrust.tma.protocol import TLSFiles


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: str,
          issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool, server: bool = False
          ) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5))
         .not_valid_after(now + datetime.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                          False), critical=True)
        b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                            critical=False)
    else:
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            issuer_key.public_key()), critical=False)
    if server:
        b = b.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False)
    return b.sign(issuer_key, hashes.SHA256())


class Pki:
    """Files under ``d``: ``server`` and ``client`` TLSFiles, and a ``rogue`` client."""

    def __init__(self, d: Path) -> None:
        d.mkdir(parents=True, exist_ok=True)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = _cert("semtrust test CA", ca_key, "semtrust test CA", ca_key, ca=True)
        (d / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        rogue_key = ec.generate_private_key(ec.SECP256R1())
        rogue_ca = _cert("rogue CA", rogue_key, "rogue CA", rogue_key, ca=True)

        def leaf(name: str, issuer: x509.Certificate, ikey: ec.EllipticCurvePrivateKey,
                 server: bool) -> tuple[str, str]:
            k = ec.generate_private_key(ec.SECP256R1())
            c = _cert(name, k, issuer.subject.rfc4514_string()[3:], ikey, ca=False,
                      server=server)
            (d / f"{name}.pem").write_bytes(c.public_bytes(serialization.Encoding.PEM))
            _write_key(k, d / f"{name}.key")
            return str(d / f"{name}.pem"), str(d / f"{name}.key")

        cert, key = leaf("tma", ca, ca_key, True)
        self.server = TLSFiles(cert, key, str(d / "ca.pem"))
        cert, key = leaf("orchestrator", ca, ca_key, False)
        self.client = TLSFiles(cert, key, str(d / "ca.pem"))
        cert, key = leaf("intruder", rogue_ca, rogue_key, False)
        self.rogue = TLSFiles(cert, key, str(d / "ca.pem"))
