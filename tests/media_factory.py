"""Real photo and video files as cameras and phones write them, made with real encoders
(Pillow, pillow-heif, ffmpeg): with EXIF capture time, orientation, camera identity and GPS,
XMP with a location, and an ICC colour profile."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms
from PIL.TiffImagePlugin import IFDRational

TAKEN = "2026:11:20 10:15:00"
XMP_WITH_LOCATION = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
    b'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
    b'xmlns:exif="http://ns.adobe.com/exif/1.0/" exif:GPSLatitude="59,54.8N" '
    b'exif:GPSLongitude="10,44.5E"/></rdf:RDF></x:xmpmeta>'
)


def camera_exif(orientation: int = 1, taken: str | None = TAKEN) -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = "Canon"  # Make
    exif[0x0110] = "EOS R8"  # Model
    exif[0x013B] = "Kari Nordmann"  # Artist
    if orientation != 1:
        exif[0x0112] = orientation
    sub = exif.get_ifd(0x8769)
    if taken:
        sub[0x9003] = taken
        sub[0x9011] = "+01:00"
    sub[0xA431] = "SERIAL-0042"  # BodySerialNumber
    gps = exif.get_ifd(0x8825)
    gps[1] = "N"
    gps[2] = (IFDRational(59, 1), IFDRational(54, 1), IFDRational(48, 1))
    gps[3] = "E"
    gps[4] = (IFDRational(10, 1), IFDRational(44, 1), IFDRational(30, 1))
    return exif


def srgb_profile() -> bytes:
    return bytes(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())


def picture(width: int, height: int, seed: int = 1) -> Image.Image:
    """A photo-like RGB image: a gradient with a bright 'tooth' and noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack(
        [120 + 80 * x / width, 60 + 90 * y / height, 90 + 40 * (x + y) / (width + height)], -1
    )
    base[height // 3 : 2 * height // 3, width // 3 : width // 2] = (235, 230, 215)
    noisy = base + rng.normal(0, 6, base.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype("uint8"), "RGB")


def jpeg(
    width: int = 1200,
    height: int = 900,
    orientation: int = 1,
    seed: int = 1,
    quality: int = 90,
    gps: bool = True,
    progressive: bool = False,
) -> bytes:
    out = io.BytesIO()
    exif = camera_exif(orientation) if gps else Image.Exif()
    picture(width, height, seed).save(
        out,
        "JPEG",
        quality=quality,
        exif=exif.tobytes(),
        icc_profile=srgb_profile(),
        xmp=XMP_WITH_LOCATION if gps else b"",
        progressive=progressive,
        comment=b"taken at the patient's home",
    )
    return out.getvalue()


def heic(width: int = 640, height: int = 480, seed: int = 2) -> bytes:
    import pillow_heif

    pillow_heif.register_heif_opener()
    out = io.BytesIO()
    picture(width, height, seed).save(
        out, "HEIF", quality=80, exif=camera_exif().tobytes(), xmp=XMP_WITH_LOCATION
    )
    return out.getvalue()


def png(width: int = 400, height: int = 300, seed: int = 3) -> bytes:
    out = io.BytesIO()
    picture(width, height, seed).save(out, "PNG", exif=camera_exif().tobytes())
    return out.getvalue()


def tiff(width: int = 400, height: int = 300, seed: int = 4) -> bytes:
    out = io.BytesIO()
    picture(width, height, seed).save(out, "TIFF", exif=camera_exif().tobytes())
    return out.getvalue()


def mp4(path: Path, seconds: int = 3, location: bool = True, container: str = "mp4") -> bytes:
    """An H.264 video with AAC sound, as a phone writes it (with its location when asked)."""
    from tests.conftest import require_tool

    command = [
        require_tool("ffmpeg"),
        "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc=duration={seconds}:size=640x480:rate=25",
        "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}",
        "-c:v", "libx264", "-profile:v", "high", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-shortest",
        "-metadata", "creation_time=2026-11-20T09:15:00Z",
    ]  # fmt: skip
    if location:
        command += ["-metadata", "location=+59.9139+010.7522/"]
    target = path.with_suffix(f".{container}")
    subprocess.run([*command, str(target)], check=True, timeout=120)
    return target.read_bytes()


def decompression_bomb(width: int = 10_000, height: int = 6_000) -> bytes:
    """A PNG of 60 megapixels that compresses to a few tens of kilobytes."""
    out = io.BytesIO()
    Image.new("L", (width, height), 0).save(out, "PNG", optimize=True)
    return out.getvalue()
