"""The picture inside a VL Photographic Image that arrived as DICOM, as a file the photo
pipeline takes: the JPEG itself when the object carries one, else a PNG of its pixels."""

from __future__ import annotations

from io import BytesIO

import pydicom
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.pixels.processing import convert_color_space
from pydicom.uid import JPEGBaseline8Bit, JPEGExtended12Bit

from arkiv.errors import InvalidObject
from arkiv.photo_formats import JPEG, PNG, MediaFormat


def picture_of(header: Dataset, data: bytes) -> tuple[bytes, MediaFormat]:
    """The first frame of the object; InvalidObject when it holds none that can be shown."""
    syntax = str(header.file_meta.TransferSyntaxUID)
    try:
        ds = pydicom.dcmread(BytesIO(data))
        if syntax in (JPEGBaseline8Bit, JPEGExtended12Bit):
            return next(generate_frames(ds.PixelData, number_of_frames=frames_of(ds))), JPEG
        pixels = ds.pixel_array
        if frames_of(ds) > 1:
            pixels = pixels[0]
        if str(ds.get("PhotometricInterpretation", "")).startswith("YBR"):
            pixels = convert_color_space(pixels, ds.PhotometricInterpretation, "RGB")
    except (ValueError, TypeError, AttributeError, KeyError, StopIteration, RuntimeError) as exc:
        raise InvalidObject(f"the photo's pixel data cannot be read: {exc}") from exc
    out = BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue(), PNG


def frames_of(ds: Dataset) -> int:
    return int(ds.get("NumberOfFrames", 1) or 1)
