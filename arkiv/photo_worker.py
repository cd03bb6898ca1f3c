"""The worker process that decodes uploaded photos: `python -m arkiv.photo_worker`.

Decoding a file from outside is where image libraries fail worst: a small file can claim a
billion pixels, a crafted one can make a decoder loop or exhaust memory. So the archive never
decodes an upload in its own process. This worker runs with an address-space limit it sets on
itself before it reads anything, refuses images above the pixel limit from their header before
decoding, and is killed by the archive (`arkiv.sandbox`) when it takes too long.

For each photo it decodes the whole image (proving the file intact), reads the EXIF it keeps,
writes the GPS-free original (`arkiv.photo_metadata`), a thumbnail and a web-size rendition with
the orientation applied, and, when the original cannot be wrapped in DICOM as it is, a baseline
JPEG of the full image for the wrapper.

Protocol on stdin/stdout, one request at a time: a frame is a 4-byte big-endian length, a JSON
header of that length naming the sizes of the binary parts, then the parts.
"""

from __future__ import annotations

import json
import resource
import struct
import sys
from io import BytesIO
from typing import Any, BinaryIO

THUMBNAIL_EDGE = 256
WEB_EDGE = 1600


class Refused(Exception):
    """The photo is refused; the message says why (it goes back to the uploader)."""


def read_frame(stream: BinaryIO) -> tuple[dict[str, Any], list[bytes]] | None:
    head = stream.read(4)
    if len(head) < 4:
        return None
    header = json.loads(stream.read(struct.unpack(">I", head)[0]))
    parts = [stream.read(size) for size in header.get("sizes", [])]
    return header, parts


def write_frame(stream: BinaryIO, header: dict[str, Any], parts: list[bytes]) -> None:
    encoded = json.dumps({**header, "sizes": [len(p) for p in parts]}).encode()
    stream.write(struct.pack(">I", len(encoded)) + encoded)
    for part in parts:
        stream.write(part)
    stream.flush()


def inspect_photo(
    data: bytes, pillow_format: str, max_pixels: int
) -> tuple[dict[str, Any], dict[str, bytes]]:
    from PIL import Image, ImageOps

    from arkiv.photo_metadata import (
        KeptExif,
        clean_heif,
        clean_jpeg,
        clean_png,
        minimal_exif,
        traces,
    )

    if pillow_format == "HEIF":
        import pillow_heif

        pillow_heif.register_heif_opener()
    Image.MAX_IMAGE_PIXELS = max_pixels  # a second guard behind the explicit check below
    try:
        image = Image.open(BytesIO(data), formats=[pillow_format])
    except Image.DecompressionBombError as exc:
        raise Refused(f"the image is too large to be taken: {exc}") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise Refused(f"the file is not a readable {pillow_format} image: {exc}") from exc
    width, height = image.size
    if width * height > max_pixels:
        raise Refused(
            f"the image has {width}×{height} = {width * height / 1e6:.0f} megapixels; "
            f"the archive takes at most {max_pixels / 1e6:.0f}"
        )
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise Refused(f"the {pillow_format} image cannot be decoded whole: {exc}") from exc
    exif = image.getexif()
    sub = exif.get_ifd(0x8769)
    orientation = int(exif.get(0x0112, 1) or 1)
    orientation = orientation if 1 <= orientation <= 8 else 1
    taken = _text(sub.get(0x9003))
    offset = _text(sub.get(0x9011))
    kept = KeptExif(orientation=orientation, taken_at=taken, offset=offset)
    had_location = bool(exif.get_ifd(0x8825)) or bool(traces(data))
    icc = image.info.get("icc_profile")
    new_exif = minimal_exif(kept)
    recompressed = False
    if pillow_format == "JPEG":
        original = clean_jpeg(data, new_exif)
    elif pillow_format == "PNG":
        original = clean_png(data, new_exif)
    elif pillow_format == "HEIF":
        original = clean_heif(data, new_exif)
    else:  # TIFF: written again, losslessly, with the first image only
        out = BytesIO()
        # Uncompressed: libtiff (which every TIFF compression goes through) cannot write the
        # EXIF directory Pillow hands it, and the capture time lives there.
        image.save(out, "TIFF", exif=new_exif, icc_profile=icc)
        original, recompressed = out.getvalue(), True
    left = traces(original)
    if left:
        raise Refused(f"location metadata ({', '.join(left)}) could not be removed; not stored")
    shown = ImageOps.exif_transpose(image) if pillow_format != "HEIF" else image
    rgb = _displayable(shown)
    parts = {
        "original": original,
        "thumbnail": _jpeg(rgb, THUMBNAIL_EDGE, 85, icc),
        "web": _jpeg(rgb, WEB_EDGE, 88, icc),
    }
    wrap_as_is = pillow_format == "JPEG" and orientation == 1 and _baseline(original)
    if not wrap_as_is:
        out = BytesIO()
        rgb.save(out, "JPEG", quality=95, subsampling=0, icc_profile=icc)
        parts["dicom_jpeg"] = out.getvalue()
    facts = {
        "width": rgb.width,
        "height": rgb.height,
        "orientation": orientation,
        "taken_at": taken,
        "taken_offset": offset,
        "had_location": had_location,
        "original_recompressed": recompressed,
    }
    return facts, parts


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return value.strip("\x00 ") or None if isinstance(value, str) else None


def _baseline(jpeg: bytes) -> bool:
    from arkiv.photo_dicom import jpeg_facts, why_not_wrappable

    try:
        return why_not_wrappable(jpeg_facts(jpeg)) is None
    except ValueError:
        return False


def _displayable(image: Any) -> Any:
    from PIL import Image

    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return image.point(lambda v: v / 256).convert("L")
    return image.convert("L" if image.mode in ("L", "1") else "RGB")


def _jpeg(image: Any, edge: int, quality: int, icc: bytes | None) -> bytes:
    copy = image.copy()
    copy.thumbnail((edge, edge))
    out = BytesIO()
    copy.save(out, "JPEG", quality=quality, icc_profile=icc)
    return out.getvalue()


def main() -> None:
    memory_mb = int(sys.argv[1]) if len(sys.argv) > 1 else 2048
    limit = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    # Load the decoders before saying ready, so that a request's deadline covers decoding only.
    import pillow_heif
    from PIL import Image, ImageOps  # noqa: F401

    from arkiv import photo_dicom, photo_metadata  # noqa: F401

    pillow_heif.register_heif_opener()
    write_frame(stdout, {"ready": True}, [])
    while True:
        request = read_frame(stdin)
        if request is None:
            return
        header, parts = request
        try:
            facts, out = inspect_photo(parts[0], header["format"], int(header["max_pixels"]))
            write_frame(
                stdout, {"ok": True, "facts": facts, "names": list(out)}, list(out.values())
            )
        except Refused as exc:
            write_frame(stdout, {"ok": False, "reason": str(exc)}, [])
        except MemoryError:
            write_frame(
                stdout,
                {
                    "ok": False,
                    "reason": "decoding the image needs more memory "
                    f"than the archive allows ({memory_mb} MB)",
                },
                [],
            )
        except Exception as exc:  # a decoder's own failure on hostile input: refuse the file
            write_frame(stdout, {"ok": False, "reason": f"the image cannot be read: {exc}"}, [])


if __name__ == "__main__":
    main()
