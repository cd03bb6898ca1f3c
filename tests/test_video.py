"""Video as phones and cameras write it, through ffprobe and ffmpeg: the facts read, location
and camera metadata removed without re-encoding, a poster frame turned the right way, and files
that are not videos, broken ones and slow ones refused."""

from __future__ import annotations

import io
import subprocess
from datetime import datetime
from fractions import Fraction
from pathlib import Path

import pytest
from PIL import Image

from arkiv import video
from arkiv.errors import ArchiveUnavailable
from arkiv.photo_formats import sniff
from tests import media_factory as media
from tests.conftest import require_tool


def stream_hash(data: bytes, tmp_path: Path, stream: str) -> str:
    """A hash of one stream's packets: equal when the coded video or sound is unchanged."""
    path = tmp_path / f"hashed-{len(data)}"
    path.write_bytes(data)
    result = subprocess.run(
        [require_tool("ffmpeg"), "-v", "error", "-i", str(path), "-map", stream, "-c", "copy",
         "-f", "hash", "-hash", "sha256", "-"],
        capture_output=True, check=True, timeout=60,
    )  # fmt: skip
    return result.stdout.decode().strip()


def rotated_phone_video(tmp_path: Path) -> bytes:
    """A phone's portrait video: turned 90° for display, with its location and model."""
    plain = tmp_path / "plain.mp4"
    plain.write_bytes(media.mp4(tmp_path / "plain", seconds=2))
    target = tmp_path / "IMG_0042.MOV"
    subprocess.run(
        [require_tool("ffmpeg"), "-v", "error", "-y", "-i", str(plain), "-c", "copy",
         "-metadata:s:v:0", "rotate=90", "-metadata", "location=+59.9139+010.7522/",
         "-metadata", "make=Apple", "-metadata", "model=iPhone 15",
         "-metadata", "creation_time=2026-06-01T12:00:00Z", "-f", "mov", str(target)],
        check=True, timeout=60,
    )  # fmt: skip
    return target.read_bytes()


def iphone_video(tmp_path: Path) -> bytes:
    """A QuickTime file with Apple's own metadata keys (mdta), as an iPhone writes them."""
    plain = tmp_path / "plain.mp4"
    plain.write_bytes(media.mp4(tmp_path / "plain", seconds=1, location=False))
    target = tmp_path / "IMG_0043.MOV"
    subprocess.run(
        [require_tool("ffmpeg"), "-v", "error", "-y", "-i", str(plain), "-c", "copy",
         "-movflags", "use_metadata_tags",
         "-metadata", "com.apple.quicktime.location.ISO6709=+59.9139+010.7522+000.000/",
         "-metadata", "com.apple.quicktime.make=Apple",
         "-metadata", "com.apple.quicktime.model=iPhone 15",
         "-metadata", "com.apple.quicktime.software=17.1",
         "-metadata", "major_brand=isom",  # a tag cannot make QuickTime into MP4
         "-f", "mov", str(target)],
        check=True, timeout=60,
    )  # fmt: skip
    return target.read_bytes()


def test_probe_reads_what_a_phone_video_is(tmp_path: Path) -> None:
    facts = video.probe(media.mp4(tmp_path / "clip", seconds=3))
    assert facts.container == "mp4" and facts.codec == "h264" and facts.profile == "High"
    assert (facts.width, facts.height) == (640, 480)
    assert facts.frame_rate == Fraction(25) and facts.frames == 75
    assert facts.duration_seconds == pytest.approx(3.0, abs=0.1)
    assert facts.creation_time == datetime(2026, 11, 20, 10, 15)  # 09:15 UTC, winter in Oslo
    assert facts.has_audio and facts.rotation == 0
    turned = video.probe(rotated_phone_video(tmp_path))
    assert turned.container == "mov" and turned.rotation in (90, 270)  # a quarter turn
    assert turned.creation_time == datetime(2026, 6, 1, 14, 0)  # summer time


def test_clean_removes_location_and_camera_but_not_a_frame(tmp_path: Path) -> None:
    sent = rotated_phone_video(tmp_path)
    kept = video.clean(sent)
    assert sniff(kept).name == "mp4"  # QuickTime streams that fit MP4 are stored as MP4
    assert b"+59.9139" not in kept and b"iPhone" not in kept and b"Apple" not in kept
    facts = video.probe(kept)
    assert facts.rotation == video.probe(sent).rotation != 0
    assert facts.creation_time == datetime(2026, 6, 1, 14, 0)
    assert stream_hash(kept, tmp_path, "0:v") == stream_hash(sent, tmp_path, "0:v")
    assert stream_hash(kept, tmp_path, "0:a") == stream_hash(sent, tmp_path, "0:a")
    assert kept.find(b"moov") < kept.find(b"mdat")


def test_clean_removes_apple_location_keys(tmp_path: Path) -> None:
    sent = iphone_video(tmp_path)
    assert video.probe(sent).container == "mov"
    kept = video.clean(sent)
    for leak in (b"ISO6709", b"+59.9139", b"iPhone", b"com.apple.quicktime"):
        assert leak not in kept
    assert video.probe(kept).container == "mp4"
    assert stream_hash(kept, tmp_path, "0:v") == stream_hash(sent, tmp_path, "0:v")


def test_poster_is_a_frame_turned_as_it_is_shown(tmp_path: Path) -> None:
    image = Image.open(io.BytesIO(video.poster(rotated_phone_video(tmp_path), max_edge=320)))
    assert image.format == "JPEG"
    assert image.size == (240, 320)  # 640×480 turned upright, then fitted into 320


@pytest.mark.parametrize(
    "data",
    [b"not a video at all\n" * 100, media.png(), b"\x00\x00\x00\x18ftypmp42" + bytes(4000)],
    ids=["text", "png", "truncated-mp4"],
)
def test_what_is_not_a_readable_video_is_refused(data: bytes) -> None:
    with pytest.raises(video.InvalidVideo):
        video.probe(data)


def test_a_video_too_long_or_too_slow_is_refused(tmp_path: Path) -> None:
    clip = media.mp4(tmp_path / "clip", seconds=3)
    with pytest.raises(video.InvalidVideo, match="lasts"):
        video.probe(clip, max_seconds=2)
    with pytest.raises(video.InvalidVideo, match="longer than"):
        video.poster(clip, timeout=0.001)


def test_sound_without_pictures_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "voice.m4a"
    subprocess.run(
        [require_tool("ffmpeg"), "-v", "error", "-y", "-f", "lavfi", "-i",
         "sine=frequency=440:duration=1", "-c:a", "aac", str(target)],
        check=True, timeout=60,
    )  # fmt: skip
    with pytest.raises(video.InvalidVideo, match="no video stream"):
        video.probe(target.read_bytes())


def test_a_missing_ffmpeg_names_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clip = media.mp4(tmp_path / "clip", seconds=1)
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH with neither ffprobe nor prlimit
    with pytest.raises(ArchiveUnavailable, match="Debian package ffmpeg"):
        video.probe(clip)
