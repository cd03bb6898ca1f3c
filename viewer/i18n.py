"""The user interface's texts: Bokmål first, English where a Bokmål text is missing or the
browser asks for English.

Texts live in `viewer/locales/<area>.<lang>.json` (flat objects of message keys), read once.
Pages and scripts get them resolved for one language, so a missing Bokmål text shows in English
rather than as a key, and adding a language is adding files.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from fastapi import Request

LOCALES = Path(__file__).parent / "locales"
DEFAULT = "nb"
FALLBACK = "en"
_BOKMAL_TAGS = ("nb", "no", "nn")


@cache
def catalog(lang: str) -> dict[str, str]:
    """Every text of one language, from all its files."""
    texts: dict[str, str] = {}
    for path in sorted(LOCALES.glob(f"*.{lang}.json")):
        texts.update(json.loads(path.read_text(encoding="utf-8")))
    return texts


def language(request: Request) -> str:
    """nb unless the browser prefers English to any Norwegian (Accept-Language, in order)."""
    for part in request.headers.get("accept-language", "").split(","):
        tag = part.split(";")[0].strip().lower()
        primary = tag.split("-")[0]
        if primary in _BOKMAL_TAGS:
            return DEFAULT
        if primary == FALLBACK:
            return FALLBACK
    return DEFAULT


def messages(lang: str, prefix: str = "") -> dict[str, str]:
    """The texts under `prefix` in `lang`, English filling any gap."""
    chosen = {**catalog(FALLBACK), **catalog(lang)}
    return {k: v for k, v in chosen.items() if k.startswith(prefix)}


def translate(lang: str, key: str, **values: object) -> str:
    """One text, formatted with `values`; the key itself if no language has it (a visible bug,
    not a blank)."""
    text = catalog(lang).get(key) or catalog(FALLBACK).get(key) or key
    return text.format(**values) if values else text
