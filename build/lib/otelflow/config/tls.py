"""TLS settings shared by receivers (server side) and exporters (client side), Go key names."""

from __future__ import annotations

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


class TLSServerSettings(ConfigModel):
    cert_file: str
    key_file: str
    ca_file: str | None = None
    client_ca_file: str | None = None  # set: clients must present a certificate it signed (mTLS)

    def read_files(self) -> tuple[bytes, bytes, bytes | None]:
        """(cert, key, client_ca) file contents."""
        return _read(self.cert_file), _read(self.key_file), _read(self.client_ca_file)  # type: ignore[return-value]
