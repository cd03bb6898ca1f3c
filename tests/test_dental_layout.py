"""Where each dental image goes on the full-mouth mount, from the teeth it shows: the rules a
dentist reads a series by (upper periapicals on top, bitewings in the middle, lower periapicals
at the bottom, the patient's right on the viewer's left), and the kinds that have no slot."""

from __future__ import annotations

from typing import Any

import pytest
from pydicom.dataset import Dataset

from arkiv.dental_layout import (
    FULL_MOUTH_MOUNT,
    INTRAORAL_CLASSES,
    SLOT_IDS,
    place,
    slot_of,
    suggested_layout,
)
from arkiv.photo_dicom import tooth_item

IO = sorted(INTRAORAL_CLASSES)[0]
DX = "1.2.840.10008.5.1.4.1.1.1.1"


def dicom_json(
    teeth: tuple[int, ...] = (), *, nested: bool = False, **attrs: Any
) -> dict[str, Any]:
    """An instance's index metadata (DICOM JSON), teeth at the top level or, as some sensors
    write them, inside the Anatomic Region Sequence item."""
    ds = Dataset()
    for name, value in attrs.items():
        setattr(ds, name, value)
    items = [tooth_item(t) for t in teeth]
    if nested:
        region = Dataset()
        region.CodeValue = "123851003"
        region.CodingSchemeDesignator = "SCT"
        region.CodeMeaning = "Mouth region"
        region.PrimaryAnatomicStructureSequence = items
        ds.AnatomicRegionSequence = [region]
    elif items:
        ds.PrimaryAnatomicStructureSequence = items
    return ds.to_json_dict()


def test_the_mount_has_eighteen_distinct_places_in_three_rows() -> None:
    assert len(FULL_MOUTH_MOUNT) == 18 == len(SLOT_IDS)
    rows = [[s for s in FULL_MOUTH_MOUNT if s.row == r] for r in range(3)]
    assert [len(r) for r in rows] == [7, 4, 7]
    assert len({(s.row, s.col) for s in FULL_MOUTH_MOUNT}) == 18


@pytest.mark.parametrize(
    ("teeth", "slot"),
    [
        ((18, 17, 16), "pa-upper-right-molar"),
        ((15, 14), "pa-upper-right-premolar"),
        ((13,), "pa-upper-right-canine"),
        ((12, 11, 21, 22), "pa-upper-incisors"),
        ((23,), "pa-upper-left-canine"),
        ((24, 25), "pa-upper-left-premolar"),
        ((26, 27, 28), "pa-upper-left-molar"),
        ((48, 47, 46), "pa-lower-right-molar"),
        ((45, 44), "pa-lower-right-premolar"),
        ((43,), "pa-lower-right-canine"),
        ((42, 41, 31, 32), "pa-lower-incisors"),
        ((33,), "pa-lower-left-canine"),
        ((34, 35), "pa-lower-left-premolar"),
        ((36, 37, 38), "pa-lower-left-molar"),
        ((13, 14, 15), "pa-upper-right-premolar"),  # the majority decides
        ((13, 14), "pa-upper-right-premolar"),  # a tie goes further back in the mouth
        ((54, 55), "pa-upper-right-premolar"),  # primary molars stand where premolars come
    ],
)
def test_periapicals_go_to_their_jaw_side_and_tooth_group(
    teeth: tuple[int, ...], slot: str
) -> None:
    placed = place(dicom_json(teeth), IO, "IO")
    assert (placed.kind, placed.slot, placed.teeth) == ("periapical", slot, tuple(sorted(teeth)))


@pytest.mark.parametrize(
    ("teeth", "slot"),
    [
        ((16, 17, 46, 47), "bw-right-molar"),
        ((14, 15, 44, 45), "bw-right-premolar"),
        ((24, 25, 34, 35), "bw-left-premolar"),
        ((26, 27, 36, 37), "bw-left-molar"),
    ],
)
def test_an_image_of_both_jaws_is_a_bitewing_in_the_middle_row(
    teeth: tuple[int, ...], slot: str
) -> None:
    placed = place(dicom_json(teeth, SeriesDescription="Status"), IO, "IO")
    assert (placed.kind, placed.slot) == ("bitewing", slot)


def test_teeth_nested_in_the_anatomic_region_are_read_too() -> None:
    placed = place(dicom_json((36, 37, 38), nested=True), IO, "IO")
    assert placed.slot == "pa-lower-left-molar"


def test_without_teeth_the_description_names_the_kind_but_there_is_no_slot() -> None:
    bitewing = place(dicom_json(SeriesDescription="BW høyre"), IO, "IO")
    assert (bitewing.kind, bitewing.slot) == ("bitewing", None)
    unnamed = place(dicom_json(), IO, "IO")
    assert (unnamed.kind, unnamed.slot) == ("periapical", None)


def test_a_study_description_does_not_make_every_image_a_bitewing() -> None:
    placed = place(dicom_json((16, 17, 18), StudyDescription="Bitewing"), IO, "IO")
    assert placed.kind == "periapical"


@pytest.mark.parametrize(
    ("modality", "attrs", "kind"),
    [
        ("PX", {}, "panoramic"),
        ("DX", {"SeriesDescription": "Ceph lateral"}, "cephalometric"),
        ("DX", {"PositionerType": "CEPHALOSTAT"}, "cephalometric"),
        ("CT", {}, "cbct"),
        ("IO", {"SeriesDescription": "Okklusal overkjeve"}, "occlusal"),
        ("DX", {}, "other"),
    ],
)
def test_panoramic_cephalometric_cbct_and_occlusal_have_no_mount_slot(
    modality: str, attrs: dict[str, Any], kind: str
) -> None:
    placed = place(dicom_json((11, 21), **attrs), DX, modality)
    assert placed.kind == kind and placed.slot is None


def test_photos_are_photos() -> None:
    placed = place(dicom_json((11,)), "1.2.840.10008.5.1.4.1.1.77.1.4", "XC")
    assert (placed.kind, placed.slot) == ("photo", None)


def test_the_suggested_layout_follows_what_the_study_holds() -> None:
    series = [place(dicom_json(t), IO, "IO") for t in ((16, 17, 18), (14, 15), (13,), (11, 21))]
    assert suggested_layout(series) == "fmx"
    assert suggested_layout(series[:3]) == "stack"
    assert suggested_layout([place(dicom_json(), DX, "PX")]) == "panoramic"


def test_slot_of_refuses_kinds_without_a_place() -> None:
    assert slot_of("panoramic", (11, 21)) is None
    assert slot_of("periapical", ()) is None
