"""Photo decoding stays in its workers: a decode that runs past its deadline is killed, one that
needs more memory than allowed is refused, and the next photo is decoded as if nothing
happened."""

from __future__ import annotations

import os
import time

import pytest

from arkiv.sandbox import DecodingTimedOut, PhotoDecoder, PhotoRefused
from tests import media_factory as media


def worker_pids() -> set[int]:
    """The photo workers this test process started (children running arkiv.photo_worker)."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                command = cmdline.read()
        except OSError:
            continue
        if parent == os.getpid() and b"arkiv.photo_worker" in command:
            found.add(int(entry))
    return found


def test_a_decode_past_its_deadline_is_killed_and_the_next_photo_still_decodes() -> None:
    big = media.jpeg(width=6000, height=4000, seed=81, gps=False)  # 24 megapixels
    small = media.jpeg(width=300, height=200, seed=82, gps=False)
    decoder = PhotoDecoder(workers=1, timeout_seconds=0.05, memory_mb=2048)
    try:
        facts, _parts = decoder.inspect(small, "JPEG", 50_000_000)  # a warm worker: in time
        assert facts["width"] == 300
        before = worker_pids()
        assert len(before) == 1
        started = time.monotonic()
        with pytest.raises(DecodingTimedOut, match="longer than"):
            decoder.inspect(big, "JPEG", 50_000_000)
        assert time.monotonic() - started < 5
        assert not worker_pids() & before  # killed, not left running
        facts, parts = decoder.inspect(small, "JPEG", 50_000_000)
        assert facts["width"] == 300 and parts["thumbnail"][:2] == b"\xff\xd8"
    finally:
        decoder.close()
    assert worker_pids() == set()


def test_a_photo_needing_more_memory_than_allowed_is_refused() -> None:
    big = media.jpeg(width=7000, height=6000, seed=83, gps=False, quality=50)  # 42 megapixels
    decoder = PhotoDecoder(workers=1, timeout_seconds=60, memory_mb=400)
    try:
        with pytest.raises(PhotoRefused, match=r"memory|MB"):
            decoder.inspect(big, "JPEG", 50_000_000)
        facts, _parts = decoder.inspect(
            media.jpeg(width=300, height=200, seed=84, gps=False), "JPEG", 50_000_000
        )
        assert facts["height"] == 200
    finally:
        decoder.close()


def test_the_pixel_limit_is_checked_before_decoding() -> None:
    decoder = PhotoDecoder(workers=1, timeout_seconds=60, memory_mb=2048)
    try:
        started = time.monotonic()
        with pytest.raises(PhotoRefused, match="megapixels"):
            decoder.inspect(media.decompression_bomb(), "PNG", 50_000_000)
        assert time.monotonic() - started < 10
    finally:
        decoder.close()
