"""Patient reconciliation: what could not be matched automatically, listed for an administrator,
and the administrator's merges, splits and accepts, each audited and each undoable.

Nothing here decides who a person is. Ingest matches only on a valid national ID
(`arkiv.patient_identity`); everything else — the same national ID under different names or
birth dates, IDs that are not national IDs, studies without any ID — is listed until an
administrator resolves it. A resolution changes which patient record a study belongs to in the
index (so queries, the viewer and C-FIND see it under its new patient); the stored objects keep
the attributes they arrived with.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from arkiv.accounts import Principal, Role
from arkiv.audit import Actor, AuditLog, Event, EventType
from arkiv.clock import now_iso
from arkiv.errors import AuditUnavailable, Forbidden, InvalidQuery, NotFound
from arkiv.identity import check_national_id
from arkiv.patient_identity import NO_ID_ISSUER_PREFIX
from storage.errors import StorageError
from storage.index import Index, IndexTransaction, name_key
from storage.patient_records import (
    Alias,
    ChangeRow,
    NameVariant,
    NewChange,
    PatientRow,
    StudyRow,
)


class ChangeRefused(InvalidQuery):
    """A merge, split, accept or undo that would be wrong as asked; nothing was changed."""


class ConflictKind(StrEnum):
    IDENTITY = "identity"
    """One national ID, different names or birth dates (or a birth date against the ID)."""
    INVALID_ID = "invalid-id"
    """Studies under an ID that is not a valid national ID, none found among other IDs."""
    NO_ID = "no-id"
    """A study that arrived without any patient ID."""
    SAME_ID = "same-id"
    """One valid national ID filed as several records (under different issuers)."""


def require_reconciliation(principal: Principal) -> None:
    """Merging, splitting and accepting records is the administrators' work."""
    if principal.role is not Role.ADMIN:
        raise Forbidden(f"the {principal.role.value} role may not change patient records")


def require_reconciliation_view(principal: Principal) -> None:
    """Administrators resolve conflicts; the joint auditor may look at them and the changes."""
    if principal.role not in (Role.ADMIN, Role.JOINT_AUDITOR):
        raise Forbidden(f"the {principal.role.value} role may not see patient record conflicts")


# -- names -----------------------------------------------------------------------------------------

_FOLD = str.maketrans({"ø": "o", "æ": "ae", "đ": "d", "ł": "l", "ß": "ss"})
_WORD_SEPARATORS = re.compile(r"[\s^,.\-]+")


def name_words(name: str) -> frozenset[str]:
    """The words of a person name without case, accents or order (the first PN group only)."""
    alphabetic = name.split("=", 1)[0].casefold().translate(_FOLD)
    plain = "".join(
        c for c in unicodedata.normalize("NFKD", alphabetic) if not unicodedata.combining(c)
    )
    return frozenset(w for w in _WORD_SEPARATORS.split(plain) if w)


def same_name(a: str, b: str) -> bool:
    """Whether two names can be the same spelling of one person: equal up to case, accents and
    word order, or one the other with middle names missing (at least two words kept). A name
    that is missing altogether contradicts nothing. A differing spelling is never guessed at:
    `Nordman` and `Nordmann` differ."""
    words_a, words_b = name_words(a), name_words(b)
    if not words_a or not words_b:
        return True
    small, large = sorted((words_a, words_b), key=len)
    return small == large or (len(small) >= 2 and small <= large)


def readable_name(name: str) -> str:
    """`Nordmann^Kari` as `Nordmann, Kari` for lists."""
    family, _, given = name.split("=", 1)[0].partition("^")
    given = given.replace("^", " ").strip()
    return f"{family}, {given}" if given else family


