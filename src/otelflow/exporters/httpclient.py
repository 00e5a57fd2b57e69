"""What the HTTP exporters share: bounded response reads and `Retry-After` parsing."""

from __future__ import annotations

import email.utils
import time

import aiohttp

MAX_RESPONSE_BODY = 4 * 1024 * 1024  # never read more of a response than this


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
