"""Video files from clinic cameras and phones, handled through ffprobe and ffmpeg (Debian `ffmpeg`).

Video is never decoded in the archive's process: ffprobe reads what a file is, ffmpeg remuxes it
without its metadata and draws a poster frame, each in a child process with an address-space
limit and a deadline, so a crafted file costs at most that and a refusal.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from arkiv.errors import ArchiveUnavailable, InvalidObject


@dataclass(frozen=True)
class VideoProbe:
    """What ffprobe says about a video's container and its first video stream."""

    container: str
    """"mp4" or "mov"."""
    codec: str
    """ffprobe's codec_name of the video stream: "h264", "hevc", …"""
    profile: str
    """ffprobe's profile, e.g. "High", "Main", "Constrained Baseline"."""
    level: int
    """ffprobe's level as an integer (41 means 4.1); 0 when unknown."""
    width: int
    height: int
    rotation: int
    """Display rotation in degrees (0, 90, 180, 270) from the display matrix or rotate tag."""
    frame_rate: Fraction
    frames: int
    duration_seconds: float
    creation_time: datetime | None
    has_audio: bool


class InvalidVideo(InvalidObject):
    """The file is not a video the archive takes, or could not be handled within its limits."""


_MAX_SIDE = 8192
_OSLO = ZoneInfo("Europe/Oslo")
_LEAKY_TAGS = (
    "location", "xyz", "gps", "make", "model", "software", "serial", "author", "artist",
)  # fmt: skip


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        package = "util-linux" if name == "prlimit" else "ffmpeg"
        raise ArchiveUnavailable(
            f"{name} is not installed; install the Debian package {package} to take videos"
        )
    return path


