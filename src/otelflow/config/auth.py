"""`auth:` settings shared by receivers and exporters, and the authenticator protocols an
extension (such as `bearertokenauth`) implements."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from pydantic import Field

from otelflow.config.types import ConfigModel


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


def server_authenticator(host: Any, settings: AuthSettings | None) -> ServerAuthenticator | None:
    """The started extension named by `settings`, checked to be a server authenticator."""
    if settings is None:
        return None
    ext = host.extension(settings.authenticator)
    if not isinstance(ext, ServerAuthenticator):
        raise TypeError(f"extension {settings.authenticator!r} cannot authenticate incoming requests")
    return ext


def client_authenticator(host: Any, settings: AuthSettings | None) -> ClientAuthenticator | None:
    """The started extension named by `settings`, checked to be a client authenticator."""
    if settings is None:
        return None
    ext = host.extension(settings.authenticator)
    if not isinstance(ext, ClientAuthenticator):
        raise TypeError(f"extension {settings.authenticator!r} cannot add credentials to requests")
    return ext
