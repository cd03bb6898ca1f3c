"""QIDO-RS query parameters (PS3.18 8.3.4) turned into the index's StudyQuery.

Matching keys (by keyword or tag) follow the rules of `arkiv.query_keys`, shared with C-FIND, so
a web viewer and a workstation asking the same question get the same answer. UID lists may be
comma- or backslash-separated. A parameter that is no attribute, or an attribute the archive
cannot match on, is refused with 400 rather than ignored, since ignoring it would answer with
results the client did not ask for.

Control parameters:
- `limit` (1 to 1000, default 100) and `offset` (0 to 10,000,000): a limit beyond 1000 is
  refused with 400 and a reason saying the largest allowed, not silently clamped, so a client
  paging with a large limit learns at once that it must page rather than believe it has all;
- `fuzzymatching=true|false`: with true, person names (PatientName, ReferringPhysicianName)
  match word-prefix-wise, ignoring case and accents (see `storage.index.person_name_regex`);
- `includefield`: keywords or tags, repeated or comma-separated, or `all`; the answer then also
  carries those attributes (for instances, from the stored metadata; `all` adds every stored
  attribute but bulk data).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from arkiv.errors import InvalidQuery
from arkiv.query_keys import apply_key, keyword, tag_of
from storage.records import StudyQuery

MAX_LIMIT = 1000
MAX_OFFSET = 10_000_000
DEFAULT_LIMIT = 100

_CONTROL = {"limit", "offset", "includefield", "fuzzymatching"}
_UID_KEYS = {"StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"}


@dataclass(frozen=True)
class QidoSearch:
    """A QIDO-RS request: the index query, and which extra attributes the answer carries."""

    query: StudyQuery
    include_fields: tuple[str, ...] = ()
    """Extra attributes as DICOM JSON tags (`00081030`)."""
    include_all: bool = False


def _int(value: str, key: str, low: int, high: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise InvalidQuery(f"{key} must be a whole number, not {value[:20]!r}") from None
    if not low <= number <= high:
        raise InvalidQuery(f"{key} must be between {low} and {high}, not {number}")
    return number


def _flag(value: str, key: str) -> bool:
    lowered = value.strip().lower()
    if lowered not in ("true", "false"):
        raise InvalidQuery(f"{key} must be true or false, not {value[:20]!r}")
    return lowered == "true"


def parse_search(params: Iterable[tuple[str, str]]) -> QidoSearch:
    """The request's parameters as a QidoSearch; InvalidQuery (400) names the first bad one."""
    query = StudyQuery(limit=DEFAULT_LIMIT)
    include: list[str] = []
    include_all = False
    for raw_key, raw_value in params:
        control = raw_key.strip().lower()
        if control in _CONTROL:
            if control == "limit":
                query = replace(query, limit=_int(raw_value, "limit", 1, MAX_LIMIT))
            elif control == "offset":
                query = replace(query, offset=_int(raw_value, "offset", 0, MAX_OFFSET))
            elif control == "fuzzymatching":
                query = replace(query, fuzzy_names=_flag(raw_value, "fuzzymatching"))
            else:
                for field in raw_value.split(","):
                    if field.strip().lower() == "all":
                        include_all = True
                    elif field.strip():
                        include.append(f"{tag_of(keyword(field)):08X}")
            continue
        name = keyword(raw_key)
        value = raw_value.replace(",", "\\") if name in _UID_KEYS else raw_value
        query = apply_key(query, name, value)
    return QidoSearch(query, tuple(dict.fromkeys(include)), include_all)


def parse_query(params: Iterable[tuple[str, str]]) -> StudyQuery:
    """Only the matching part of a QIDO-RS request."""
    return parse_search(params).query
