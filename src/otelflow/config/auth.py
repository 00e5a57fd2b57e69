"""`auth:` settings shared by receivers and exporters, and the authenticator protocols an
extension (such as `bearertokenauth` or `headers_setter`) implements."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from pydantic import Field

from otelflow.config.types import ConfigModel
from otelflow.pdata import Metadata


class AuthSettings(ConfigModel):
    """`auth: {authenticator: <extension id>}`, as in the Go collector's confighttp/configgrpc."""

    authenticator: str = Field(min_length=1)


@runtime_checkable
class ServerAuthenticator(Protocol):
    def authenticate(self, headers: Mapping[str, str]) -> bool:
        """True when the request headers (keys lower-case) carry valid credentials."""
        ...


@runtime_checkable
class ClientAuthenticator(Protocol):
    def client_headers(self) -> dict[str, str]:
        """Headers to add to every outgoing request."""
        ...


@runtime_checkable
class RequestHeadersSetter(Protocol):
    def set_request_headers(self, headers: dict[str, str], metadata: Metadata | None) -> None:
        """Change an outgoing request's headers in place (keys matched case-insensitively),
        for the batch it sends, which carries `metadata` (None: none was recorded)."""
        ...


class ClientAuth:
    """What an exporter holds for `auth:`: sets a request's headers through the extension,
    whichever of the two client protocols it implements."""

    __slots__ = ("_headers", "_setter")

    def __init__(self, extension: ClientAuthenticator | RequestHeadersSetter):
        self._setter = extension if isinstance(extension, RequestHeadersSetter) else None
        self._headers = extension if self._setter is None else None

    def apply(self, headers: dict[str, str], metadata: Metadata | None) -> None:
        """Set the extension's headers on `headers` for a batch carrying `metadata`; may raise
        the exporter errors (`PermanentError`) when they cannot be determined."""
        if self._setter is not None:
            self._setter.set_request_headers(headers, metadata)
        else:
            headers.update(self._headers.client_headers())  # type: ignore[union-attr]


def server_authenticator(host: Any, settings: AuthSettings | None) -> ServerAuthenticator | None:
    """The started extension named by `settings`, checked to be a server authenticator."""
    if settings is None:
        return None
    ext = host.extension(settings.authenticator)
    if not isinstance(ext, ServerAuthenticator):
        raise TypeError(f"extension {settings.authenticator!r} cannot authenticate incoming requests")
    return ext


def client_authenticator(host: Any, settings: AuthSettings | None) -> ClientAuth | None:
    """The started extension named by `settings`, checked to be a client authenticator."""
    if settings is None:
        return None
    ext = host.extension(settings.authenticator)
    if not isinstance(ext, ClientAuthenticator | RequestHeadersSetter):
        raise TypeError(f"extension {settings.authenticator!r} cannot add credentials to requests")
    return ClientAuth(ext)
