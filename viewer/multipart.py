"""multipart/related bodies (RFC 2387): streamed part by part for WADO-RS, parsed for STOW-RS."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from arkiv.errors import InvalidQuery


def new_boundary() -> str:
    return f"arkiv-{secrets.token_hex(16)}"


def multipart_stream(
    parts: Iterable[Callable[[], Iterator[bytes]]], content_type: str, boundary: str
) -> Iterator[bytes]:
    """Yield the body; each part is a callable producing its chunks, opened only when reached."""
    return typed_multipart_stream(((content_type, part) for part in parts), boundary)


def typed_multipart_stream(
    parts: Iterable[tuple[str, Callable[[], Iterator[bytes]]]], boundary: str
) -> Iterator[bytes]:
    """As `multipart_stream`, with a content type of its own for each part."""
    for content_type, open_part in parts:
        yield (f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode("ascii"))
        yield from open_part()
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode("ascii")


@dataclass(frozen=True)
class Part:
    content_type: str
    body: bytes
    content_location: str = ""
    """Where a bulk data part says it lives: the BulkDataURI a JSON dataset refers to it by."""


_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)


def boundary_of(content_type: str) -> str:
    match = _BOUNDARY.search(content_type)
    if not match:
        raise InvalidQuery("multipart/related request without a boundary parameter")
    return match.group(1).strip()


def parse_multipart(body: bytes, boundary: str) -> list[Part]:
    """The parts of a multipart body, each with its own Content-Type (empty when it has none).

    RFC 2046 5.1.1: the delimiter is CRLF + `--boundary`; the first may come without the CRLF,
    and anything after the close delimiter is an epilogue to ignore."""
    delimiter = b"--" + boundary.encode("latin-1")
    start = body.find(delimiter)
    if start < 0:
        raise InvalidQuery("the request body has no part delimited by its boundary")
    parts: list[Part] = []
    position = start + len(delimiter)
    while True:
        if body[position : position + 2] == b"--":
            return parts
        line_end = body.find(b"\r\n", position)
        if line_end < 0:
            raise InvalidQuery("the multipart body ends inside a part")
        next_delimiter = body.find(b"\r\n" + delimiter, line_end)
        if next_delimiter < 0:
            raise InvalidQuery("the multipart body has no closing boundary")
        segment = body[line_end + 2 : next_delimiter]
        if segment.startswith(b"\r\n"):  # a part without headers
            head, content = b"", segment[2:]
        else:
            head, separator, content = segment.partition(b"\r\n\r\n")
            if not separator:
                raise InvalidQuery("a part of the multipart body has no end to its headers")
        parts.append(
            Part(_header(head, "content-type"), content, _header(head, "content-location"))
        )
        position = next_delimiter + 2 + len(delimiter)


def _header(head: bytes, wanted: str) -> str:
    for line in head.decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        if name.strip().lower() == wanted:
            return value.strip()
    return ""
