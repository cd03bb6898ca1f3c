"""What every DICOMweb router shares: the service's base URL, the query as audited, and
`application/dicom+json` answers (gzip-compressed when the client takes it)."""

from __future__ import annotations

import gzip
import json

from fastapi import Request
from fastapi.responses import JSONResponse, Response

DICOM_JSON = "application/dicom+json"
_GZIP_MIN_BYTES = 1024
"""Smaller answers gain less from compression than its header and CPU cost."""


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/dicom-web"


def query_text(request: Request) -> str:
    """The request's path and query string, as the audit event records what was asked."""
    return f"{request.url.path}?{request.url.query}" if request.url.query else request.url.path


def json_response(payload: object) -> JSONResponse:
    return JSONResponse(payload, media_type=DICOM_JSON)


def accepts_gzip(request: Request) -> bool:
    for item in request.headers.get("accept-encoding", "").lower().split(","):
        coding, _, q = item.strip().partition(";")
        if coding.strip() == "gzip" and q.replace(" ", "") not in ("q=0", "q=0.0"):
            return True
    return False


def dicom_json_response(
    request: Request, payload: object, headers: dict[str, str] | None = None
) -> Response:
    """DICOM JSON, gzip-compressed when the client accepts it. Only JSON is compressed here:
    DICOM and image payloads are either compressed already or large binary streams whose
    compression would cost more CPU than it saves on a clinic's network."""
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    answer_headers = {"Vary": "Accept-Encoding", **(headers or {})}
    if len(body) >= _GZIP_MIN_BYTES and accepts_gzip(request):
        body = gzip.compress(body, compresslevel=6)
        answer_headers["Content-Encoding"] = "gzip"
    return Response(body, media_type=DICOM_JSON, headers=answer_headers)
