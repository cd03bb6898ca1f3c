"""What every DICOMweb router shares: the service's base URL, the query as audited, and
`application/dicom+json` answers."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import JSONResponse

DICOM_JSON = "application/dicom+json"


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/dicom-web"


def query_text(request: Request) -> str:
    """The request's path and query string, as the audit event records what was asked."""
    return f"{request.url.path}?{request.url.query}" if request.url.query else request.url.path


def json_response(payload: object) -> JSONResponse:
    return JSONResponse(payload, media_type=DICOM_JSON)