# -- conflicts -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Conflict:
    kind: ConflictKind
    patient: PatientRow
    problems: tuple[str, ...]
    studies: tuple[StudyRow, ...] = ()
    variants: tuple[NameVariant, ...] = ()
    aliases: tuple[Alias, ...] = ()

    @property
    def ref(self) -> str:
        return f"#{self.patient.pk}"

    @property
    def shown_id(self) -> str:
        if self.kind is ConflictKind.NO_ID:
            return "(no patient ID)"
        issuer = f" ({self.patient.issuer})" if self.patient.issuer else ""
        return self.patient.patient_id + issuer

    @property
    def counties(self) -> tuple[str, ...]:
        return tuple(sorted({s.county for s in self.studies} or {self.patient.county}))

    @property
    def summary(self) -> str:
        name = readable_name(self.patient.name) or "(no name)"
        studies = f"{len(self.studies)} stud{'y' if len(self.studies) == 1 else 'ies'}"
        where = ", ".join(self.counties)
        return (
            f"{self.kind.value} {self.ref} {self.shown_id} {name}, {studies} in {where}: "
            + "; ".join(self.problems)
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "record": self.patient.pk,
            "patient_id": self.patient.patient_id,
            "issuer": ""
            if self.patient.issuer.startswith(NO_ID_ISSUER_PREFIX)
            else self.patient.issuer,
            "name": self.patient.name,
            "birth_date": self.patient.birth_date,
            "counties": list(self.counties),
            "problems": list(self.problems),
            "studies": [
                {
                    "study_uid": s.study_uid,
                    "study_date": s.study_date,
                    "description": s.description,
                    "county": s.county,
                    "modalities": list(s.modalities),
                }
                for s in self.studies
            ],
            "names_seen": [
                {
                    "name": v.name,
                    "birth_date": v.birth_date,
                    "county": v.county,
                    "source": v.source,
                    "first_seen": v.first_seen,
                    "birth_date_problem": v.birth_date_problem,
                }
                for v in self.variants
            ],
            "aliases": [
                {"local_id": a.local_id, "issuer": a.issuer, "county": a.county, "source": a.source}
                for a in self.aliases
            ],
            "summary": self.summary,
        }


def _identity_problems(patient: PatientRow, unchecked: Sequence[NameVariant]) -> list[str]:
    problems: list[str] = []
    for v in unchecked:
        seen = f"({v.county}, {v.source})"
        if not same_name(v.name, patient.name):
            problems.append(f"name {v.name!r} {seen} differs from {patient.name!r}")
        if v.birth_date and patient.birth_date and v.birth_date != patient.birth_date:
            problems.append(
                f"birth date {v.birth_date} {seen} differs from {patient.birth_date or '(none)'}"
            )
        if v.birth_date_problem:
            problems.append(f"{v.birth_date_problem} {seen}")
    return list(dict.fromkeys(problems))


_CHUNK = 500
"""Records looked at per round when the caller names them (an import may touch many)."""


def find_conflicts(
    index: Index, county: str | None = None, pks: Sequence[int] | None = None
) -> list[Conflict]:
    """Every unresolved conflict (optionally of one county's records, or of these records)."""
    if pks is not None and len(pks) > _CHUNK:
        wanted = sorted(set(pks))
        return [
            conflict
            for start in range(0, len(wanted), _CHUNK)
            for conflict in find_conflicts(index, county, wanted[start : start + _CHUNK])
        ]
    records = index.patient_records
    identity_pks = records.with_name_variants(county, pks)
    invalid_pks = records.with_invalid_id(county, pks)
    sharing = records.sharing_national_id(county, pks)
    all_pks = sorted(set(identity_pks) | set(invalid_pks) | set(sharing))
    patients = {p.pk: p for p in records.patients(all_pks)}
    variants = records.name_variants(identity_pks)
    studies = records.studies(all_pks)
    aliases = records.aliases(all_pks)
    accepts = records.active_accepts(all_pks)
    found: list[Conflict] = []
    for pk in all_pks:
        patient = patients[pk]
        accept = accepts.get(pk)
        checked_through = int(accept.details.get("checked_through", 0)) if accept else 0

        def conflict(kind: ConflictKind, problems: Sequence[str], pk: int = pk) -> Conflict:
            return Conflict(
                kind,
                patients[pk],
                tuple(problems),
                tuple(studies.get(pk, ())),
                tuple(variants.get(pk, ())),
                tuple(aliases.get(pk, ())),
            )

        if pk in identity_pks:
            unchecked = [v for v in variants.get(pk, ()) if v.id > checked_through]
            problems = _identity_problems(patient, unchecked)
            if problems:
                found.append(conflict(ConflictKind.IDENTITY, problems))
        if pk in sharing:
            others = ", ".join(f"#{other}" for other in sharing[pk])
            found.append(
                conflict(
                    ConflictKind.SAME_ID,
                    [f"the national ID is also filed as {others} (another issuer); merge them"],
                )
            )
        if pk in invalid_pks and not (accept and accept.details.get("id_checked")):
            if patient.patient_id == "":
                found.append(conflict(ConflictKind.NO_ID, ["the study arrived without any ID"]))
            else:
                problem = patient.id_problem or "not a valid national ID"
                found.append(
                    conflict(
                        ConflictKind.INVALID_ID,
                        [f"{problem}; no valid national ID among its other IDs"]
                        if "Other Patient IDs" not in problem
                        else [problem],
                    )
                )
    return found