def _run(command: list[str], timeout: float, max_memory_mb: int) -> bytes:
    """Run an ffmpeg tool with an address-space limit (util-linux prlimit, not preexec_fn, which
    is unsafe in a threaded server) and a deadline; its standard output."""
    limit = [_tool("prlimit"), f"--as={max_memory_mb * 1024 * 1024}", "--"]
    try:
        done = subprocess.run([*limit, *command], capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise InvalidVideo(f"handling the video took longer than {timeout:g} s; refused") from exc
    if done.returncode != 0:
        problem = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise InvalidVideo(
            "the video cannot be read: " + (problem[-1] if problem else f"exit {done.returncode}")
        )
    return done.stdout


def _ffprobe(path: Path, timeout: float, max_memory_mb: int) -> dict[str, Any]:
    output = _run(
        [
            _tool("ffprobe"), "-v", "error", "-print_format", "json",
            "-show_format", "-show_streams", str(path),
        ],
        timeout,
        max_memory_mb,
    )  # fmt: skip
    try:
        found = json.loads(output)
    except ValueError as exc:
        raise InvalidVideo("ffprobe gave no readable answer about the video") from exc
    return found if isinstance(found, dict) else {}


def probe(
    data: bytes,
    *,
    timeout: float = 20,
    max_memory_mb: int = 1024,
    max_seconds: float = 600,
) -> VideoProbe:
    """What the video is; InvalidVideo for anything that is not an MP4 or QuickTime video
    within the limits."""
    with tempfile.TemporaryDirectory(prefix="arkiv-video-") as directory:
        path = Path(directory) / "upload"
        path.write_bytes(data)
        info = _ffprobe(path, timeout, max_memory_mb)
    return _facts(info, max_seconds, _container(data))


def _container(data: bytes) -> str:
    """ "mov" or "mp4" by the file's own ftyp box: a metadata tag named major_brand can say
    anything. QuickTime files from before the ftyp box start with another atom."""
    if data[4:8] != b"ftyp":
        return "mov"
    return "mov" if data[8:12] == b"qt  " else "mp4"


def _facts(info: dict[str, Any], max_seconds: float, kind: str) -> VideoProbe:
    container = info.get("format", {})
    if "mp4" not in str(container.get("format_name", "")).split(","):
        raise InvalidVideo("the file is not an MP4 or QuickTime video")
    streams = info.get("streams", [])
    stream = _picture_stream(info)
    width, height = int(stream.get("width", 0) or 0), int(stream.get("height", 0) or 0)
    if not (0 < width <= _MAX_SIDE and 0 < height <= _MAX_SIDE):
        raise InvalidVideo(f"the video's size {width}×{height} is not one the archive takes")
    duration = float(container.get("duration") or stream.get("duration") or 0)
    if not 0 < duration <= max_seconds:
        raise InvalidVideo(
            f"the video lasts {duration:.0f} s; the archive takes up to {max_seconds:.0f} s"
        )
    rate = _fraction(stream.get("avg_frame_rate")) or _fraction(stream.get("r_frame_rate"))
    frames = int(stream.get("nb_frames") or 0) or round(duration * float(rate))
    tags = container.get("tags", {})
    return VideoProbe(
        container=kind,
        codec=str(stream.get("codec_name", "")),
        profile=str(stream.get("profile", "")),
        level=int(stream.get("level", 0) or 0),
        width=width,
        height=height,
        rotation=_rotation(stream),
        frame_rate=rate,
        frames=frames,
        duration_seconds=duration,
        creation_time=_local_time(tags.get("creation_time")),
        has_audio=any(s.get("codec_type") == "audio" for s in streams),
    )


def _picture_stream(info: dict[str, Any]) -> dict[str, Any]:
    """The first moving-picture stream: a cover image that some writers store as a video stream
    of one frame is not one."""
    for stream in info.get("streams", []):
        if stream.get("codec_type") == "video" and not (stream.get("disposition") or {}).get(
            "attached_pic"
        ):
            return dict(stream)
    raise InvalidVideo("the file holds no video stream")


def _fraction(value: object) -> Fraction:
    try:
        rate = Fraction(str(value))
    except (ValueError, ZeroDivisionError):
        return Fraction(0)
    return rate if rate > 0 else Fraction(0)


def _rotation(stream: dict[str, Any]) -> int:
    """Degrees clockwise the picture is turned for display (0, 90, 180, 270)."""
    for side in stream.get("side_data_list", []) or []:
        if "rotation" in side:
            return round(-float(side["rotation"])) % 360
    rotate = stream.get("tags", {}).get("rotate")
    return int(rotate) % 360 if str(rotate or "").lstrip("-").isdigit() else 0


def _local_time(value: object) -> datetime | None:
    """A container's creation time (UTC) as the clinic's local time."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(_OSLO).replace(tzinfo=None, microsecond=0)


def clean(data: bytes, *, timeout: float = 60, max_memory_mb: int = 1024) -> bytes:
    """The video remuxed without re-encoding: only its first video stream and first sound
    stream, no global or stream metadata (location, camera, software), no data tracks (some
    cameras record GPS as a track), the capture time kept, the index first (faststart) so that
    a browser plays it before it has the whole file. MP4 where the streams allow it, else
    QuickTime. InvalidVideo if metadata naming a place is still there afterwards."""
    with tempfile.TemporaryDirectory(prefix="arkiv-video-") as directory:
        source = Path(directory) / "upload"
        source.write_bytes(data)
        facts = _ffprobe(source, timeout, max_memory_mb)
        created = facts.get("format", {}).get("tags", {}).get("creation_time")
        picture = f"0:{int(_picture_stream(facts).get('index', 0))}"
        keep = ["-metadata", f"creation_time={created}"] if created else []
        last: InvalidVideo | None = None
        for container in ("mp4", "mov"):
            target = Path(directory) / f"clean.{container}"
            try:
                _run(
                    [
                        _tool("ffmpeg"), "-v", "error", "-y", "-i", str(source),
                        "-map", picture, "-map", "0:a:0?", "-c", "copy", "-dn", "-sn",
                        "-map_metadata", "-1", "-map_metadata:s:v", "-1",
                        "-map_metadata:s:a", "-1", "-fflags", "+bitexact", *keep,
                        "-movflags", "+faststart", "-f", container, str(target),
                    ],
                    timeout,
                    max_memory_mb,
                )  # fmt: skip
            except InvalidVideo as exc:
                last = exc
                continue
            left = _leaky_tags(_ffprobe(target, timeout, max_memory_mb))
            if left:
                raise InvalidVideo(f"metadata ({', '.join(left)}) could not be removed")
            return target.read_bytes()
    raise last or InvalidVideo("the video could not be remuxed")


def _leaky_tags(info: dict[str, Any]) -> list[str]:
    sections = [info.get("format", {}), *info.get("streams", [])]
    names = {str(name) for part in sections for name in (part.get("tags") or {})}
    return sorted(n for n in names if any(word in n.lower() for word in _LEAKY_TAGS))


def poster(
    data: bytes, *, max_edge: int = 1600, timeout: float = 30, max_memory_mb: int = 1024
) -> bytes:
    """A JPEG of a frame near a tenth of the way in (the first frame of a short clip), turned
    as it is shown, its long edge at most `max_edge`."""
    with tempfile.TemporaryDirectory(prefix="arkiv-video-") as directory:
        source = Path(directory) / "video"
        source.write_bytes(data)
        duration = float(
            _ffprobe(source, timeout, max_memory_mb).get("format", {}).get("duration") or 0
        )
        at = duration / 10 if duration > 2 else 0.0
        target = Path(directory) / "poster.jpg"
        scale = (
            f"scale=w='min({max_edge},iw)':h='min({max_edge},ih)':"
            "force_original_aspect_ratio=decrease"
        )
        _run(
            [
                _tool("ffmpeg"), "-v", "error", "-y", "-ss", f"{at:.3f}", "-i", str(source),
                "-frames:v", "1", "-vf", scale, "-q:v", "3", str(target),
            ],
            timeout,
            max_memory_mb,
        )  # fmt: skip
        if not target.exists() or target.stat().st_size == 0:
            raise InvalidVideo("no frame of the video could be decoded")
        return target.read_bytes()
