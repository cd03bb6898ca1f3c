"""The three counties that own the archive's data: each is a data controller of its own."""

from enum import StrEnum


class County(StrEnum):
    VESTFOLD = "vestfold"
    BUSKERUD = "buskerud"
    TELEMARK = "telemark"


def parse_county(value: str) -> County:
    try:
        return County(value.strip().lower())
    except ValueError:
        known = ", ".join(c.value for c in County)
        raise ValueError(f"unknown county {value!r}; use one of {known}") from None


COUNTY_NAMES: dict[County, str] = {
    County.VESTFOLD: "Vestfold fylkeskommune, Den offentlige tannhelsetjenesten",
    County.BUSKERUD: "Buskerud fylkeskommune, Den offentlige tannhelsetjenesten",
    County.TELEMARK: "Telemark fylkeskommune, Den offentlige tannhelsetjenesten",
}
"""The organisation a patient is told has looked at their images."""


def organisation_name(county: str) -> str:
    try:
        return COUNTY_NAMES[County(county)]
    except ValueError:
        return county
