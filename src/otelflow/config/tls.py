"""TLS settings shared by receivers (server side) and exporters (client side), Go key names."""

from __future__ import annotations

import ssl
from pathlib import Path

from pydantic import model_validator

from otelflow.config.types import ConfigModel


def _read(path: str | None) -> bytes | None:
    return Path(path).read_bytes() if path else None


class TLSClientSettings(ConfigModel):
    insecure: bool = False
    insecure_skip_verify: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name_override: str | None = None

    @model_validator(mode="after")
    def _pair(self) -> TLSClientSettings:
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("cert_file and key_file must be set together")
        return self

    def read_files(self) -> tuple[bytes | None, bytes | None, bytes | None]:
        """(ca, key, cert) file contents, None where unset."""
        return _read(self.ca_file), _read(self.key_file), _read(self.cert_file)

    def client_context(self) -> ssl.SSLContext:
        """An SSL context verifying the server against `ca_file` (or the system roots), with a
        client certificate for mTLS when `cert_file`/`key_file` are set."""
        context = ssl.create_default_context(cafile=self.ca_file)
        if self.insecure_skip_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.cert_file:
            context.load_cert_chain(self.cert_file, self.key_file)
        return context


class TLSServerSettings(ConfigModel):
    cert_file: str
    key_file: str
    ca_file: str | None = None
    client_ca_file: str | None = None  # set: clients must present a certificate it signed (mTLS)

    def read_files(self) -> tuple[bytes, bytes, bytes | None]:
        """(cert, key, client_ca) file contents."""
        return _read(self.cert_file), _read(self.key_file), _read(self.client_ca_file)  # type: ignore[return-value]

    def server_context(self) -> ssl.SSLContext:
        """An SSL context serving `cert_file`; requiring a client certificate signed by
        `client_ca_file` when set (mTLS)."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        if self.client_ca_file:
            context.load_verify_locations(cafile=self.client_ca_file)
            context.verify_mode = ssl.CERT_REQUIRED
        return context
