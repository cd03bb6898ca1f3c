"""Tests for arkiv.rendering against pydicom's bundled images and synthetic datasets.

Grey levels are checked against an independent scalar implementation of the
PS3.3 C.11.2.1.2.1 formula using PNG output, so no codec loss hides an error;
colours against pydicom's own decoding of the lossless SC_rgb image.
"""

import contextlib
import copy
import tracemalloc
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom.data
import pytest
from PIL import Image
from pydicom import Dataset, dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate, get_frame
from pydicom.pixels.utils import pixel_array
from pydicom.uid import (
    MPEG2MPML,
    UID,
    ExplicitVRLittleEndian,
    RLELossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from arkiv import rendering
from arkiv.rendering import (
    CorruptImage,
    FrameOutOfRange,
    ImageTooLarge,
    NotAnImage,
    OutputFormat,
    RenderError,
    RenderRequest,
    UnsupportedImage,
    Window,
    frame_count,
    render,
    render_dataset,
)

# pydicom warns about padding, VR mismatches etc. in its deliberately odd test files.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:pydicom")

PNG = RenderRequest(output=OutputFormat.PNG)
Array = npt.NDArray[Any]
Route = Callable[[str, RenderRequest], bytes]


class _Unseekable:
    """A pipe-like stream: readable, not seekable."""

    def __init__(self, data: bytes) -> None:
        self._buffer = BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self._buffer.read(size)

    def seekable(self) -> bool:
        return False


def _render_path(path: str, request: RenderRequest) -> bytes:
    return render(path, request)


def _render_stream(path: str, request: RenderRequest) -> bytes:
    return render(BytesIO(Path(path).read_bytes()), request)


def _render_pipe(path: str, request: RenderRequest) -> bytes:
    return render(_Unseekable(Path(path).read_bytes()), request)  # type: ignore[arg-type]


def _render_read_dataset(path: str, request: RenderRequest) -> bytes:
    return render_dataset(dcmread(path), request)


ROUTES: dict[str, Route] = {
    "path": _render_path,
    "stream": _render_stream,
    "pipe": _render_pipe,
    "dataset": _render_read_dataset,
}


@pytest.fixture(params=sorted(ROUTES))
def route(request: pytest.FixtureRequest) -> Route:
    return ROUTES[request.param]


_BUNDLED = Path(pydicom.data.__file__).parent / "test_files"


def bundled(name: str) -> str:
    """A test file shipped inside the pydicom package (never fetched from the network)."""
    path = _BUNDLED / name
    if not path.is_file():
        pytest.fail(f"{name} is not bundled with the pinned pydicom")
    return str(path)


def image_of(data: bytes) -> Image.Image:
    image = Image.open(BytesIO(data))
    image.load()
    return image


def pixels_of(data: bytes) -> Array:
    return np.asarray(image_of(data))


def ps33_linear(x: float, center: float, width: float) -> float:
    """PS3.3 C.11.2.1.2.1 written out case by case, output range 0..255."""
    if x <= center - 0.5 - (width - 1) / 2:
        return 0.0
    if x > center - 0.5 + (width - 1) / 2:
        return 255.0
    return ((x - (center - 0.5)) / (width - 1) + 0.5) * 255.0


def expected_window(values: Array, center: float, width: float) -> Array:
    mapped: Array = np.vectorize(ps33_linear)(values.astype(np.float64), center, width)
    return np.rint(mapped).astype(np.uint8)


def expected_full_range(values: Array) -> Array:
    low, high = float(values.min()), float(values.max())
    return np.rint((values.astype(np.float64) - low) / (high - low) * 255.0).astype(np.uint8)


def synthetic(
    pixels: Array,
    *,
    bits_stored: int | None = None,
    signed: bool = False,
    photometric: str = "MONOCHROME2",
    **attributes: Any,
) -> Dataset:
    """A native Explicit VR Little Endian grayscale dataset; 3-D `pixels` are frames."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    ds.Rows, ds.Columns = pixels.shape[-2:]
    if pixels.ndim == 3:
        ds.NumberOfFrames = pixels.shape[0]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = int(signed)
    ds.add_new(0x7FE00010, "OW" if ds.BitsAllocated > 8 else "OB", pixels.tobytes())
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def gradient(rows: int = 16, columns: int = 256, maximum: int = 4095) -> Array:
    """A horizontal ramp 0..maximum, identical on every row."""
    ramp = np.linspace(0, maximum, columns).round().astype(np.uint16)
    return np.tile(ramp, (rows, 1))


def save(ds: Dataset, path: Path) -> str:
    ds.save_as(path, enforce_file_format=True)
    return str(path)


def reencapsulated(ds: Dataset, frame: bytes) -> Dataset:
    clone = copy.deepcopy(ds)
    clone.PixelData = encapsulate([frame])
    return clone


# --------------------------------------------------------------------------- bundled files

GRAYSCALE_FILES = {
    # name: (width, height) — transfer syntax / what it exercises
    "CT_small.dcm": (128, 128),  # Explicit VR LE, signed, rescale, no window
    "MR_small.dcm": (64, 64),  # Explicit VR LE with window
    "MR_small_implicit.dcm": (64, 64),  # Implicit VR LE
    "MR_small_bigendian.dcm": (64, 64),  # Explicit VR BE
    "MR_small_expb.dcm": (64, 64),  # Explicit VR BE
    "MR_small_padded.dcm": (64, 64),  # excess padding after pixel data
    "MR_small_RLE.dcm": (64, 64),  # RLE Lossless
    "MR_small_jp2klossless.dcm": (64, 64),  # JPEG 2000 Lossless
    "MR_small_jpeg_ls_lossless.dcm": (64, 64),  # JPEG-LS Lossless
    "JPEG2000.dcm": (256, 1024),  # JPEG 2000 (lossy syntax)
    "693_J2KI.dcm": (512, 512),  # JPEG 2000, signed 14-bit
    "J2K_pixelrep_mismatch.dcm": (512, 512),  # J2K signedness differs from dataset
    "JPGExtended.dcm": (256, 1024),  # JPEG Extended 12-bit
    "JPEGLSNearLossless_08.dcm": (10, 45),  # JPEG-LS near-lossless 8-bit
    "JPEGLSNearLossless_16.dcm": (10, 50),  # JPEG-LS near-lossless 16-bit
    "image_dfl.dcm": (512, 512),  # Deflated Explicit VR LE
    "liver_1frame.dcm": (512, 512),  # 1-bit (segmentation)
    "liver_expb_1frame.dcm": (512, 512),  # 1-bit, big endian
    "examples_overlay.dcm": (484, 300),  # 12 of 16 bits, multi-valued window
    "rtdose.dcm": (10, 10),  # 32-bit, 15 frames, Implicit VR
    "rtdose_expb.dcm": (10, 10),  # 32-bit multi-frame big endian
    "rtdose_rle.dcm": (10, 10),  # 32-bit multi-frame RLE
}

COLOUR_FILES = {
    "SC_rgb_rle.dcm": (100, 100),  # RLE RGB
    "SC_rgb_rle_16bit.dcm": (100, 100),
    "SC_rgb_rle_32bit.dcm": (100, 100),
    "SC_rgb_rle_2frame.dcm": (100, 100),
    "SC_rgb_rle_16bit_2frame.dcm": (100, 100),
    "SC_rgb_rle_32bit_2frame.dcm": (100, 100),
    "SC_rgb_jpeg_dcmtk.dcm": (100, 100),  # JPEG baseline YBR_FULL
    "SC_rgb_dcmtk_+eb+cr.dcm": (100, 100),  # JPEG baseline RGB (no colour transform)
    "SC_rgb_dcmtk_+eb+cy+n1.dcm": (100, 100),  # YBR_FULL, 4:2:0
    "SC_rgb_dcmtk_+eb+cy+n2.dcm": (100, 100),  # YBR_FULL, 4:4:4
    "SC_rgb_dcmtk_+eb+cy+np.dcm": (100, 100),  # YBR_FULL_422
    "SC_rgb_dcmtk_+eb+cy+s2.dcm": (100, 100),  # YBR_FULL_422
    "SC_rgb_dcmtk_+eb+cy+s4.dcm": (100, 100),  # YBR_FULL
    "SC_rgb_jpeg_lossy_gdcm.dcm": (100, 100),
    "SC_rgb_jpeg_gdcm.dcm": (100, 100),  # JPEG Lossless SV1
    "SC_rgb_gdcm_KY.dcm": (100, 100),  # JPEG 2000
    "SC_rgb_jls_lossy_line.dcm": (100, 100),  # JPEG-LS near-lossless, line interleave
    "SC_rgb_jls_lossy_sample.dcm": (100, 100),  # JPEG-LS near-lossless, sample interleave
    "SC_ybr_full_422_uncompressed.dcm": (100, 100),  # native YBR_FULL_422
    "SC_rgb_small_odd.dcm": (3, 3),
    "SC_rgb_small_odd_big_endian.dcm": (3, 3),
    "SC_rgb_small_odd_jpeg.dcm": (3, 3),
    "SC_rgb_jpeg.dcm": (256, 256),  # dataset VR differs from its transfer syntax
    "SC_rgb_jpeg_dcmd.dcm": (256, 256),  # Implicit VR LE RGB
    "SC_rgb_jpeg_app14_dcmd.dcm": (256, 256),  # Adobe APP14 marker
    "SC_jpeg_no_color_transform.dcm": (256, 256),
    "SC_jpeg_no_color_transform_2.dcm": (256, 256),
    "ExplVR_BigEnd.dcm": (80, 60),  # RGB big endian
    "examples_rgb_color.dcm": (320, 240),
    "examples_ybr_color.dcm": (320, 240),  # JPEG YBR_FULL_422, 30 frames
    "examples_jpeg2k.dcm": (640, 480),  # JPEG 2000 YBR_RCT
    "GDCMJ2K_TextGBR.dcm": (400, 400),  # JPEG 2000 YBR_RCT
    "examples_palette.dcm": (800, 350),  # PALETTE COLOR, 16-bit LUT
}


@pytest.mark.parametrize(
    ("name", "size", "mode"),
    [(n, s, "L") for n, s in GRAYSCALE_FILES.items()]
    + [(n, s, "RGB") for n, s in COLOUR_FILES.items()],
)
@pytest.mark.parametrize("output", list(OutputFormat))
def test_every_bundled_image_renders(
    route: Route, name: str, size: tuple[int, int], mode: str, output: OutputFormat
) -> None:
    image = image_of(route(bundled(name), RenderRequest(output=output)))

    assert image.format == output.name
    assert image.mode == mode
    assert image.size == size
    pixels = np.asarray(image)
    if min(size) > 3:
        assert np.ptp(pixels) > 32, "rendering is blank or flat"
    if mode == "RGB":
        assert not np.array_equal(pixels[..., 0], pixels[..., 1]), "colour came out grey"


@pytest.mark.parametrize("name", sorted(GRAYSCALE_FILES) + sorted(COLOUR_FILES))
def test_file_and_dataset_routes_agree(name: str) -> None:
    path = bundled(name)
    from_file = pixels_of(render(path, PNG))
    from_dataset = pixels_of(render_dataset(dcmread(path), PNG))
    assert np.array_equal(from_file, from_dataset)


MR_SMALL_LOSSLESS = [
    "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_expb.dcm",
    "MR_small_padded.dcm",
    "MR_small_RLE.dcm",
    "MR_small_jp2klossless.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
]


@pytest.mark.parametrize("name", MR_SMALL_LOSSLESS)
def test_lossless_transfer_syntaxes_render_identically(name: str) -> None:
    reference = pixels_of(render(bundled("MR_small.dcm"), PNG))
    assert np.array_equal(pixels_of(render(bundled(name), PNG)), reference)


def test_dataset_window_follows_ps33_formula() -> None:
    ds = dcmread(bundled("MR_small.dcm"))
    center, width = float(ds.WindowCenter), float(ds.WindowWidth)

    rendered = pixels_of(render_dataset(ds, PNG))

    assert np.array_equal(rendered, expected_window(pixel_array(ds), center, width))


def test_first_of_several_dataset_windows_is_used() -> None:
    path = bundled("examples_overlay.dcm")
    ds = dcmread(path)
    assert len(ds.WindowCenter) > 1
    first = Window(center=float(ds.WindowCenter[0]), width=float(ds.WindowWidth[0]))
    second = Window(center=float(ds.WindowCenter[1]), width=float(ds.WindowWidth[1]))

    default = pixels_of(render(path, PNG))

    assert np.array_equal(
        default, pixels_of(render(path, RenderRequest(window=first, output=PNG.output)))
    )
    assert not np.array_equal(
        default, pixels_of(render(path, RenderRequest(window=second, output=PNG.output)))
    )


def test_without_window_the_full_modality_range_is_used() -> None:
    ds = dcmread(bundled("CT_small.dcm"))
    assert "WindowCenter" not in ds
    hounsfield = pixel_array(ds) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)

    rendered = pixels_of(render_dataset(ds, PNG))

    assert rendered.min() == 0 and rendered.max() == 255
    assert np.array_equal(rendered, expected_full_range(hounsfield))


def test_explicit_window_changes_output_and_is_applied_in_modality_units() -> None:
    ds = dcmread(bundled("CT_small.dcm"))
    hounsfield = pixel_array(ds) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    bone = Window(center=300, width=1500)

    default = pixels_of(render_dataset(ds, PNG))
    windowed = pixels_of(render_dataset(ds, RenderRequest(window=bone, output=OutputFormat.PNG)))

    assert not np.array_equal(default, windowed)
    assert np.array_equal(windowed, expected_window(hounsfield, 300, 1500))


SC_RGB_LOSSLESS = [
    "SC_rgb_rle.dcm",
    "SC_rgb_rle_16bit.dcm",
    "SC_rgb_rle_32bit.dcm",
    "SC_rgb_jpeg_gdcm.dcm",
    "SC_rgb_gdcm_KY.dcm",
]
SC_RGB_LOSSY = [
    "SC_rgb_jpeg_dcmtk.dcm",
    "SC_rgb_dcmtk_+eb+cr.dcm",
    "SC_rgb_dcmtk_+eb+cy+n1.dcm",
    "SC_rgb_dcmtk_+eb+cy+n2.dcm",
    "SC_rgb_dcmtk_+eb+cy+np.dcm",
    "SC_rgb_dcmtk_+eb+cy+s2.dcm",
    "SC_rgb_dcmtk_+eb+cy+s4.dcm",
    "SC_rgb_jpeg_lossy_gdcm.dcm",
    "SC_rgb_jls_lossy_line.dcm",
    "SC_rgb_jls_lossy_sample.dcm",
    "SC_ybr_full_422_uncompressed.dcm",
]
# SC_rgb has ten horizontal bands of 10 rows; the centre row of each, left to right:
SC_RGB_BANDS = [
    (255, 0, 0),
    (255, 128, 128),
    (0, 255, 0),
    (128, 255, 128),
    (0, 0, 255),
    (128, 128, 255),
    (0, 0, 0),
    (64, 64, 64),
    (192, 192, 192),
    (255, 255, 255),
]


@pytest.fixture(scope="module")
def sc_rgb_reference() -> Array:
    reference = pixel_array(bundled("SC_rgb_rle.dcm"))
    assert [tuple(reference[5 + 10 * band, 50]) for band in range(10)] == SC_RGB_BANDS
    return reference


@pytest.mark.parametrize("name", SC_RGB_LOSSLESS)
def test_lossless_colour_is_exact(name: str, sc_rgb_reference: Array) -> None:
    assert np.array_equal(pixels_of(render(bundled(name), PNG)), sc_rgb_reference)


@pytest.mark.parametrize("name", SC_RGB_LOSSY)
def test_lossy_and_ycbcr_colour_is_right(name: str, sc_rgb_reference: Array) -> None:
    rendered = pixels_of(render(bundled(name), PNG)).astype(int)

    bands = np.array([rendered[5 + 10 * band, 50] for band in range(10)])
    assert np.abs(bands - np.array(SC_RGB_BANDS)).max() <= 16
    assert np.abs(rendered - sc_rgb_reference).mean() < 4


def test_jpeg_output_keeps_colours(sc_rgb_reference: Array) -> None:
    rendered = pixels_of(render(bundled("SC_rgb_rle.dcm"), RenderRequest(quality=95)))
    assert np.abs(rendered.astype(int) - sc_rgb_reference).mean() < 4
    red, green, blue = rendered[5, 50], rendered[25, 50], rendered[45, 50]
    assert red[0] > 230 and red[1] < 25 and red[2] < 25
    assert green[1] > 230 and green[0] < 25 and green[2] < 25
    assert blue[2] > 230 and blue[0] < 25 and blue[1] < 25


def test_palette_colour_uses_the_lookup_table() -> None:
    ds = dcmread(bundled("examples_palette.dcm"))
    indices = pixel_array(ds)
    red = np.frombuffer(ds.RedPaletteColorLookupTableData, "<u2") >> 8
    green = np.frombuffer(ds.GreenPaletteColorLookupTableData, "<u2") >> 8
    blue = np.frombuffer(ds.BluePaletteColorLookupTableData, "<u2") >> 8
    expected = np.stack([red[indices], green[indices], blue[indices]], axis=-1)

    assert np.array_equal(pixels_of(render_dataset(ds, PNG)), expected)


# --------------------------------------------------------------------------- photometric


def test_monochrome1_renders_inverted_relative_to_monochrome2() -> None:
    mono2 = dcmread(bundled("CT_small.dcm"))
    mono1 = copy.deepcopy(mono2)
    mono1.PhotometricInterpretation = "MONOCHROME1"

    as_mono2 = pixels_of(render_dataset(mono2, PNG)).astype(int)
    as_mono1 = pixels_of(render_dataset(mono1, PNG)).astype(int)

    assert np.array_equal(as_mono1, 255 - as_mono2)


def test_monochrome1_from_file(tmp_path: Path) -> None:
    ramp = gradient()
    mono1 = save(synthetic(ramp, bits_stored=12, photometric="MONOCHROME1"), tmp_path / "m1.dcm")

    rendered = pixels_of(render(mono1, PNG))

    assert rendered[0, 0] == 255 and rendered[0, -1] == 0  # low values are white


@pytest.mark.parametrize("name", ["CT_small.dcm", "SC_rgb_rle.dcm", "examples_palette.dcm"])
def test_invert_flips_the_result(name: str) -> None:
    path = bundled(name)
    plain = pixels_of(render(path, PNG)).astype(int)
    inverted = pixels_of(render(path, RenderRequest(invert=True, output=OutputFormat.PNG)))
    assert np.array_equal(inverted, 255 - plain)


def test_invert_of_monochrome1_gives_monochrome2_look() -> None:
    mono2 = dcmread(bundled("MR_small.dcm"))
    mono1 = copy.deepcopy(mono2)
    mono1.PhotometricInterpretation = "MONOCHROME1"
    inverted = RenderRequest(invert=True, output=OutputFormat.PNG)
    assert np.array_equal(
        pixels_of(render_dataset(mono1, inverted)), pixels_of(render_dataset(mono2, PNG))
    )


# --------------------------------------------------------------------------- synthetic 16-bit


def test_twelve_bit_gradient_exact_grey_levels(tmp_path: Path) -> None:
    ramp = np.arange(4096, dtype=np.uint16).reshape(16, 256)
    path = save(synthetic(ramp, bits_stored=12), tmp_path / "ramp.dcm")
    # Lower edge c - 0.5 - (w-1)/2 = 749.5, upper edge c - 0.5 + (w-1)/2 = 1249.5.
    request = RenderRequest(window=Window(center=1000, width=501), output=OutputFormat.PNG)

    rendered = pixels_of(render(path, request)).reshape(-1)

    hand_computed = {0: 0, 749: 0, 750: 0, 900: 77, 1000: 128, 1100: 179, 1249: 255, 1250: 255}
    for value, grey in hand_computed.items():
        assert rendered[value] == grey, value
    assert np.array_equal(rendered, expected_window(ramp.reshape(-1), 1000, 501))


def test_bits_above_bits_stored_are_ignored() -> None:
    ramp = gradient()
    garbage = ramp | np.uint16(0xF000)  # e.g. overlay bits in the unused high nibble
    request = RenderRequest(window=Window(center=2048, width=4096), output=OutputFormat.PNG)

    clean = pixels_of(render_dataset(synthetic(ramp, bits_stored=12), request))
    dirty = pixels_of(render_dataset(synthetic(garbage, bits_stored=12), request))

    assert np.array_equal(clean, dirty)
    assert np.array_equal(clean, expected_window(ramp, 2048, 4096))


def test_signed_twelve_bit_values_are_sign_extended() -> None:
    values = np.linspace(-2048, 2047, 256).round().astype(np.int16)
    stored = (values.astype(np.uint16) & np.uint16(0x0FFF)).reshape(1, -1)  # no sign extension
    ds = synthetic(stored, bits_stored=12, signed=True)
    request = RenderRequest(window=Window(center=0, width=4096), output=OutputFormat.PNG)

    rendered = pixels_of(render_dataset(ds, request))

    assert np.array_equal(rendered[0], expected_window(values, 0, 4096))
    assert rendered[0, 0] == 0 and rendered[0, -1] == 255


def test_rescale_is_applied_before_the_window() -> None:
    ramp = gradient()
    ds = synthetic(ramp, bits_stored=12, RescaleSlope=2, RescaleIntercept=-1000)
    request = RenderRequest(window=Window(center=2000, width=2001), output=OutputFormat.PNG)

    rendered = pixels_of(render_dataset(ds, request))

    assert np.array_equal(rendered, expected_window(ramp * 2.0 - 1000, 2000, 2001))


def test_window_of_width_one_is_a_threshold() -> None:
    ramp = np.arange(10, dtype=np.uint16).reshape(1, 10)
    request = RenderRequest(window=Window(center=5, width=1), output=OutputFormat.PNG)
    rendered = pixels_of(render_dataset(synthetic(ramp), request))
    assert rendered.tolist() == [[0, 0, 0, 0, 0, 255, 255, 255, 255, 255]]


def test_flat_image_renders_without_error() -> None:
    flat = np.full((8, 8), 1234, dtype=np.uint16)
    assert pixels_of(render_dataset(synthetic(flat), PNG)).shape == (8, 8)


def test_unusable_dataset_window_falls_back_to_full_range() -> None:
    ramp = gradient()
    ds = synthetic(ramp, bits_stored=12, WindowCenter=100, WindowWidth=0)
    assert np.array_equal(pixels_of(render_dataset(ds, PNG)), expected_full_range(ramp))


def test_voi_lut_sequence_is_used_when_there_is_no_window() -> None:
    ramp = gradient()
    lut = Dataset()
    lut.LUTDescriptor = [4096, 0, 12]
    lut.LUTData = list(range(4095, -1, -1))  # a reversing VOI LUT
    ds = synthetic(ramp, bits_stored=12)
    ds.VOILUTSequence = [lut]
    ds["VOILUTSequence"][0]["LUTData"].VR = "US"

    rendered = pixels_of(render_dataset(ds, PNG))

    expected = np.rint((4095.0 - ramp) * 255 / 4095).astype(np.uint8)
    assert np.array_equal(rendered, expected)


def test_enhanced_multiframe_functional_groups_supply_rescale_and_window() -> None:
    frames = np.stack([gradient(), gradient()[:, ::-1]])
    enhanced = synthetic(frames, bits_stored=12)
    transform = Dataset()
    transform.RescaleSlope, transform.RescaleIntercept, transform.RescaleType = 2, -1000, "US"
    shared = Dataset()
    shared.PixelValueTransformationSequence = [transform]
    enhanced.SharedFunctionalGroupsSequence = [shared]
    per_frame = []
    for center, width in [(0, 2000), (3000, 1000)]:
        voi = Dataset()
        voi.WindowCenter, voi.WindowWidth = center, width
        group = Dataset()
        group.FrameVOILUTSequence = [voi]
        per_frame.append(group)
    enhanced.PerFrameFunctionalGroupsSequence = per_frame

    first = pixels_of(render_dataset(enhanced, PNG))
    second = pixels_of(render_dataset(enhanced, RenderRequest(frame=2, output=OutputFormat.PNG)))

    assert np.array_equal(first, expected_window(frames[0] * 2.0 - 1000, 0, 2000))
    assert np.array_equal(second, expected_window(frames[1] * 2.0 - 1000, 3000, 1000))


# --------------------------------------------------------------------------- frames


def test_frame_count() -> None:
    assert frame_count(dcmread(bundled("CT_small.dcm"))) == 1
    assert frame_count(dcmread(bundled("rtdose.dcm"))) == 15
    assert frame_count(dcmread(bundled("examples_ybr_color.dcm"))) == 30
    assert frame_count(dcmread(bundled("test-SR.dcm"))) == 0
    zero = dcmread(bundled("CT_small.dcm"))
    zero.NumberOfFrames = 0
    assert frame_count(zero) == 1


@pytest.mark.parametrize("name", ["rtdose.dcm", "rtdose_expb.dcm", "rtdose_rle.dcm"])
def test_each_frame_is_the_requested_one(route: Route, name: str) -> None:
    path = bundled(name)
    volume = pixel_array(path)
    for number in (1, 2, 15):
        rendered = pixels_of(route(path, RenderRequest(frame=number, output=OutputFormat.PNG)))
        assert np.array_equal(rendered, expected_full_range(volume[number - 1])), number


def test_compressed_multiframe_frames_differ(route: Route) -> None:
    path = bundled("examples_ybr_color.dcm")
    first = pixels_of(route(path, PNG))
    second = pixels_of(route(path, RenderRequest(frame=2, output=OutputFormat.PNG)))
    last = pixels_of(route(path, RenderRequest(frame=30, output=OutputFormat.PNG)))
    assert not np.array_equal(first, second)
    assert not np.array_equal(first, last)
    assert np.array_equal(last, pixel_array(path, index=29))


def test_second_rgb_frame_is_rendered() -> None:
    rendered = pixels_of(
        render(bundled("SC_rgb_rle_2frame.dcm"), RenderRequest(frame=2, output=OutputFormat.PNG))
    )
    assert tuple(rendered[5, 50]) == (0, 255, 255)  # frame 2 is frame 1 inverted


@pytest.mark.parametrize(
    ("name", "frame"),
    [
        ("examples_ybr_color.dcm", 31),
        ("rtdose.dcm", 16),
        ("CT_small.dcm", 2),
        ("CT_small.dcm", 0),
        ("CT_small.dcm", -1),
    ],
)
def test_frame_out_of_range(route: Route, name: str, frame: int) -> None:
    with pytest.raises(FrameOutOfRange, match="numbered from 1"):
        route(bundled(name), RenderRequest(frame=frame))


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, RLELossless])
def test_only_the_requested_frame_is_read(tmp_path: Path, syntax: UID) -> None:
    frames = np.random.default_rng(0).integers(0, 4096, (64, 256, 256), dtype=np.uint16)
    ds = synthetic(frames, bits_stored=12)  # 8 MiB of pixels, incompressible by RLE
    if syntax.is_compressed:
        ds.compress(syntax, encoding_plugin="pylibjpeg")
    path = save(ds, tmp_path / "volume.dcm")
    del ds

    tracemalloc.start()
    try:
        rendered = pixels_of(render(path, RenderRequest(frame=40, output=OutputFormat.PNG)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert np.array_equal(rendered, expected_full_range(frames[39]))
    assert peak < 4 * 1024 * 1024, f"peak of {peak} bytes: the whole volume was read"


# --------------------------------------------------------------------------- resizing


@pytest.mark.parametrize(
    ("name", "max_size", "size"),
    [
        ("JPEG2000.dcm", 32, (8, 32)),
        ("examples_palette.dcm", 128, (128, 56)),
        ("examples_ybr_color.dcm", 128, (128, 96)),
        ("CT_small.dcm", 64, (64, 64)),
        ("CT_small.dcm", 4096, (128, 128)),  # never enlarged
    ],
)
def test_max_size_fits_and_keeps_aspect(name: str, max_size: int, size: tuple[int, int]) -> None:
    image = image_of(render(bundled(name), RenderRequest(max_size=max_size)))
    assert image.size == size
    assert np.ptp(np.asarray(image)) > 32


def test_quality_controls_jpeg_size() -> None:
    path = bundled("examples_rgb_color.dcm")
    small = render(path, RenderRequest(quality=20))
    large = render(path, RenderRequest(quality=95))
    assert len(small) < len(large)


def test_icc_profile_travels_with_colour_images() -> None:
    profile = Path(bundled("crayons.icc")).read_bytes()
    ds = dcmread(bundled("SC_rgb_rle.dcm"))
    ds.ICCProfile = profile
    for output in OutputFormat:
        image = image_of(render_dataset(ds, RenderRequest(output=output)))
        assert image.info.get("icc_profile") == profile


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("name", ["test-SR.dcm", "rtplan.dcm", "waveform_ecg.dcm", "reportsi.dcm"])
def test_objects_without_pixel_data_are_not_images(route: Route, name: str) -> None:
    with pytest.raises(NotAnImage, match="no Pixel Data"):
        route(bundled(name), PNG)


def test_dataset_with_pixel_data_removed_is_not_an_image() -> None:
    ds = dcmread(bundled("CT_small.dcm"))
    del ds.PixelData
    with pytest.raises(NotAnImage):
        render_dataset(ds, PNG)


def _huge_declared(ds: Dataset) -> Dataset:
    ds.Rows = ds.Columns = 60000
    return ds


def test_huge_declared_native_image_is_refused(tmp_path: Path) -> None:
    ds = _huge_declared(dcmread(bundled("CT_small.dcm")))
    ds.PixelData = b"\x00\x01" * 8
    with pytest.raises(ImageTooLarge, match="limit"):
        render_dataset(ds, PNG)
    with pytest.raises(ImageTooLarge, match="limit"):
        render(save(ds, tmp_path / "huge.dcm"), PNG)


def test_huge_declared_compressed_image_is_refused(tmp_path: Path) -> None:
    ds = _huge_declared(dcmread(bundled("MR_small_jp2klossless.dcm")))
    with pytest.raises(ImageTooLarge):
        render_dataset(ds, PNG)
    with pytest.raises(ImageTooLarge):
        render(save(ds, tmp_path / "huge.dcm"), PNG)


@pytest.mark.parametrize(
    ("attribute", "value"), [("Rows", 1000), ("Columns", 1000), ("NumberOfFrames", 100_000)]
)
def test_pixel_data_shorter_than_declared_is_refused(
    tmp_path: Path, attribute: str, value: int
) -> None:
    ds = dcmread(bundled("CT_small.dcm"))
    setattr(ds, attribute, value)
    with pytest.raises(ImageTooLarge, match="only 32768 are stored"):
        render_dataset(ds, PNG)
    with pytest.raises(ImageTooLarge, match="only 32768 are stored"):
        render(save(ds, tmp_path / "short.dcm"), PNG)


def test_truncated_file_is_refused(route: Route) -> None:
    with pytest.raises(ImageTooLarge, match="truncated"):
        route(bundled("MR_truncated.dcm"), PNG)


def test_jpeg_2000_codestream_larger_than_dataset_is_refused(tmp_path: Path) -> None:
    ds = dcmread(bundled("MR_small_jp2klossless.dcm"))
    codestream = bytearray(get_frame(ds.PixelData, 0))
    siz = codestream.index(b"\xff\x4f\xff\x51")
    codestream[siz + 8 : siz + 16] = (60000).to_bytes(4, "big") * 2  # Xsiz, Ysiz
    forged = reencapsulated(ds, bytes(codestream))

    with pytest.raises(ImageTooLarge, match="compressed frame declares"):
        render_dataset(forged, PNG)
    with pytest.raises(ImageTooLarge, match="compressed frame declares"):
        render(save(forged, tmp_path / "forged.dcm"), PNG)


def test_jpeg_codestream_larger_than_dataset_is_refused() -> None:
    ds = dcmread(bundled("SC_rgb_jpeg_gdcm.dcm"))
    codestream = bytearray(get_frame(ds.PixelData, 0))
    sof = codestream.index(b"\xff\xc3")  # lossless start of frame
    codestream[sof + 5 : sof + 9] = b"\xff\xff\xff\xff"  # 65535 × 65535
    with pytest.raises(ImageTooLarge, match="compressed frame declares"):
        render_dataset(reencapsulated(ds, bytes(codestream)), PNG)


def test_limits_are_read_at_call_time(monkeypatch: pytest.MonkeyPatch) -> None:
    path = bundled("CT_small.dcm")
    monkeypatch.setattr(rendering, "MAX_PIXELS", 128 * 128 - 1)
    with pytest.raises(ImageTooLarge, match="samples per frame"):
        render(path, PNG)
    monkeypatch.setattr(rendering, "MAX_PIXELS", 128 * 128)
    monkeypatch.setattr(rendering, "MAX_DECODED_BYTES", 128 * 128 * 2 - 1)
    with pytest.raises(ImageTooLarge, match="bytes"):
        render(path, PNG)


def test_corrupt_compressed_frame(tmp_path: Path) -> None:
    ds = reencapsulated(dcmread(bundled("SC_rgb_jpeg_gdcm.dcm")), b"\xff\xd8\xff\xe0 not a jpeg")
    with pytest.raises(CorruptImage, match="could not be decoded"):
        render_dataset(ds, PNG)
    with pytest.raises(CorruptImage, match="could not be decoded"):
        render(save(ds, tmp_path / "corrupt.dcm"), PNG)


def test_bundled_file_libjpeg_rejects_fails_as_a_render_error() -> None:
    """JPEG-lossy.dcm needs GDCM; whatever the plugins do, no raw codec error escapes."""
    with contextlib.suppress(RenderError):
        render(bundled("JPEG-lossy.dcm"), PNG)


def test_invalid_number_of_frames(route: Route) -> None:
    with pytest.raises(CorruptImage, match="Number of Frames"):
        route(bundled("badVR.dcm"), PNG)


def test_non_dicom_input() -> None:
    with pytest.raises(CorruptImage, match="not a readable DICOM"):
        render(BytesIO(b"\x89PNG\r\n\x1a\n" + b"\x00" * 200), PNG)


@pytest.mark.parametrize("photometric", ["YBR_PARTIAL_420", "HSV", "ARGB"])
def test_unknown_photometric_is_unsupported(photometric: str) -> None:
    ds = dcmread(bundled("SC_rgb_rle.dcm"))
    ds.PhotometricInterpretation = photometric
    with pytest.raises(UnsupportedImage, match=photometric):
        render_dataset(ds, PNG)


def test_samples_per_pixel_must_match_photometric() -> None:
    ds = dcmread(bundled("CT_small.dcm"))
    ds.PhotometricInterpretation = "RGB"
    with pytest.raises(UnsupportedImage, match="sample"):
        render_dataset(ds, PNG)


def test_transfer_syntax_without_decoder_is_unsupported() -> None:
    ds = dcmread(bundled("SC_rgb_jpeg_gdcm.dcm"))
    ds.file_meta.TransferSyntaxUID = MPEG2MPML
    with pytest.raises(UnsupportedImage, match="MPEG2"):
        render_dataset(ds, PNG)


def test_missing_transfer_syntax_is_unsupported() -> None:
    ds = dcmread(bundled("CT_small.dcm"))
    del ds.file_meta.TransferSyntaxUID
    with pytest.raises(UnsupportedImage, match="Transfer Syntax"):
        render_dataset(ds, PNG)


def test_float_pixel_data_is_unsupported() -> None:
    ds = dcmread(bundled("CT_small.dcm"))
    del ds.PixelData
    ds.FloatPixelData = np.zeros(128 * 128, dtype="<f4").tobytes()
    with pytest.raises(UnsupportedImage, match="Floating-point"):
        render_dataset(ds, PNG)


def test_missing_rows_is_corrupt() -> None:
    ds = dcmread(bundled("CT_small.dcm"))
    del ds.Rows
    with pytest.raises(CorruptImage, match="Rows"):
        render_dataset(ds, PNG)


def test_every_refusal_is_a_render_error() -> None:
    for error in (NotAnImage, UnsupportedImage, ImageTooLarge, FrameOutOfRange, CorruptImage):
        assert issubclass(error, RenderError)


@pytest.mark.parametrize(
    "make",
    [
        lambda: Window(center=0, width=0.5),
        lambda: Window(center=float("nan"), width=10),
        lambda: RenderRequest(quality=0),
        lambda: RenderRequest(quality=101),
        lambda: RenderRequest(max_size=0),
    ],
)
def test_invalid_request_values_are_rejected(make: Callable[[], object]) -> None:
    with pytest.raises(ValueError):
        make()


def test_pipe_input_is_spooled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rendering, "_SPOOL_IN_MEMORY", 1024)  # force the on-disk spool
    path = bundled("CT_small.dcm")
    assert _render_pipe(path, PNG) == render(path, PNG)
