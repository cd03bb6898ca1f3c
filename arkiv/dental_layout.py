"""Where a dental image belongs: its kind (bitewing, periapical, panoramic …) and its place in the
full-mouth mount.

Dentists read a full-mouth series (FMX) on a mount that mirrors the mouth as they face the patient:
the upper periapicals in the top row, the four bitewings in the middle, the lower periapicals at
the bottom, the patient's right on the viewer's left. Modalities do not say which slot an image
fills; the teeth it shows do (Primary Anatomic Structure Sequence, FDI numbers through CID
4018/4019), so the slot is derived from them: the jaw (quadrants 1–2 upper, 3–4 lower; both jaws
in one image is a bitewing), the side, and the tooth group (incisors, canine, premolars, molars).
Images without teeth are still shown, just not placed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from arkiv.json_values import items, text, values
from arkiv.teeth import tooth_from_code

DicomJson = dict[str, Any]

INTRAORAL_CLASSES = frozenset({"1.2.840.10008.5.1.4.1.1.1.3", "1.2.840.10008.5.1.4.1.1.1.3.1"})
CRANIOFACIAL_CT = "1.2.840.10008.5.1.4.1.1.13.1.2"
PHOTO_CLASSES = frozenset({"1.2.840.10008.5.1.4.1.1.77.1.4", "1.2.840.10008.5.1.4.1.1.77.1.4.1"})


@dataclass(frozen=True)
class Slot:
    """One place on the full-mouth mount (3 rows × 7 columns)."""

    slot: str
    row: int
    col: int
    label_key: str
    """The message key of its label (`viewer.slot.<slot>`), so the label follows the language."""


def _slot(slot: str, row: int, col: int) -> Slot:
    return Slot(slot, row, col, f"viewer.slot.{slot}")


FULL_MOUTH_MOUNT: tuple[Slot, ...] = (
    _slot("pa-upper-right-molar", 0, 0),
    _slot("pa-upper-right-premolar", 0, 1),
    _slot("pa-upper-right-canine", 0, 2),
    _slot("pa-upper-incisors", 0, 3),
    _slot("pa-upper-left-canine", 0, 4),
    _slot("pa-upper-left-premolar", 0, 5),
    _slot("pa-upper-left-molar", 0, 6),
    _slot("bw-right-molar", 1, 1),
    _slot("bw-right-premolar", 1, 2),
    _slot("bw-left-premolar", 1, 4),
    _slot("bw-left-molar", 1, 5),
    _slot("pa-lower-right-molar", 2, 0),
    _slot("pa-lower-right-premolar", 2, 1),
    _slot("pa-lower-right-canine", 2, 2),
    _slot("pa-lower-incisors", 2, 3),
    _slot("pa-lower-left-canine", 2, 4),
    _slot("pa-lower-left-premolar", 2, 5),
    _slot("pa-lower-left-molar", 2, 6),
)
"""The 18-image mount: 7 upper periapicals, 4 bitewings, 7 lower periapicals."""

SLOT_IDS = frozenset(s.slot for s in FULL_MOUTH_MOUNT)


@dataclass(frozen=True)
class Placement:
    kind: str
    """bitewing | periapical | occlusal | panoramic | cephalometric | cbct | photo | other"""
    teeth: tuple[int, ...]
    slot: str | None
    laterality: str


# -- reading the DICOM JSON ------------------------------------------------------------------------


def _tooth_items(dataset: DicomJson) -> Iterable[DicomJson]:
    """Primary Anatomic Structure items at the top level and, as some modalities write them,
    nested in the Anatomic Region Sequence items."""
    yield from items(dataset, "00082228")
    for region in items(dataset, "00082218"):
        yield from items(region, "00082228")


def teeth_of(dataset: DicomJson) -> tuple[int, ...]:
    """The FDI numbers of the teeth the image shows (codes of CID 4018/4019)."""
    found = {
        tooth_from_code(text(item, "00080102"), text(item, "00080100"))
        for item in _tooth_items(dataset)
    }
    return tuple(sorted(t for t in found if t is not None))


def _described(dataset: DicomJson) -> str:
    """The free texts in which a modality names the projection of this image (lower case); not
    the study description, which often names a whole series ("Status, bitewing")."""
    parts = [text(dataset, tag) for tag in ("0008103E", "00181400", "00185101")]
    parts.extend(str(v) for v in values(dataset, "00080008"))
    return " ".join(parts).lower()


# -- the rules -------------------------------------------------------------------------------------


def _quadrant(tooth: int) -> int:
    """1–4 for permanent and primary teeth alike (primary quadrants 5–8 map to 1–4)."""
    q = tooth // 10
    return q - 4 if q > 4 else q


def _group(tooth: int) -> str:
    position = tooth % 10
    primary = tooth // 10 > 4
    if position <= 2:
        return "incisors"
    if position == 3:
        return "canine"
    if position <= 5 or primary:  # primary molars stand where the premolars will come
        return "premolar"
    return "molar"


def _majority(choices: Sequence[str], order: Sequence[str]) -> str:
    """The most common value; a tie goes to the one later in `order` (further back in the mouth,
    where a periapical of a canine and a premolar is usually aimed)."""
    counts = Counter(choices)
    best = max(counts.values())
    return max((v for v in counts if counts[v] == best), key=order.index)


_GROUP_ORDER = ("incisors", "canine", "premolar", "molar")


def kind_of(dataset: DicomJson, sop_class: str, modality: str, teeth: Sequence[int]) -> str:
    described = _described(dataset)
    if sop_class in PHOTO_CLASSES or modality == "XC":
        return "photo"
    if sop_class == CRANIOFACIAL_CT or modality == "CT" or "cbct" in described:
        return "cbct"
    if modality == "PX" or "panoram" in described or "opg" in described.split():
        return "panoramic"
    if "ceph" in described or text(dataset, "00181508") == "CEPHALOSTAT":
        return "cephalometric"
    if modality != "IO" and sop_class not in INTRAORAL_CLASSES:
        return "other"
    if "occlusal" in described or "okklusal" in described:
        return "occlusal"
    if teeth:  # the teeth decide: no periapical shows both jaws, every bitewing does
        return "bitewing" if len({_quadrant(t) in (1, 2) for t in teeth}) == 2 else "periapical"
    words = described.replace("/", " ").split()
    if "bw" in words or any(w in described for w in ("bitewing", "bite-wing", "bite wing")):
        return "bitewing"
    return "periapical"


def slot_of(kind: str, teeth: Sequence[int]) -> str | None:
    """The mount slot of a bitewing or periapical showing `teeth`, or None."""
    if kind not in ("bitewing", "periapical") or not teeth:
        return None
    side = _majority(
        ["right" if _quadrant(t) in (1, 4) else "left" for t in teeth], ("left", "right")
    )
    group = _majority([_group(t) for t in teeth], _GROUP_ORDER)
    if kind == "bitewing":
        return f"bw-{side}-{'molar' if group == 'molar' else 'premolar'}"
    jaw = _majority(
        ["upper" if _quadrant(t) in (1, 2) else "lower" for t in teeth], ("lower", "upper")
    )
    if group == "incisors":
        return f"pa-{jaw}-incisors"
    return f"pa-{jaw}-{side}-{group}"


def place(dataset: DicomJson, sop_class: str, modality: str) -> Placement:
    """Kind, teeth, slot and laterality of one image, from its index metadata."""
    teeth = teeth_of(dataset)
    kind = kind_of(dataset, sop_class, modality, teeth)
    laterality = text(dataset, "00200062") or text(dataset, "00200060")
    return Placement(kind, teeth, slot_of(kind, teeth), laterality)


def suggested_layout(placements: Sequence[Placement]) -> str:
    """fmx when the study fills a good part of the mount, panoramic when it holds one, else a
    plain stack."""
    if sum(1 for p in placements if p.slot) >= 4:
        return "fmx"
    if any(p.kind in ("panoramic", "cephalometric") for p in placements):
        return "panoramic"
    return "stack"
