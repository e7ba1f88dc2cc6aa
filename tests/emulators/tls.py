"""Throw-away TLS material for the local service emulators.

A fresh CA (trustme) signs one server certificate valid for ``127.0.0.1`` (IP SAN) and
``localhost``. Servers take :meth:`TlsMaterial.server_context`; clients trust
:attr:`TlsMaterial.ca_file` (websocket-client: ``sslopt={"ca_certs": ca_file}``), so a
client that verifies against the system store fails, as it would with a bad cert.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass(frozen=True)
class TlsMaterial:
    """A CA and a server certificate it issued; ``ca_file`` is the CA in PEM form."""

    ca: trustme.CA
    server_cert: trustme.LeafCert
    ca_file: str

    def server_context(self) -> ssl.SSLContext:
        """A new server-side context presenting the certificate (and its chain)."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.server_cert.configure_cert(ctx)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts only this CA."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        self.ca.configure_trust(ctx)
        return ctx


def make_tls(tmp_dir: str | Path) -> TlsMaterial:
    """Create a CA and a server cert for 127.0.0.1/localhost; write the CA PEM into tmp_dir."""
    directory = Path(tmp_dir)
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_path = directory / f"emulator-ca-{id(ca):x}.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    return TlsMaterial(ca=ca, server_cert=cert, ca_file=str(ca_path))