def conflicts_touching(
    index: Index, patient_ids: Iterable[str] = (), study_uids: Iterable[str] = ()
) -> list[dict[str, Any]]:
    """The conflicts of the records these patient IDs or studies are filed under (for an
    import's report: what its objects created). Each dict has a readable `summary`."""
    records = index.patient_records
    pks: set[int] = set(records.patients_of_studies(study_uids))
    for patient_id in set(patient_ids):
        pks.update(p.pk for p in records.patients_by_id(patient_id))
    if not pks:
        return []
    return [c.as_json() for c in find_conflicts(index, None, sorted(pks))]


# -- changes ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewRecord:
    """A patient record to split studies off into, when the person has none yet."""

    patient_id: str
    issuer: str = ""
    name: str = ""
    birth_date: str = ""
    sex: str = ""


@dataclass(frozen=True)
class ChangeResult:
    change: ChangeRow
    message: str
    details: dict[str, Any] = field(default_factory=dict)


def _describe(patient: PatientRow) -> dict[str, Any]:
    return {
        "record": patient.pk,
        "patient_id": patient.patient_id,
        "issuer": patient.issuer,
        "name": patient.name,
        "birth_date": patient.birth_date,
    }


class ReconciliationService:
    """Lists conflicts and makes the administrators' changes, one transaction and one Patient
    Record audit event (PS3.15 110110, action U) each; the change row keeps what undoing needs."""

    def __init__(self, index: Index, audit: AuditLog) -> None:
        self._index = index
        self._audit = audit

    # -- reading ---------------------------------------------------------------------------------

    def conflicts(
        self, actor: Actor, county: str | None = None, limit: int | None = None
    ) -> list[Conflict]:
        """The conflicts (the first `limit` of them), recorded as a read of the patient records
        listed: they show names and IDs to someone who is not treating the patient."""
        found = find_conflicts(self._index, county)[:limit]
        self._record(
            Event(
                EventType.PATIENT_RECORD,
                "R",
                actor,
                patient_ids=tuple(sorted({c.patient.patient_id for c in found})),
                query=f"patient record conflicts{f' of {county}' if county else ''}",
                details={"subtype": "reconciliation list", "conflicts": len(found)},
                counties=tuple(sorted({x for c in found for x in c.counties})),
            )
        )
        return found

    def changes(self, limit: int = 50) -> list[ChangeRow]:
        return self._index.patient_records.changes(limit)

    def record(self, ref: str) -> PatientRow:
        """A record by `#12` (its number in the lists) or by Patient ID, which must name one."""
        ref = ref.strip()
        if ref.startswith("#"):
            try:
                pk = int(ref[1:])
            except ValueError:
                raise InvalidQuery(f"{ref!r} is not a record number like #12") from None
            found = self._index.patient_records.patients([pk])
            if not found:
                raise NotFound(f"there is no patient record {ref}")
            return found[0]
        if not ref:
            raise InvalidQuery("give a patient record: #12 (from the lists) or a Patient ID")
        matches = [
            p for p in self._index.patient_records.patients_by_id(ref) if p.patient_id == ref
        ]
        if not matches:
            raise NotFound(f"no patient record has Patient ID {ref!r}")
        if len(matches) > 1:
            numbers = ", ".join(f"#{p.pk} (issuer {p.issuer or 'none'})" for p in matches)
            raise InvalidQuery(f"Patient ID {ref!r} names several records: {numbers}; give one")
        return matches[0]

    # -- changing --------------------------------------------------------------------------------

    def merge(self, actor: Actor, source: str, into: str, reason: str = "") -> ChangeResult:
        """Move every study (and photo) of record `source` to record `into`; `source` stays,
        empty, pointing at `into`, and later objects naming it are filed under `into`."""
        a, b = self.record(source), self.record(into)
        if a.pk == b.pk:
            raise ChangeRefused(f"#{a.pk} cannot be merged into itself")
        with self._transaction() as tx:
            changes = tx.patient_changes
            changes.lock([a.pk, b.pk])
            for patient, role in ((a, "merged"), (b, "merged into")):
                merged = changes.active_merge(patient.pk)
                if merged is not None:
                    raise ChangeRefused(
                        f"#{patient.pk} was already merged into #{merged[1]} (change "
                        f"{merged[0]}) and cannot be {role}; use #{merged[1]}"
                    )
            studies = changes.studies(a.pk)
            uids = [s.study_uid for s in studies]
            moved = changes.move_studies(a.pk, b.pk, uids)
            photos = changes.move_photos(a.pk, b.pk, None)
            if not moved and not photos:
                raise ChangeRefused(f"#{a.pk} has no studies or photos to merge")
            details = {"from": _describe(a), "into": _describe(b), "photos": photos}
            if reason:
                details["reason"] = reason
            change = self._change(
                tx,
                actor,
                NewChange("merge", a.pk, b.pk, actor.name, now_iso(), tuple(moved), details),
                (a, b),
                {s.county for s in studies},
            )
        return ChangeResult(
            change, f"merged #{a.pk} into #{b.pk}: {len(moved)} studies, {len(photos)} photos"
        )

    def split(
        self,
        actor: Actor,
        source: str,
        study_uids: Sequence[str],
        into: str | None = None,
        new: NewRecord | None = None,
        reason: str = "",
    ) -> ChangeResult:
        """Move the chosen studies (and their photos) of record `source` to record `into` or to
        a record for `new` (created if its Patient ID and issuer have none yet)."""
        if (into is None) == (new is None):
            raise InvalidQuery("split into an existing record or a new one: give exactly one")
        wanted = sorted({uid.strip() for uid in study_uids if uid.strip()})
        if not wanted:
            raise InvalidQuery("choose the studies to split off")
        a = self.record(source)
        b = self.record(into) if into is not None else None
        if new is not None and not new.patient_id.strip():
            raise InvalidQuery("the new record needs a Patient ID")
        with self._transaction() as tx:
            changes = tx.patient_changes
            created = False
            if new is not None:
                check = check_national_id(new.patient_id)
                pk, created = changes.ensure_patient(
                    {
                        "patient_id": new.patient_id.strip()[:64],
                        "issuer": new.issuer.strip()[:64],
                        "name": new.name[:324],
                        "name_key": name_key(new.name[:324]),
                        "birth_date": new.birth_date[:8],
                        "sex": new.sex[:16],
                        "id_kind": check.kind.value if check.kind else None,
                        "id_valid": check.valid,
                        "id_problem": check.problem,
                        "county": a.county,
                        "created_at": now_iso(),
                    }
                )
                b = changes.lock([pk])[0]
            assert b is not None
            if a.pk == b.pk:
                raise ChangeRefused(f"#{a.pk} is both source and target of the split")
            changes.lock([a.pk, b.pk])
            merged = changes.active_merge(b.pk)
            if merged is not None:
                raise ChangeRefused(
                    f"#{b.pk} was merged into #{merged[1]}; split into #{merged[1]} instead"
                )
            on_a = {s.study_uid: s for s in changes.studies(a.pk)}
            missing = [uid for uid in wanted if uid not in on_a]
            if missing:
                raise ChangeRefused(f"#{a.pk} holds no study {', '.join(missing)}")
            moved = changes.move_studies(a.pk, b.pk, wanted)
            photos = changes.move_photos(a.pk, b.pk, wanted)
            details = {
                "from": _describe(a),
                "into": _describe(b),
                "created": created,
                "photos": photos,
            }
            if reason:
                details["reason"] = reason
            change = self._change(
                tx,
                actor,
                NewChange("split", a.pk, b.pk, actor.name, now_iso(), tuple(moved), details),
                (a, b),
                {on_a[uid].county for uid in moved},
            )
        target = f"new record #{b.pk}" if created else f"#{b.pk}"
        return ChangeResult(change, f"split {len(moved)} studies of #{a.pk} into {target}")

    def accept(
        self,
        actor: Actor,
        ref: str,
        name: str | None = None,
        birth_date: str | None = None,
        reason: str = "",
    ) -> ChangeResult:
        """Mark a record's conflicts as checked: the names and birth dates seen so far, and an
        ID that is not a national ID. `name` and `birth_date`, if given, must be ones seen for
        the record and become its own."""
        p = self.record(ref)
        with self._transaction() as tx:
            changes = tx.patient_changes
            p = changes.lock([p.pk])[0]
            variants = self._index.patient_records.name_variants([p.pk]).get(p.pk, [])
            names = {p.name, *(v.name for v in variants)}
            births = {p.birth_date, *(v.birth_date for v in variants)}
            chosen_name = p.name if name is None else name
            chosen_birth = p.birth_date if birth_date is None else birth_date
            if chosen_name not in names:
                raise ChangeRefused(
                    f"{chosen_name!r} is not a name seen for #{p.pk}; choose one of: "
                    + ", ".join(repr(n) for n in sorted(names))
                )
            if chosen_birth not in births:
                raise ChangeRefused(
                    f"{chosen_birth!r} is not a birth date seen for #{p.pk}; choose one of: "
                    + ", ".join(sorted(b for b in births if b))
                )
            changes.set_identity(p.pk, chosen_name, name_key(chosen_name), chosen_birth)
            details: dict[str, Any] = {
                "record": _describe(p),
                "name_before": p.name,
                "birth_date_before": p.birth_date,
                "name": chosen_name,
                "birth_date": chosen_birth,
                "checked_through": changes.last_name_variant(p.pk),
                "id_checked": not p.id_valid,
            }
            if reason:
                details["reason"] = reason
            studies = changes.studies(p.pk)
            change = self._change(
                tx,
                actor,
                NewChange("accept", p.pk, None, actor.name, now_iso(), (), details),
                (p,),
                {s.county for s in studies},
            )
        return ChangeResult(change, f"accepted #{p.pk} as {chosen_name!r} {chosen_birth}")

    def undo(self, actor: Actor, change_id: int, reason: str = "") -> ChangeResult:
        """Reverse one change, unless it was undone already or a later change in force touches
        the same records (that one must be undone first)."""
        with self._transaction() as tx:
            changes = tx.patient_changes
            original = changes.change(change_id)
            if original is None:
                raise NotFound(f"there is no patient record change {change_id}")
            pks = [original.patient_pk] + ([original.target_pk] if original.target_pk else [])
            records = {p.pk: p for p in changes.lock(pks)}
            original = changes.change(change_id)
            assert original is not None
            if original.kind == "undo":
                raise ChangeRefused(
                    f"change {change_id} is an undo; make the change {original.undoes} again "
                    "instead of undoing the undo"
                )
            if original.undone_by is not None:
                raise ChangeRefused(
                    f"change {change_id} was already undone by change {original.undone_by}"
                )
            later = changes.later_changes(original)
            if later:
                listed = ", ".join(f"{c.id} ({c.kind} of #{c.patient_pk})" for c in later)
                raise ChangeRefused(
                    f"change {change_id} cannot be undone while later changes to the same "
                    f"records are in force: {listed}; undo those first"
                )
            a = records[original.patient_pk]
            b = records.get(original.target_pk) if original.target_pk else None
            details: dict[str, Any] = {"undone_kind": original.kind}
            moved: list[str] = []
            if original.kind in ("merge", "split"):
                assert b is not None
                uids = list(original.study_uids)
                if original.kind == "merge":
                    uids += changes.redirected_from(a.pk, b.pk)
                moved = changes.move_studies(b.pk, a.pk, sorted(set(uids)))
                photos = changes.move_photo_ids(b.pk, a.pk, original.details.get("photos", []))
                details.update(studies_back=moved, photos_back=photos)
            else:
                name_before = str(original.details["name_before"])
                birth_before = str(original.details["birth_date_before"])
                changes.set_identity(a.pk, name_before, name_key(name_before), birth_before)
                details.update(name=name_before, birth_date=birth_before)
            if reason:
                details["reason"] = reason
            studies = changes.studies(a.pk) + (changes.studies(b.pk) if b else [])
            change = self._change(
                tx,
                actor,
                NewChange(
                    "undo",
                    a.pk,
                    b.pk if b else None,
                    actor.name,
                    now_iso(),
                    tuple(moved),
                    details,
                    undoes=change_id,
                ),
                tuple(r for r in (a, b) if r is not None),
                {s.county for s in studies},
            )
        return ChangeResult(change, f"undid change {change_id} ({original.kind} of #{a.pk})")

    # -- plumbing --------------------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[IndexTransaction]:
        """One index transaction; a storage failure means the change was not made."""
        try:
            with self._index.transaction() as tx:
                yield tx
        except StorageError as exc:
            raise AuditUnavailable(f"the patient record change could not be made: {exc}") from exc

    def _change(
        self,
        tx: IndexTransaction,
        actor: Actor,
        new: NewChange,
        records: Sequence[PatientRow],
        counties: set[str],
    ) -> ChangeRow:
        change_id = tx.patient_changes.add_change(new)
        self._audit.record_in(
            tx,
            Event(
                EventType.PATIENT_RECORD,
                "U",
                actor,
                patient_ids=tuple(dict.fromkeys(r.patient_id for r in records if r.patient_id)),
                study_uids=new.study_uids,
                object_count=len(new.study_uids),
                details={"subtype": f"patient {new.kind}", "change": change_id, **new.details},
                counties=tuple(sorted(counties | {r.county for r in records})),
            ),
        )
        change = tx.patient_changes.change(change_id)
        assert change is not None
        return change

    def _record(self, event: Event) -> None:
        self._audit.record(event)
