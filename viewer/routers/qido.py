"""QIDO-RS search (PS3.18 10.6): studies, series and instances, by any level's matching keys.

Parameters are turned into the index's query in `viewer.qido`; the search itself goes through
`arkiv.access`, which limits it to what the principal may see and audits it before answering.
The nested routes add the path's UIDs as matching keys.
"""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.responses import Response

from viewer import dicom_json
from viewer.dependencies import ArchiveDep, PrincipalDep
from viewer.dicomweb_http import base_url, json_response, query_text
from viewer.qido import parse_search

router = APIRouter(prefix="/dicom-web")


@router.get("/studies")
def search_studies(request: Request, archive: ArchiveDep, principal: PrincipalDep) -> Response:
    search = parse_search(request.query_params.multi_items())
    found = archive.access.search_studies(principal, search.query, query_text(request))
    base = base_url(request)
    return json_response([dicom_json.study_json(s, base) for s in found])


@router.get("/series")
@router.get("/studies/{study_uid}/series")
def search_series(
    request: Request, archive: ArchiveDep, principal: PrincipalDep, study_uid: str | None = None
) -> Response:
    params = list(request.query_params.multi_items())
    if study_uid:
        params.append(("StudyInstanceUID", study_uid))
    search = parse_search(params)
    found = archive.access.search_series(principal, search.query, query_text(request))
    base = base_url(request)
    return json_response([dicom_json.series_json(s, base) for s in found])


@router.get("/instances")
@router.get("/studies/{study_uid}/instances")
@router.get("/studies/{study_uid}/series/{series_uid}/instances")
def search_instances(
    request: Request,
    archive: ArchiveDep,
    principal: PrincipalDep,
    study_uid: str | None = None,
    series_uid: str | None = None,
) -> Response:
    params = list(request.query_params.multi_items())
    if study_uid:
        params.append(("StudyInstanceUID", study_uid))
    if series_uid:
        params.append(("SeriesInstanceUID", series_uid))
    search = parse_search(params)
    found = archive.access.search_instances(principal, search.query, query_text(request))
    base = base_url(request)
    items = [dicom_json.instance_json(i, base) for i in found]
    if search.include_fields or search.include_all:
        for item, instance in zip(items, found, strict=True):
            stored = json.loads(instance.metadata_json or "{}")
            dicom_json.include_stored(item, stored, search.include_fields, search.include_all)
    return json_response(items)
