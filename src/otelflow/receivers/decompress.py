"""Received bodies and messages decompressed under a size limit, for the OTLP receivers: a
bomb stops at the limit instead of inflating whole. The HTTP receiver maps the errors to
413/400, the gRPC server to RESOURCE_EXHAUSTED/INTERNAL."""

from __future__ import annotations

import zlib

import cramjam

READ_CHUNK = 64 * 1024


class TooLarge(ValueError):
    """The data is larger than the limit once decompressed."""


class Corrupt(ValueError):
    """The data does not decompress."""


class Identity:
    """Uncompressed data: chunks kept as received, joined once. `noun` and `limit_name` word
    the errors ("request body", "max_request_body_size")."""

    def __init__(self, limit: int, noun: str, limit_name: str):
        self.limit = limit
        self.noun = noun
        self.limit_name = limit_name
        self.parts: list[bytes] = []
        self.size = 0

    def too_large(self) -> TooLarge:
        return TooLarge(f"{self.noun} larger than {self.limit_name} ({self.limit} bytes) once "
                        f"decompressed")

    def _append(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            raise self.too_large()
        self.parts.append(data)

    def feed(self, chunk: bytes) -> None:
        self._append(chunk)

    def finish(self) -> bytes:
        return self.parts[0] if len(self.parts) == 1 else b"".join(self.parts)


class Zlib(Identity):
    """gzip / deflate, inflated in steps of at most READ_CHUNK bytes."""

    def __init__(self, limit: int, noun: str, limit_name: str, wbits: int):
        super().__init__(limit, noun, limit_name)
        self.wbits = wbits
        self.d = zlib.decompressobj(wbits)

    def feed(self, chunk: bytes) -> None:
        try:
            while chunk:
                self._append(self.d.decompress(chunk, READ_CHUNK))
                chunk = self.d.unconsumed_tail
                if self.d.eof and self.d.unused_data:  # a concatenated gzip member follows
                    chunk, self.d = self.d.unused_data, zlib.decompressobj(self.wbits)
        except zlib.error as exc:
            raise Corrupt(f"corrupt compressed {self.noun}: {exc}") from None

    def finish(self) -> bytes:
        if not self.d.eof:
            raise Corrupt(f"truncated compressed {self.noun}")
        return super().finish()


class Framed(Identity):
    """zstd or framed snappy (cramjam): the compressed bytes are collected (already bounded),
    then inflated into buffers that grow up to the limit; data that needs more is refused
    without inflating it all."""

    def __init__(self, limit: int, noun: str, limit_name: str, codec: str):
        super().__init__(limit, noun, limit_name)
        self.name = codec
        self.codec = getattr(cramjam, codec)

    def finish(self) -> bytes:
        data = super().finish()
        size = min(self.limit + 1, max(64 * 1024, 8 * len(data)))
        while True:
            buffer = bytearray(size)
            try:
                n = self.codec.decompress_into(data, buffer)
            except cramjam.DecompressionError as exc:
                if "buffer" not in str(exc):
                    raise Corrupt(f"corrupt {self.name} {self.noun}: {exc}") from None
                if size > self.limit:
                    raise self.too_large() from None
                size = min(self.limit + 1, size * 4)
                continue
            if n > self.limit:
                raise self.too_large()
            return bytes(memoryview(buffer)[:n])


def decoder(encoding: str, limit: int, noun: str, limit_name: str) -> Identity | None:
    """The decoder for one of Go's compression names ("" for none), or None for others.
    `deflate` and `zlib` accept a zlib or a gzip header."""
    if encoding == "":
        return Identity(limit, noun, limit_name)
    if encoding == "gzip":
        return Zlib(limit, noun, limit_name, 16 + zlib.MAX_WBITS)
    if encoding in ("deflate", "zlib"):
        return Zlib(limit, noun, limit_name, 32 + zlib.MAX_WBITS)
    if encoding in ("zstd", "snappy"):
        return Framed(limit, noun, limit_name, encoding)
    return None
