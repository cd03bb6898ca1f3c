"""Jinja templates, with what every page needs: the session's CSRF token for its forms, and the
language with its texts (`t("key")`).

Pages whose texts all come from the catalogs set `page_lang` to `lang`, so `<html lang>` says
what the page speaks; the others are in Bokmål and say so (screen readers pick their voice
from it)."""

from functools import partial
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.templating import Jinja2Templates

from viewer.dependencies import csrf_token
from viewer.i18n import language, translate


def _page_context(request: Request) -> dict[str, Any]:
    archive = getattr(request.app.state, "archive", None)
    lang = language(request)
    return {
        "csrf": csrf_token(request),
        "oidc_enabled": bool(archive and archive.settings.oidc_enabled),
        "lang": lang,
        "t": partial(translate, lang),
    }


templates = Jinja2Templates(
    directory=str(Path(__file__).parent / "templates"), context_processors=[_page_context]
)
