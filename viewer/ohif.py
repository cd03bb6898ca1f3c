"""OHIF Viewer v3 served by the web app itself (`ohif_dir`), same-origin, with its own
Content-Security-Policy."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, Response

from arkiv.config import ConfigError

_OHIF_CSP = (
    "default-src 'self'; script-src 'self' {scripts} 'wasm-unsafe-eval'; "
    "worker-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; "
    "base-uri 'self'; object-src 'none'"
)


def mount_ohif(app: FastAPI, root: Path) -> None:
    """OHIF at /ohif/, same-origin, so its DICOMweb requests carry the session cookie and go
    through the same authorization and audit as every other read (no CORS, no second login).

    A path without a file name extension is the single-page app's own route (`/ohif/viewer?…`)
    and gets index.html; a missing file is a 404, not a page where a script was expected.

    OHIF's own CSP, as tight as the study list and the stack viewer run with (tests/test_ohif.py
    fails on any CSP violation): the page's two inline boot scripts by hash only, no eval;
    WebAssembly codecs (`'wasm-unsafe-eval'`); inline styles (React and OHIF's UI kit set them);
    data: images (its icons). Image decoding runs in workers from this origin, and a worker obeys
    the CSP of its own script's response: the JPEG 2000 codec (an Emscripten build) evaluates
    strings, so scripts are served with `'unsafe-eval'`, which binds only workers (no document
    obeys a script's CSP), and a worker has no access to the page."""
    index = root / "index.html"
    if not index.is_file():
        raise ConfigError(f"ohif_dir {root} has no index.html: point it at an OHIF build's dist")
    inline = re.findall(r"<script>(.*?)</script>", index.read_text(encoding="utf-8"), re.S)
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'"
        for s in inline
    )
    page = {"Content-Security-Policy": _OHIF_CSP.format(scripts=hashes)}
    scripts = {"Content-Security-Policy": _OHIF_CSP.format(scripts="'unsafe-eval'")}

    @app.get("/ohif/{path:path}", include_in_schema=False)
    def ohif(path: str) -> Response:
        parts = [part for part in path.split("/") if part]
        if any(part in (".", "..") for part in parts):
            return Response("not found", status_code=404, media_type="text/plain")
        target = root.joinpath(*parts)
        if target.is_file() and target != index:
            return FileResponse(target, headers=scripts if target.suffix == ".js" else page)
        if parts and "." in parts[-1] and target != index:
            return Response("not found", status_code=404, media_type="text/plain")
        return FileResponse(index, headers=page)
