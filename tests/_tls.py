"""A throwaway certificate authority for the TLS tests, made with the
openssl command line: a CA, a server certificate for localhost,
127.0.0.1 and ::1 (its key also in an encrypted copy), and a client
certificate signed by the same CA."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

KEY_PASSWORD = "s3cret pass"


@dataclass(frozen=True)
class Certificates:
    ca: str
    server_cert: str
    server_key: str
    server_key_encrypted: str
    client_cert: str
    client_key: str
    other_ca: str          # a CA that signed nothing here: clients of it must fail

    def client_context(self, client_cert: bool = False, alpn: bool = True) -> ssl.SSLContext:
        """What a careful client uses: verify against the test CA."""
        context = ssl.create_default_context(cafile=self.ca)
        if alpn:
            context.set_alpn_protocols(["http/1.1"])
        if client_cert:
            context.load_cert_chain(self.client_cert, self.client_key)
        return context


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _key(name: str, cwd: Path) -> None:
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-out", name, cwd=cwd)


def _ca(name: str, subject: str, cwd: Path) -> None:
    _key(f"{name}.key", cwd)
    _openssl("req", "-x509", "-new", "-key", f"{name}.key", "-out", f"{name}.pem", "-days", "3",
             "-subj", subject, "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=cwd)


def _signed(name: str, subject: str, extensions: str, cwd: Path) -> None:
    _key(f"{name}.key", cwd)
    _openssl("req", "-new", "-key", f"{name}.key", "-out", f"{name}.csr", "-subj", subject, cwd=cwd)
    (cwd / f"{name}.ext").write_text(extensions)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", f"{name}.pem", "-days", "3",
             "-extfile", f"{name}.ext", cwd=cwd)


def make_certificates(directory: Path) -> Certificates:
    if shutil.which("openssl") is None:
        raise RuntimeError("the TLS tests need the openssl command (apt-get install openssl)")
    directory.mkdir(parents=True, exist_ok=True)
    _ca("ca", "/O=parallio tests/CN=parallio test CA", directory)
    _ca("other-ca", "/CN=another CA", directory)
    _signed("server", "/O=parallio tests/CN=localhost",
            "subjectAltName=DNS:localhost,DNS:app.test,IP:127.0.0.1,IP:::1\n"
            "extendedKeyUsage=serverAuth\n", directory)
    _openssl("pkey", "-in", "server.key", "-aes256", "-passout", f"pass:{KEY_PASSWORD}",
             "-out", "server-encrypted.key", cwd=directory)
    _signed("client", "/C=SE/O=parallio tests/OU=clients/CN=client one",
            "extendedKeyUsage=clientAuth\n", directory)
    return Certificates(
        ca=str(directory / "ca.pem"), server_cert=str(directory / "server.pem"),
        server_key=str(directory / "server.key"),
        server_key_encrypted=str(directory / "server-encrypted.key"),
        client_cert=str(directory / "client.pem"), client_key=str(directory / "client.key"),
        other_ca=str(directory / "other-ca.pem"))
