"""Realistic dental DICOM test objects: intra-oral bitewings and periapicals with their teeth,
the 18-image full-mouth series, a panoramic, a calibrated ruler, an uncalibrated image and a
CBCT-like multi-frame stack. Built on tests.dicom_factory (identity, file meta, encoding).

The pixels look like teeth (bright crowns over darker roots and bone, a little noise) so that a
screenshot of a viewer is clearly not blank and a window change is visible.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from arkiv.photo_dicom import code_item, tooth_item
from tests.dicom_factory import DX_PRESENTATION, INTRAORAL, Spec, make_dataset

MULTIFRAME_GREY = "1.2.840.10008.5.1.4.1.1.7.3"
"""Multi-frame Grayscale Word Secondary Capture Image Storage (a plain multi-frame stack)."""

_MOUTH = ("123851003", "SCT", "Mouth")


def _teeth_pixels(
    rows: int, columns: int, teeth: int, seed: int, bits_stored: int, upper_crowns: bool = True
) -> np.ndarray:
    """Grey teeth: `teeth` bright crowns across the image with darker roots and a bone
    background, enamel edges and noise, scaled to `bits_stored` bits."""
    rng = np.random.default_rng(seed)
    top = (1 << bits_stored) - 1
    y, x = np.mgrid[0:rows, 0:columns].astype(np.float32)
    image = 0.25 + 0.08 * np.sin(y / rows * 7.0 + x / columns * 3.0)  # bone, soft tissue
    width = columns / max(teeth, 1)
    crown_rows = rows * 0.42
    for n in range(max(teeth, 1)):
        centre = (n + 0.5) * width
        dx = np.abs(x - centre) / (width * 0.42)
        crown_y = y if upper_crowns else rows - 1 - y
        crown = (dx < 1.0) & (crown_y < crown_rows)
        root = (np.abs(x - centre) / (width * 0.22) < 1.0 - crown_y / rows * 0.5) & (
            crown_y >= crown_rows
        )
        image = np.where(root, 0.5 + 0.1 * (1 - crown_y / rows), image)
        image = np.where(crown, 0.8 + 0.12 * (1 - dx), image)
        pulp = (np.abs(x - centre) < width * 0.05) & (crown_y > crown_rows * 0.6)
        image = np.where(pulp & (root | crown), 0.35, image)
    image = image + rng.normal(0, 0.02, image.shape)
    return np.asarray(np.clip(image, 0.0, 1.0) * top, dtype=np.uint16)


def _base(spec: Spec, sop_class: str, modality: str, rows: int, columns: int) -> Dataset:
    ds = make_dataset(replace(spec, sop_class=sop_class, modality=modality, rows=8, columns=8))
    ds.Rows = rows
    ds.Columns = columns
    ds.ContentDate = spec.study_date
    ds.ContentTime = "101500"
    ds.Manufacturer = "arkiv tests"
    ds.PatientOrientation = ["A", "R"]
    ds.AcquisitionContextSequence = []
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.PresentationLUTShape = "IDENTITY"
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "US"
    return ds


def _dx_modules(ds: Dataset, bits_stored: int, kind: str) -> None:
    """DX Image and DX Detector attributes shared by intra-oral and panoramic images."""
    ds.ImageType = ["ORIGINAL", "PRIMARY", kind.upper()] if kind else ["ORIGINAL", "PRIMARY"]
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    top = (1 << bits_stored) - 1
    ds.WindowCenter = f"{(top + 1) // 2}"
    ds.WindowWidth = f"{top + 1}"
    ds.PixelIntensityRelationship = "LIN"
    ds.PixelIntensityRelationshipSign = 1
    ds.DetectorType = "SCINTILLATOR"
    ds.KVP = "60"
    ds.PositionerType = ""
    ds.AnatomicRegionSequence = [code_item(*_MOUTH)]


def _spacing(ds: Dataset, spacing_tag: str | None, spacing_mm: float) -> None:
    if spacing_tag is None:
        return
    value = [f"{spacing_mm:g}", f"{spacing_mm:g}"]
    if spacing_tag == "ImagerPixelSpacing":
        ds.ImagerPixelSpacing = value
    elif spacing_tag == "PixelSpacing":
        ds.PixelSpacing = value
        ds.ImagerPixelSpacing = value  # DX: Imager Pixel Spacing is Type 1
    else:
        raise ValueError(f"unknown spacing attribute {spacing_tag!r}")


def _laterality(teeth: tuple[int, ...]) -> str:
    """R or L when every tooth is on that side of the patient, B otherwise."""
    sides = {"R" if t // 10 in (1, 4, 5, 8) else "L" for t in teeth}
    return sides.pop() if len(sides) == 1 else "B"


def intraoral(
    spec: Spec | None = None,
    kind: str = "bitewing",
    teeth: tuple[int, ...] = (16, 17, 46, 47),
    spacing_mm: float = 0.1,
    spacing_tag: str | None = "ImagerPixelSpacing",
    rows: int = 1000,
    columns: int = 1300,
    bits_stored: int = 12,
) -> Dataset:
    """A Digital Intra-Oral X-Ray Image For Presentation (modality IO) of `teeth`."""
    if kind not in ("bitewing", "periapical"):
        raise ValueError(f"kind is bitewing or periapical, not {kind!r}")
    spec = spec or Spec()
    ds = _base(spec, INTRAORAL, "IO", rows, columns)
    _dx_modules(ds, bits_stored, "")
    ds.StudyDescription = ds.StudyDescription or "Intraoral"
    ds.SeriesDescription = "Bitewing" if kind == "bitewing" else "Periapikal"
    ds.ImageComments = ds.SeriesDescription
    upper = any(t // 10 in (1, 2) for t in teeth) and not all(t // 10 in (3, 4) for t in teeth)
    ds.ImageLaterality = _laterality(teeth)
    ds.PositionerType = "NONE"
    ds.PrimaryAnatomicStructureSequence = [tooth_item(n) for n in sorted(set(teeth))]
    _spacing(ds, spacing_tag, spacing_mm)
    count = max(1, len(set(teeth)) // (2 if kind == "bitewing" else 1))
    ds.PixelData = _teeth_pixels(rows, columns, count, spec.seed, bits_stored, upper).tobytes()
    return ds


BITEWINGS: tuple[tuple[int, ...], ...] = (
    (16, 17, 46, 47),
    (14, 15, 44, 45),
    (24, 25, 34, 35),
    (26, 27, 36, 37),
)
PERIAPICALS: tuple[tuple[int, ...], ...] = (
    (16, 17, 18),
    (14, 15),
    (13,),
    (11, 12, 21, 22),
    (23,),
    (24, 25),
    (26, 27, 28),
    (46, 47, 48),
    (44, 45),
    (43,),
    (31, 32, 41, 42),
    (33,),
    (34, 35),
    (36, 37, 38),
)


def full_mouth_series(
    spec: Spec | None = None,
    study_date: str = "20250314",
    rows: int = 1000,
    columns: int = 1300,
) -> list[Dataset]:
    """The 18 images of a full-mouth series (4 bitewings, 14 periapicals) of one study, one
    series, instance numbers 1–18 in that order. Periapicals are portrait (columns < rows)."""
    spec = spec or Spec()
    study_uid = generate_uid()
    series_uid = generate_uid()
    images: list[Dataset] = []
    number = 0
    for kind, groups in (("bitewing", BITEWINGS), ("periapical", PERIAPICALS)):
        for teeth in groups:
            number += 1
            one = replace(
                spec,
                study_uid=study_uid,
                series_uid=series_uid,
                sop_uid=generate_uid(),
                study_date=study_date,
                seed=spec.seed * 100 + number,
            )
            size = (rows, columns) if kind == "bitewing" else (columns, rows)
            ds = intraoral(one, kind=kind, teeth=teeth, rows=size[0], columns=size[1])
            ds.StudyDescription = "Full munn-status"
            ds.SeriesDescription = "Full munn-status"
            ds.InstanceNumber = number
            images.append(ds)
    return images


def panoramic(
    spec: Spec | None = None, rows: int = 1500, columns: int = 2900, spacing_mm: float = 0.1
) -> Dataset:
    """A Digital X-Ray Image For Presentation (modality PX) of the whole dentition."""
    spec = spec or Spec()
    ds = _base(spec, DX_PRESENTATION, "PX", rows, columns)
    _dx_modules(ds, 12, "")
    ds.StudyDescription = "Panoramarøntgen"
    ds.SeriesDescription = "Panoramarøntgen"
    ds.ImagerPixelSpacing = [f"{spacing_mm:g}", f"{spacing_mm:g}"]
    ds.ImageLaterality = "B"
    ds.ViewPosition = ""
    upper = _teeth_pixels(rows // 2, columns, 16, spec.seed, 12, True)
    lower = _teeth_pixels(rows - rows // 2, columns, 16, spec.seed + 1, 12, False)
    ds.PixelData = np.concatenate([upper, lower], axis=0).tobytes()
    return ds


RULER_MARKS = ((100, 200), (600, 200), (100, 700))
"""The ruler's marks as (column, row) image pixel positions: a 500-pixel horizontal and a
500-pixel vertical distance from the first mark (50.00 mm at the default 0.1 mm spacing)."""


def calibrated_ruler(
    spec: Spec | None = None,
    spacing_mm: float = 0.1,
    spacing_tag: str = "ImagerPixelSpacing",
    rows: int = 800,
    columns: int = 800,
) -> Dataset:
    """An intra-oral image with bright 5×5 crosses at RULER_MARKS and a known spacing."""
    ds = intraoral(
        spec, kind="periapical", teeth=(11,), spacing_mm=spacing_mm, spacing_tag=spacing_tag,
        rows=rows, columns=columns,
    )  # fmt: skip
    ds.StudyDescription = "Kalibrering"
    ds.SeriesDescription = "Kalibreringslinjal"
    pixels = np.frombuffer(ds.PixelData, dtype=np.uint16).reshape(rows, columns).copy()
    pixels[:] = pixels // 3
    for column, row in RULER_MARKS:
        pixels[row - 8 : row + 9, column - 1 : column + 2] = 4095
        pixels[row - 1 : row + 2, column - 8 : column + 9] = 4095
    ds.PixelData = pixels.tobytes()
    return ds


def uncalibrated(spec: Spec | None = None, rows: int = 600, columns: int = 800) -> Dataset:
    """An image without any pixel spacing attribute (a Secondary Capture of a scanned film)."""
    spec = spec or Spec()
    ds = _base(spec, "1.2.840.10008.5.1.4.1.1.7", "OT", rows, columns)
    for keyword in ("PresentationLUTShape", "PixelIntensityRelationship"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.Laterality = ""
    ds.ConversionType = "DF"
    ds.StudyDescription = "Skannet film"
    ds.SeriesDescription = "Skannet film"
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.WindowCenter = "2048"
    ds.WindowWidth = "4096"
    ds.PixelData = _teeth_pixels(rows, columns, 3, spec.seed, 12).tobytes()
    return ds


def cbct_stack(
    spec: Spec | None = None, frames: int = 40, rows: int = 256, columns: int = 256
) -> Dataset:
    """A multi-frame grey stack (Multi-frame Grayscale Word SC): axial-like slices of a jaw
    arch whose radius changes from slice to slice, so scrolling shows different pixels."""
    spec = spec or Spec()
    ds = _base(spec, MULTIFRAME_GREY, "OT", rows, columns)
    ds.Laterality = ""
    ds.ConversionType = "WSD"
    ds.SeriesDescription = "CBCT"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.NumberOfFrames = frames
    ds.FrameIncrementPointer = 0x00181063  # Frame Time
    ds.FrameTime = "40"
    ds.WindowCenter = "2048"
    ds.WindowWidth = "4096"
    rng = np.random.default_rng(spec.seed)
    y, x = np.mgrid[0:rows, 0:columns].astype(np.float32)
    r = np.hypot(x - columns / 2, (y - rows * 0.7) * 1.3)
    stack = np.empty((frames, rows, columns), dtype=np.uint16)
    for n in range(frames):
        radius = columns * (0.25 + 0.1 * n / max(frames - 1, 1))
        arch = np.exp(-(((r - radius) / (columns * 0.03)) ** 2))
        slice_ = 600 + 3000 * arch + rng.normal(0, 40, (rows, columns))
        stack[n] = np.clip(slice_, 0, 4095).astype(np.uint16)
    ds.PixelData = stack.tobytes()
    return ds
