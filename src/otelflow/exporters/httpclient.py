"""What the HTTP exporters share: `proxy_url`, bounded response reads and `Retry-After`."""

from __future__ import annotations

import email.utils
import time

import aiohttp
from pydantic import field_validator

from otelflow.config.types import ConfigModel

MAX_RESPONSE_BODY = 4 * 1024 * 1024  # never read more of a response than this


class ProxySettings(ConfigModel):
    """Go's confighttp `proxy_url`: send every request through this HTTP proxy."""

    proxy_url: str = ""

    @field_validator("proxy_url")
    @classmethod
    def _http_proxy(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(f"proxy_url must be an http:// or https:// URL, got {value!r}")
        return value

    def proxy_options(self) -> dict[str, str]:
        """Keyword arguments for aiohttp's request methods."""
        return {"proxy": self.proxy_url} if self.proxy_url else {}


async def read_capped(response: aiohttp.ClientResponse, limit: int = MAX_RESPONSE_BODY) -> bytes:
    """At most `limit` bytes of the response body; the rest is never read."""
    out = bytearray()
    while len(out) < limit:
        chunk = await response.content.read(limit - len(out))
        if not chunk:
            break
        out += chunk
    return bytes(out)


def retry_after(value: str | None) -> float | None:
    """`Retry-After` as seconds: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
