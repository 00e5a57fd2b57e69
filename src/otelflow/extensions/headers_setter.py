"""`headers_setter` extension (Go contrib `headerssetterextension`): sets the headers / gRPC
metadata of exporters' requests (`auth: {authenticator: headers_setter}`) from fixed values or
from the request metadata the exported batch carries (`from_context`), e.g. a tenant header
that receivers recorded with `include_metadata` and the `batch` processor kept apart with
`metadata_keys`.

Each rule runs in order on the request's headers (matched case-insensitively, including the
exporter's own `headers:`): `insert` sets a header that is absent, `update` one that is
present, `upsert` either way, `delete` removes it. A `from_context` key the metadata lacks
takes `default_value`; without one the rule changes nothing.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, SecretStr, model_validator

from otelflow.component import Component, CreateSettings, Factory, Kind, PermanentError
from otelflow.config.types import ConfigModel
from otelflow.pdata import Metadata

HeaderAction = Annotated[
    Literal["insert", "update", "upsert", "delete"],
    BeforeValidator(lambda v: v.lower() if isinstance(v, str) else v)]


class HeaderConfig(ConfigModel):
    key: str = Field(min_length=1)
    action: HeaderAction = "upsert"
    value: SecretStr | None = None
    from_context: str | None = Field(None, min_length=1)
    default_value: SecretStr | None = None

    @model_validator(mode="after")
    def _one_source(self) -> HeaderConfig:
        if self.action == "delete":
            return self
        if self.value is None and self.from_context is None:
            raise ValueError(f"header {self.key!r}: set one of value or from_context")
        if self.value is not None and self.from_context is not None:
            raise ValueError(f"header {self.key!r}: value and from_context are mutually "
                             "exclusive")
        return self


class HeadersSetterConfig(ConfigModel):
    headers: list[HeaderConfig] = Field(min_length=1)


def create(settings: CreateSettings, config: HeadersSetterConfig) -> HeadersSetter:
    return HeadersSetter(config)


FACTORY = Factory(Kind.EXTENSION, "headers_setter", HeadersSetterConfig, create,
                  description="Set exporters' request headers from values or request metadata")


class _Rule:
    __slots__ = ("action", "context_key", "default", "key", "lower", "value")

    def __init__(self, cfg: HeaderConfig):
        self.key = cfg.key
        self.lower = cfg.key.lower()
        self.action = cfg.action
        self.value = cfg.value.get_secret_value() if cfg.value is not None else None
        self.context_key = cfg.from_context
        self.default = cfg.default_value.get_secret_value() if cfg.default_value else None

    def resolve(self, metadata: Metadata | None) -> str | None:
        """The header's value for a batch carrying `metadata`; None: leave the header alone."""
        if self.context_key is None:
            return self.value
        values = metadata.values_of(self.context_key) if metadata is not None else ()
        if not values:
            return self.default
        if len(values) > 1:
            raise PermanentError(
                f"headers_setter: {len(values)} values of {self.context_key!r} in the request "
                f"metadata, cannot determine which one to use for header {self.key!r}")
        return values[0]


class HeadersSetter(Component):
    """Client side only: `set_request_headers(headers, metadata)` (see `config.auth`)."""

    def __init__(self, config: HeadersSetterConfig):
        self.config = config
        self._rules = [_Rule(h) for h in config.headers]

    def set_request_headers(self, headers: dict[str, str], metadata: Metadata | None) -> None:
        for rule in self._rules:
            if rule.action == "delete":
                for k in [k for k in headers if k.lower() == rule.lower]:
                    del headers[k]
                continue
            value = rule.resolve(metadata)
            if value is None:
                continue
            present = next((k for k in headers if k.lower() == rule.lower), None)
            if present is None:
                if rule.action != "update":
                    headers[rule.key] = value
            elif rule.action != "insert":
                headers[present] = value

    def __repr__(self) -> str:
        return f"HeadersSetter(headers={[h.key for h in self.config.headers]!r})"
