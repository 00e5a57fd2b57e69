"""`bearertokenauth` extension: checks `Authorization: Bearer <token>` on receivers and adds it
on exporters (`auth: {authenticator: bearertokenauth}`). Tokens never reach logs or errors."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from pathlib import Path

from pydantic import Field, SecretStr, model_validator

from otelflow.component import Component, CreateSettings, Factory, Host, Kind
from otelflow.config.types import ConfigModel


class BearerTokenAuthConfig(ConfigModel):
    scheme: str = "Bearer"
    header: str = Field("Authorization", min_length=1)
    token: SecretStr | None = None
    tokens: list[SecretStr] | None = None
    filename: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> BearerTokenAuthConfig:
        sources = [k for k in ("token", "tokens", "filename") if getattr(self, k)]
        if len(sources) != 1:
            raise ValueError("set exactly one of token, tokens or filename"
                             + (f" (got {', '.join(sources)})" if sources else ""))
        return self


def create(settings: CreateSettings, config: BearerTokenAuthConfig) -> BearerTokenAuth:
    return BearerTokenAuth(config)


FACTORY = Factory(Kind.EXTENSION, "bearertokenauth", BearerTokenAuthConfig, create,
                  description="Bearer token authentication for receivers and exporters")


class BearerTokenAuth(Component):
    """Server side: `authenticate(headers)`; client side: `client_headers()`."""

    def __init__(self, config: BearerTokenAuthConfig):
        self.config = config
        self._header = config.header.lower()
        self._tokens: list[bytes] = []

    async def start(self, host: Host) -> None:
        cfg = self.config
        if cfg.filename:
            try:
                text = Path(cfg.filename).read_text().strip()
            except OSError as exc:
                raise OSError(f"cannot read the token file {cfg.filename}: {exc.strerror}") from None
            if not text:
                raise ValueError(f"the token file {cfg.filename} is empty")
            secrets = [text]
        else:
            secrets = [s.get_secret_value() for s in (cfg.tokens or [cfg.token])]  # type: ignore[list-item]
        self._tokens = [self._value(s).encode() for s in secrets]

    def _value(self, token: str) -> str:
        return f"{self.config.scheme} {token}" if self.config.scheme else token

    def authenticate(self, headers: Mapping[str, str]) -> bool:
        """Constant-time comparison of the header against every accepted token."""
        got = headers.get(self._header)
        if not got:
            return False
        given = got.encode("utf-8", "surrogateescape")
        return any(hmac.compare_digest(given, token) for token in self._tokens)

    def client_headers(self) -> dict[str, str]:
        return {self.config.header: self._tokens[0].decode()} if self._tokens else {}

    def __repr__(self) -> str:
        return f"BearerTokenAuth(header={self.config.header!r}, tokens=<redacted>)"
