"""multipart/related bodies (RFC 2387) for WADO-RS, streamed part by part."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Iterator


def new_boundary() -> str:
    return f"arkiv-{secrets.token_hex(16)}"


def multipart_stream(
    parts: Iterable[Callable[[], Iterator[bytes]]], content_type: str, boundary: str
) -> Iterator[bytes]:
    """Yield the body; each part is a callable producing its chunks, opened only when reached."""
    for open_part in parts:
        yield (f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode("ascii"))
        yield from open_part()
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode("ascii")
