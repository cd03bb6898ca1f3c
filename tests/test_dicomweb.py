"""DICOMweb as clients use it: QIDO-RS search, WADO-RS retrieve and metadata, rendered images and
thumbnails, through plain HTTP and through the `dicomweb-client` library, each read audited.

One archive with a small corpus is shared by the module (the tests only read it); tests that look
at the audit log each use a user of their own, so they do not see each other's events.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from dicomweb_client.session_utils import create_session_from_auth
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from arkiv.audit import Actor
from storage.records import AuditEvent, AuditQuery
from tests.conftest import BACKENDS, PASSWORD, RunningArchive, _start_archive, backend_settings
from tests.dicom_factory import Spec, encode, make_dataset, synthetic_national_id

QUERY = "110112"
ACCESSED = "110103"
TRANSFERRED = "110104"

VESTFOLD_SENSOR = Actor(name="MODALITY", kind="dicom-ae", county="vestfold", address="127.0.0.1")
TELEMARK_SENSOR = Actor(name="TMSENSOR", kind="dicom-ae", county="telemark", address="127.0.0.1")


ASE = synthetic_national_id(date(1961, 4, 12), 100)
BJORN = synthetic_national_id(date(1975, 9, 30), 200)
OLA = synthetic_national_id(date(1982, 2, 3), 300)
KARI = synthetic_national_id(date(1970, 1, 1), 400)
ELI = synthetic_national_id(date(1990, 6, 15), 150)
SIRI = synthetic_national_id(date(1961, 4, 12), 250)


# -- the corpus ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StudyPlan:
    patient_id: str
    patient_name: str
    study_date: str
    accession: str
    series: tuple[tuple[str, int], ...]  # (modality, number of images) per series
    sensor: Actor = VESTFOLD_SENSOR
    rows: int = 64
    columns: int = 48


PLANS: dict[str, StudyPlan] = {
    "åse-2023": StudyPlan(ASE, "Ødegård^Åse", "20230105", "ACC1001", (("IO", 2), ("PX", 1))),
    "åse-2024": StudyPlan(ASE, "Ødegård^Åse", "20240610", "ACC1002", (("PX", 1),)),
    "bjørn": StudyPlan(BJORN, "Kåsa^Bjørn", "20240115", "ACC2001", (("IO", 1),)),
    "ola": StudyPlan(OLA, "Kaasa^Ola", "20240301", "ACC2002", (("PX", 1),)),
    "kari": StudyPlan(
        KARI, "Nordmann^Kari", "20250314", "ACC3001", (("IO", 1),), rows=300, columns=200
    ),
    "eli": StudyPlan(ELI, "Bjørnstad^Eli", "20221231", "ACC4001", (("IO", 1),)),
    # Telemark's patient: a Vestfold clinician must never find her, whatever the keys.
    "siri-telemark": StudyPlan(
        SIRI, "Ødegård^Siri", "20240610", "ACC1001", (("IO", 1),), sensor=TELEMARK_SENSOR
    ),
}
VESTFOLD = {key for key, plan in PLANS.items() if plan.sensor is VESTFOLD_SENSOR}


@dataclass(frozen=True)
class StoredImage:
    sop_uid: str
    part10: bytes = field(repr=False)
    pixel_data: bytes = field(repr=False)


@dataclass
class Series:
    series_uid: str
    modality: str
    images: list[StoredImage] = field(default_factory=list)


@dataclass
class Study:
    key: str
    study_uid: str
    plan: StudyPlan
    series: list[Series] = field(default_factory=list)

    @property
    def images(self) -> list[StoredImage]:
        return [image for series in self.series for image in series.images]

    def first(self) -> tuple[Series, StoredImage]:
        return self.series[0], self.series[0].images[0]


def ingest_study(running: RunningArchive, key: str, plan: StudyPlan, seed: int) -> Study:
    study = Study(key, generate_uid(), plan)
    for modality, count in plan.series:
        series = Series(generate_uid(), modality)
        for _ in range(count):
            seed += 1
            ds = make_dataset(
                Spec(
                    patient_id=plan.patient_id,
                    patient_name=plan.patient_name,
                    study_uid=study.study_uid,
                    series_uid=series.series_uid,
                    study_date=plan.study_date,
                    accession=plan.accession,
                    modality=modality,
                    rows=plan.rows,
                    columns=plan.columns,
                    seed=seed,
                )
            )
            part10 = encode(ds)
            running.archive.ingest.ingest_dicom(part10, plan.sensor)
            series.images.append(StoredImage(ds.SOPInstanceUID, part10, bytes(ds.PixelData)))
        study.series.append(series)
    return study


@dataclass
class Corpus:
    running: RunningArchive
    clinician: httpx.Client
    studies: dict[str, Study] = field(repr=False)

    def keys(self, response: httpx.Response) -> set[str]:
        """The corpus names of the studies in a QIDO answer (an unknown UID stands for itself)."""
        assert response.status_code == 200, response.text
        by_uid = {s.study_uid: key for key, s in self.studies.items()}
        found = [by_uid.get(uid, uid) for uid in values(response.json(), "0020000D")]
        assert len(found) == len(set(found)), f"a study was answered twice: {found}"
        return set(found)

    def user(self, name: str) -> httpx.Client:
        return self.running.add_user(name)


def values(items: list[dict[str, Any]], tag: str) -> list[Any]:
    """The first value of `tag` in each DICOM JSON item."""
    return [item[tag]["Value"][0] for item in items]


@pytest.fixture(scope="module", params=BACKENDS)
def corpus(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Corpus]:
    start = contextlib.contextmanager(_start_archive)
    with (
        backend_settings(request, request.param) as overrides,
        start(tmp_path_factory.mktemp("dicomweb") / "data", overrides) as running,
    ):
        studies = {
            key: ingest_study(running, key, plan, seed=100 * n)
            for n, (key, plan) in enumerate(PLANS.items())
        }
        with running.add_user("tannlege") as clinician:
            yield Corpus(running, clinician, studies)


def audit_events(running: RunningArchive, user: str, event_id: str) -> list[AuditEvent]:
    return running.archive.index.find_audit_events(
        AuditQuery(actor=user, event_id=event_id, limit=1000)
    )


def instance_path(study: Study, series: Series, image: StoredImage) -> str:
    return (
        f"/dicom-web/studies/{study.study_uid}/series/{series.series_uid}/instances/{image.sop_uid}"
    )


def open_image(response: httpx.Response, media_type: str) -> Image.Image:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == media_type
    image = Image.open(io.BytesIO(response.content))
    image.load()
    assert image.format == {"image/jpeg": "JPEG", "image/png": "PNG"}[media_type]
    return image


def assert_reason(response: httpx.Response, *statuses: int) -> None:
    assert response.status_code in statuses, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    reason = response.json()["reason"]
    assert isinstance(reason, str) and reason


# -- QIDO-RS: what a search finds ------------------------------------------------------------------


def test_search_by_patient_id_finds_that_patients_studies_only(corpus: Corpus) -> None:
    found = corpus.clinician.get("/dicom-web/studies", params={"PatientID": ASE})
    assert corpus.keys(found) == {"åse-2023", "åse-2024"}


def test_search_by_patient_id_given_by_tag(corpus: Corpus) -> None:
    found = corpus.clinician.get("/dicom-web/studies", params={"00100020": BJORN})
    assert corpus.keys(found) == {"bjørn"}


def test_search_by_unknown_patient_id_finds_nothing(corpus: Corpus) -> None:
    found = corpus.clinician.get("/dicom-web/studies", params={"PatientID": "01010112345"})
    assert corpus.keys(found) == set()


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("ødeg*", {"åse-2023", "åse-2024"}),
        ("ØDEGÅRD*", {"åse-2023", "åse-2024"}),
        ("*^åse", {"åse-2023", "åse-2024"}),
        ("*BJØRN*", {"bjørn", "eli"}),
        ("K?sa*", {"bjørn"}),
        ("k??sa*", {"ola"}),
        ("kåsa^bjørn", {"bjørn"}),
        ("NORDMANN^KARI", {"kari"}),
        ("Nordmann", set()),  # no wildcard: the whole name must match
        ("k_sa*", set()),  # SQL wildcards are literal characters here
        ("%", set()),
        ("*", VESTFOLD),
    ],
)
def test_search_by_patient_name(corpus: Corpus, pattern: str, expected: set[str]) -> None:
    found = corpus.clinician.get("/dicom-web/studies", params={"PatientName": pattern})
    assert corpus.keys(found) == expected


@pytest.mark.parametrize(
    ("dates", "expected"),
    [
        ("20240115", {"bjørn"}),
        ("20240101-20240331", {"bjørn", "ola"}),
        ("20240115-20240610", {"bjørn", "ola", "åse-2024"}),  # both ends inclusive
        ("-20231231", {"åse-2023", "eli"}),
        ("20240601-", {"åse-2024", "kari"}),
        ("19990101", set()),
    ],
)
def test_search_by_study_date(corpus: Corpus, dates: str, expected: set[str]) -> None:
    found = corpus.clinician.get("/dicom-web/studies", params={"StudyDate": dates})
    assert corpus.keys(found) == expected


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"ModalitiesInStudy": "PX"}, {"åse-2023", "åse-2024", "ola"}),
        ({"ModalitiesInStudy": "IO"}, {"åse-2023", "bjørn", "kari", "eli"}),
        ({"Modality": "PX"}, {"åse-2023", "åse-2024", "ola"}),
        ({"00080061": "CT"}, set()),
    ],
)
def test_search_by_modality(corpus: Corpus, params: dict[str, str], expected: set[str]) -> None:
    assert corpus.keys(corpus.clinician.get("/dicom-web/studies", params=params)) == expected


def test_search_by_accession_number(corpus: Corpus) -> None:
    # Telemark's study has the same accession number; it is not Vestfold's to see.
    found = corpus.clinician.get("/dicom-web/studies", params={"AccessionNumber": "ACC1001"})
    assert corpus.keys(found) == {"åse-2023"}
    by_tag = corpus.clinician.get("/dicom-web/studies", params={"00080050": "ACC100*"})
    assert corpus.keys(by_tag) == {"åse-2023", "åse-2024"}


def test_search_by_study_instance_uid(corpus: Corpus) -> None:
    kari, eli = corpus.studies["kari"].study_uid, corpus.studies["eli"].study_uid
    single = corpus.clinician.get("/dicom-web/studies", params={"StudyInstanceUID": kari})
    assert corpus.keys(single) == {"kari"}
    listed = corpus.clinician.get("/dicom-web/studies", params={"0020000D": f"{kari},{eli}"})
    assert corpus.keys(listed) == {"kari", "eli"}


def test_search_keys_combine(corpus: Corpus) -> None:
    found = corpus.clinician.get(
        "/dicom-web/studies",
        params={"PatientName": "ødeg*", "StudyDate": "20240101-", "ModalitiesInStudy": "PX"},
    )
    assert corpus.keys(found) == {"åse-2024"}


def test_search_never_finds_another_countys_patient(corpus: Corpus) -> None:
    found = corpus.clinician.get("/dicom-web/studies", params={"PatientID": SIRI})
    assert corpus.keys(found) == set()
    by_name = corpus.clinician.get("/dicom-web/studies", params={"PatientName": "*siri*"})
    assert corpus.keys(by_name) == set()


def test_limit_and_offset_page_through_all_studies(corpus: Corpus) -> None:
    pages: list[list[str]] = []
    for offset in range(0, 8, 2):
        page = corpus.clinician.get("/dicom-web/studies", params={"limit": 2, "offset": offset})
        assert page.status_code == 200
        pages.append(values(page.json(), "0020000D"))
    assert [len(p) for p in pages] == [2, 2, 2, 0]
    everything = [uid for page in pages for uid in page]
    assert len(set(everything)) == len(everything) == len(VESTFOLD)
    by_uid = {s.study_uid: key for key, s in corpus.studies.items()}
    assert {by_uid[uid] for uid in everything} == VESTFOLD


def test_series_of_a_study(corpus: Corpus) -> None:
    study = corpus.studies["åse-2023"]
    response = corpus.clinician.get(f"/dicom-web/studies/{study.study_uid}/series")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/dicom+json"
    found = {
        item["0020000E"]["Value"][0]: (
            item["00080060"]["Value"][0],
            int(item["00201209"]["Value"][0]),
            item["0020000D"]["Value"][0],
        )
        for item in response.json()
    }
    assert found == {
        s.series_uid: (s.modality, len(s.images), study.study_uid) for s in study.series
    }


def test_series_of_a_study_by_modality(corpus: Corpus) -> None:
    study = corpus.studies["åse-2023"]
    px = corpus.clinician.get(
        f"/dicom-web/studies/{study.study_uid}/series", params={"Modality": "PX"}
    )
    assert values(px.json(), "0020000E") == [study.series[1].series_uid]


def test_series_search_across_studies(corpus: Corpus) -> None:
    found = corpus.clinician.get("/dicom-web/series", params={"PatientID": ASE})
    expected = {
        s.series_uid for key in ("åse-2023", "åse-2024") for s in corpus.studies[key].series
    }
    assert set(values(found.json(), "0020000E")) == expected


def test_instances_of_a_series(corpus: Corpus) -> None:
    study = corpus.studies["åse-2023"]
    io_series = study.series[0]
    response = corpus.clinician.get(
        f"/dicom-web/studies/{study.study_uid}/series/{io_series.series_uid}/instances"
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/dicom+json"
    items = response.json()
    assert {i["00080018"]["Value"][0] for i in items} == {i.sop_uid for i in io_series.images}
    for item in items:
        assert item["0020000E"]["Value"] == [io_series.series_uid]
        assert item["00280010"]["Value"] == [64] and item["00280011"]["Value"] == [48]


def test_instances_of_a_study(corpus: Corpus) -> None:
    study = corpus.studies["åse-2023"]
    response = corpus.clinician.get(f"/dicom-web/studies/{study.study_uid}/instances")
    assert set(values(response.json(), "00080018")) == {i.sop_uid for i in study.images}


@pytest.mark.parametrize(
    "params",
    [
        {"StudyDate": "2024-01-01"},
        {"StudyDate": "20240101-2024"},
        {"StudyInstanceUID": "abc"},
        {"StudyInstanceUID": "1.2.3,1.2.x"},
        {"limit": "0"},
        {"limit": "1001"},
        {"limit": "ten"},
        {"offset": "-1"},
        {"PatientWeight": "70"},
        {"00101030": "70"},
    ],
    ids=lambda p: "&".join(f"{k}={v}" for k, v in p.items()),
)
def test_wrong_search_values_are_refused(corpus: Corpus, params: dict[str, str]) -> None:
    response = corpus.clinician.get("/dicom-web/studies", params=params)
    assert_reason(response, 400)


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("odeg", {"åse-2023", "åse-2024"}),  # ø matches o, any case
        ("ASE", {"åse-2023", "åse-2024"}),  # a later word, å matches a
        ("bjorn", {"bjørn", "eli"}),  # Bjørn and the start of Bjørnstad
        ("kasa", {"bjørn"}),  # Kåsa, not Kaasa
        ("kari nord", {"kari"}),  # every word must begin a word of the name
        ("dega", set()),  # prefixes of words, not any substring
    ],
)
def test_fuzzy_matching_of_person_names(corpus: Corpus, pattern: str, expected: set[str]) -> None:
    fuzzy = corpus.clinician.get(
        "/dicom-web/studies", params={"PatientName": pattern, "fuzzymatching": "true"}
    )
    assert corpus.keys(fuzzy) == expected
    if pattern == "odeg":
        strict = corpus.clinician.get(
            "/dicom-web/studies", params={"PatientName": pattern, "fuzzymatching": "false"}
        )
        assert corpus.keys(strict) == set()


def test_values_made_to_break_sql_match_nothing(corpus: Corpus) -> None:
    for params in (
        {"PatientName": "%' OR 1=1 --"},
        {"PatientID": "' OR ''='"},
        {"AccessionNumber": "ACC1001' --"},
        {"StudyDescription": "x'); DROP TABLE studies; --"},
    ):
        assert corpus.keys(corpus.clinician.get("/dicom-web/studies", params=params)) == set()
    assert len(corpus.keys(corpus.clinician.get("/dicom-web/studies"))) == len(VESTFOLD)


def test_limit_and_offset_edges(corpus: Corpus) -> None:
    def count(**params: Any) -> int:
        response = corpus.clinician.get("/dicom-web/studies", params=params)
        assert response.status_code == 200, response.text
        return len(response.json())

    assert count(limit=1) == 1
    assert count(limit=1000) == len(VESTFOLD)
    assert count(limit=2, offset=len(VESTFOLD) - 1) == 1
    assert count(offset=len(VESTFOLD)) == 0
    assert count(offset=10_000_000) == 0
    huge = corpus.clinician.get("/dicom-web/studies", params={"limit": 1_000_000_000})
    assert_reason(huge, 400)
    assert "1000" in huge.json()["reason"]


@pytest.mark.parametrize(
    "params",
    [
        {"foo": "bar"},
        {"PatientNam": "x"},
        {"fuzzymatching": "maybe"},
        {"includefield": "NotAnAttribute"},
        {"StudyTime": "25"},
        {"PatientBirthDate": "1961041"},
    ],
    ids=lambda p: "&".join(f"{k}={v}" for k, v in p.items()),
)
def test_unknown_parameters_are_refused(corpus: Corpus, params: dict[str, str]) -> None:
    assert_reason(corpus.clinician.get("/dicom-web/studies", params=params), 400)


def test_answers_carry_what_ohif_reads(corpus: Corpus) -> None:
    study = corpus.studies["åse-2023"]
    [study_item] = corpus.clinician.get(
        "/dicom-web/studies", params={"StudyInstanceUID": study.study_uid}
    ).json()
    for tag in [
        "00080020",
        "00080030",
        "00080050",
        "00080061",
        "00080090",
        "00081030",
        "00100010",
        "00100020",
        "00100030",
        "00100040",
        "0020000D",
        "00200010",
        "00201206",
        "00201208",
    ]:
        assert tag in study_item, tag
    series, _ = study.first()
    [series_item, _] = corpus.clinician.get(f"/dicom-web/studies/{study.study_uid}/series").json()
    for tag in ["00080060", "0008103E", "0020000E", "00200011", "00201209"]:
        assert tag in series_item, tag
    instances = corpus.clinician.get(
        f"/dicom-web/studies/{study.study_uid}/series/{series.series_uid}/instances"
    ).json()
    for tag in ["00080016", "00080018", "00200013", "00280010", "00280011", "00280008"]:
        assert all(tag in item for item in instances), tag
    assert instances[0]["00280010"]["Value"] == [64]


def test_includefield_adds_stored_attributes_to_instances(corpus: Corpus) -> None:
    study = corpus.studies["åse-2023"]
    series, _ = study.first()
    path = f"/dicom-web/studies/{study.study_uid}/series/{series.series_uid}/instances"
    plain = corpus.clinician.get(path).json()
    assert "00100010" not in plain[0] and "00081030" not in plain[0]
    named = corpus.clinician.get(
        f"{path}?includefield=PatientName,00081030&includefield=StudyDate"
    ).json()
    assert named[0]["00100010"]["Value"] == [{"Alphabetic": "Ødegård^Åse"}]
    assert named[0]["00081030"]["Value"] == ["Bitewing"]
    assert named[0]["00080020"]["Value"] == ["20230105"]
    assert "00100030" not in named[0]
    everything = corpus.clinician.get(path, params={"includefield": "all"}).json()
    assert everything[0]["00100030"]["vr"] == "DA"
    assert everything[0]["00080060"]["Value"] == ["IO"]
    assert "7FE00010" not in everything[0]  # no bulk data in a search answer


def test_client_library_fuzzy_search_with_fields(corpus: Corpus, dicomweb: DICOMwebClient) -> None:
    found = dicomweb.search_for_studies(
        search_filters={"PatientName": "odeg"}, fuzzymatching=True, fields=["StudyDescription"]
    )
    assert {item["0020000D"]["Value"][0] for item in found} == {
        corpus.studies["åse-2023"].study_uid,
        corpus.studies["åse-2024"].study_uid,
    }
    instances = dicomweb.search_for_instances(
        study_instance_uid=corpus.studies["kari"].study_uid, fields=["all"], limit=5, offset=0
    )
    assert [Dataset.from_json(i).PatientName for i in instances] == ["Nordmann^Kari"]


# -- QIDO-RS: what an answer looks like ------------------------------------------------------------


def test_study_answer_shape(corpus: Corpus) -> None:
    study = corpus.studies["åse-2023"]
    response = corpus.clinician.get(
        "/dicom-web/studies", params={"StudyInstanceUID": study.study_uid}
    )
    assert response.headers["content-type"] == "application/dicom+json"
    [item] = response.json()
    assert item["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "Ødegård^Åse"}]}
    assert item["00100020"]["Value"] == [ASE]
    assert item["00080020"]["Value"] == ["20230105"]
    assert item["00080050"]["Value"] == ["ACC1001"]
    assert item["00080061"]["vr"] == "CS"
    assert sorted(item["00080061"]["Value"]) == ["IO", "PX"]
    assert int(item["00201206"]["Value"][0]) == 2  # NumberOfStudyRelatedSeries
    assert int(item["00201208"]["Value"][0]) == 3  # NumberOfStudyRelatedInstances
    retrieve_url = item["00081190"]["Value"][0]
    assert retrieve_url == f"{corpus.running.base_url}/dicom-web/studies/{study.study_uid}"
    retrieved = corpus.clinician.get(retrieve_url)
    assert retrieved.status_code == 200
    assert retrieved.headers["content-type"].startswith("multipart/related")


def test_series_and_instance_answers_carry_retrieve_urls(corpus: Corpus) -> None:
    study = corpus.studies["kari"]
    series, image = study.first()
    base = f"{corpus.running.base_url}/dicom-web"
    [series_item] = corpus.clinician.get(f"/dicom-web/studies/{study.study_uid}/series").json()
    assert series_item["00081190"]["Value"] == [
        f"{base}/studies/{study.study_uid}/series/{series.series_uid}"
    ]
    [instance_item] = corpus.clinician.get(
        f"/dicom-web/studies/{study.study_uid}/series/{series.series_uid}/instances"
    ).json()
    assert instance_item["00081190"]["Value"] == [
        f"{corpus.running.base_url}{instance_path(study, series, image)}"
    ]


# -- the dicomweb-client library -------------------------------------------------------------------


@pytest.fixture
def dicomweb(corpus: Corpus) -> Iterator[DICOMwebClient]:
    session = create_session_from_auth(requests.auth.HTTPBasicAuth("tannlege", PASSWORD))
    session.trust_env = False  # loopback only, whatever proxies the environment names
    try:
        yield DICOMwebClient(url=f"{corpus.running.base_url}/dicom-web", session=session)
    finally:
        session.close()


def test_client_searches_for_studies(corpus: Corpus, dicomweb: DICOMwebClient) -> None:
    found = dicomweb.search_for_studies(search_filters={"PatientName": "ødeg*"})
    assert {item["0020000D"]["Value"][0] for item in found} == {
        corpus.studies["åse-2023"].study_uid,
        corpus.studies["åse-2024"].study_uid,
    }
    by_date = dicomweb.search_for_studies(
        search_filters={"StudyDate": "20240101-20240331", "ModalitiesInStudy": "PX"}
    )
    assert [item["0020000D"]["Value"][0] for item in by_date] == [corpus.studies["ola"].study_uid]
    by_id = dicomweb.search_for_studies(search_filters={"PatientID": KARI}, limit=10)
    assert [Dataset.from_json(item).PatientName for item in by_id] == ["Nordmann^Kari"]


def test_client_searches_for_series_and_instances(corpus: Corpus, dicomweb: DICOMwebClient) -> None:
    study = corpus.studies["åse-2023"]
    series = dicomweb.search_for_series(study_instance_uid=study.study_uid)
    assert {item["0020000E"]["Value"][0] for item in series} == {s.series_uid for s in study.series}
    io_series = study.series[0]
    instances = dicomweb.search_for_instances(
        study_instance_uid=study.study_uid, series_instance_uid=io_series.series_uid
    )
    assert {item["00080018"]["Value"][0] for item in instances} == {
        i.sop_uid for i in io_series.images
    }


def test_client_retrieves_an_instance_as_ingested(corpus: Corpus, dicomweb: DICOMwebClient) -> None:
    study = corpus.studies["kari"]
    series, image = study.first()
    ds = dicomweb.retrieve_instance(study.study_uid, series.series_uid, image.sop_uid)
    assert isinstance(ds, Dataset)
    assert ds.SOPInstanceUID == image.sop_uid
    assert ds.PatientID == KARI
    assert str(ds.PatientName) == "Nordmann^Kari"
    assert bytes(ds.PixelData) == image.pixel_data


def test_client_retrieves_instance_metadata(corpus: Corpus, dicomweb: DICOMwebClient) -> None:
    study = corpus.studies["åse-2024"]
    series, image = study.first()
    metadata = dicomweb.retrieve_instance_metadata(
        study.study_uid, series.series_uid, image.sop_uid
    )
    assert metadata["00100010"]["Value"] == [{"Alphabetic": "Ødegård^Åse"}]
    assert metadata["00080018"]["Value"] == [image.sop_uid]
    assert "Value" not in metadata.get("7FE00010", {})
    assert "InlineBinary" not in metadata.get("7FE00010", {})


def test_client_retrieves_a_series_and_a_study(corpus: Corpus, dicomweb: DICOMwebClient) -> None:
    study = corpus.studies["åse-2023"]
    io_series = study.series[0]
    series = dicomweb.retrieve_series(study.study_uid, io_series.series_uid)
    expected = {i.sop_uid: i.pixel_data for i in io_series.images}
    assert {ds.SOPInstanceUID: bytes(ds.PixelData) for ds in series} == expected
    whole = dicomweb.retrieve_study(study.study_uid)
    assert {ds.SOPInstanceUID: bytes(ds.PixelData) for ds in whole} == {
        i.sop_uid: i.pixel_data for i in study.images
    }
    assert {str(ds.PatientName) for ds in whole} == {"Ødegård^Åse"}


def test_retrieve_sends_the_stored_object_byte_for_byte(corpus: Corpus) -> None:
    study = corpus.studies["bjørn"]
    series, image = study.first()
    response = corpus.clinician.get(
        instance_path(study, series, image),
        headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
    )
    assert response.status_code == 200
    media_type = response.headers["content-type"]
    assert media_type.startswith("multipart/related")
    boundary = media_type.split("boundary=")[1].strip('"')
    parts = response.content.split(f"--{boundary}".encode())
    assert parts[-1].strip() == b"--"
    [part] = parts[1:-1]
    head, _, body = part.partition(b"\r\n\r\n")
    assert b"application/dicom" in head
    assert body.removesuffix(b"\r\n") == image.part10


# -- WADO-RS metadata ------------------------------------------------------------------------------


def _assert_metadata(response: httpx.Response, expected_sops: set[str], name: str) -> None:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/dicom+json"
    items = response.json()
    assert {item["00080018"]["Value"][0] for item in items} == expected_sops
    for item in items:
        assert item["00100010"]["Value"] == [{"Alphabetic": name}]
        assert item["00100020"]["vr"] == "LO"
        assert item["00280010"]["Value"] and item["00280011"]["Value"]
        pixels = item.get("7FE00010", {})
        assert "Value" not in pixels and "InlineBinary" not in pixels


def test_metadata_of_instance_series_and_study(corpus: Corpus) -> None:
    study = corpus.studies["åse-2023"]
    series, image = study.first()
    name = "Ødegård^Åse"
    base = f"/dicom-web/studies/{study.study_uid}"
    instance = corpus.clinician.get(f"{instance_path(study, series, image)}/metadata")
    _assert_metadata(instance, {image.sop_uid}, name)
    in_series = corpus.clinician.get(f"{base}/series/{series.series_uid}/metadata")
    _assert_metadata(in_series, {i.sop_uid for i in series.images}, name)
    in_study = corpus.clinician.get(f"{base}/metadata")
    _assert_metadata(in_study, {i.sop_uid for i in study.images}, name)


# -- rendered and thumbnail ------------------------------------------------------------------------


def test_rendered_is_a_full_size_jpeg_by_default(corpus: Corpus) -> None:
    study = corpus.studies["kari"]
    response = corpus.clinician.get(f"{instance_path(study, *study.first())}/rendered")
    assert open_image(response, "image/jpeg").size == (200, 300)


def test_rendered_as_png_on_request(corpus: Corpus) -> None:
    study = corpus.studies["kari"]
    path = f"{instance_path(study, *study.first())}/rendered"
    by_header = corpus.clinician.get(path, headers={"Accept": "image/png"})
    assert open_image(by_header, "image/png").size == (200, 300)
    by_parameter = corpus.clinician.get(path, params={"accept": "image/png"})
    assert open_image(by_parameter, "image/png").size == (200, 300)


def test_rendered_window_changes_the_picture(corpus: Corpus) -> None:
    study = corpus.studies["kari"]
    path = f"{instance_path(study, *study.first())}/rendered"

    def grey(window: str) -> np.ndarray[Any, Any]:
        response = corpus.clinician.get(path, params={"window": window, "accept": "image/png"})
        return np.asarray(open_image(response, "image/png").convert("L"))

    # Stored values run from about 0 to 4000: a window far below them is white, far above black.
    assert (grey("-1000,1") == 255).all()
    assert (grey("10000,1") == 0).all()
    full = grey("2000,4000")
    assert 0 < full.mean() < 255
    assert not np.array_equal(full, grey("1000,500"))


def test_rendered_viewport_keeps_the_aspect_ratio(corpus: Corpus) -> None:
    study = corpus.studies["kari"]  # 200 wide, 300 high
    path = f"{instance_path(study, *study.first())}/rendered"
    square = open_image(corpus.clinician.get(path, params={"viewport": "100,100"}), "image/jpeg")
    assert square.size == (67, 100)
    larger = open_image(corpus.clinician.get(path, params={"viewport": "1000,1000"}), "image/jpeg")
    assert larger.size == (200, 300)  # never enlarged


def test_rendered_fits_inside_a_wide_viewport(corpus: Corpus) -> None:
    """PS3.18 viewport=vw,vh: the picture must fit both the width and the height."""
    study = corpus.studies["kari"]  # 200 wide, 300 high
    path = f"{instance_path(study, *study.first())}/rendered"
    wide = open_image(corpus.clinician.get(path, params={"viewport": "120,60"}), "image/jpeg")
    assert wide.width <= 120 and wide.height <= 60, wide.size
    assert wide.size == (40, 60)


def test_thumbnails_of_instance_series_and_study(corpus: Corpus) -> None:
    study = corpus.studies["kari"]  # 200 × 300: thumbnails shrink it to fit 128
    series, image = study.first()
    for path in (
        f"{instance_path(study, series, image)}/thumbnail",
        f"/dicom-web/studies/{study.study_uid}/series/{series.series_uid}/thumbnail",
        f"/dicom-web/studies/{study.study_uid}/thumbnail",
    ):
        thumbnail = open_image(corpus.clinician.get(path), "image/jpeg")
        assert thumbnail.size == (85, 128), path


def test_thumbnails_do_not_enlarge_small_images(corpus: Corpus) -> None:
    study = corpus.studies["åse-2023"]  # 48 × 64
    response = corpus.clinician.get(f"/dicom-web/studies/{study.study_uid}/thumbnail")
    assert open_image(response, "image/jpeg").size == (48, 64)
    png = corpus.clinician.get(
        f"/dicom-web/studies/{study.study_uid}/series/{study.series[1].series_uid}/thumbnail",
        headers={"Accept": "image/png"},
    )
    assert open_image(png, "image/png").size == (48, 64)


@pytest.mark.parametrize(
    "params",
    [
        {"window": "abc"},
        {"window": "100"},
        {"window": "100,0"},
        {"window": "nan,100"},
        {"window": "100,inf"},
        {"viewport": "0,0"},
        {"viewport": "a,b"},
        {"viewport": "5000,5000"},
    ],
    ids=lambda p: "&".join(f"{k}={v}" for k, v in p.items()),
)
def test_wrong_render_parameters_are_refused(corpus: Corpus, params: dict[str, str]) -> None:
    study = corpus.studies["kari"]
    response = corpus.clinician.get(
        f"{instance_path(study, *study.first())}/rendered", params=params
    )
    assert_reason(response, 400)


def test_wrong_quality_is_refused_with_a_reason(corpus: Corpus) -> None:
    study = corpus.studies["kari"]
    response = corpus.clinician.get(
        f"{instance_path(study, *study.first())}/rendered", params={"quality": "best"}
    )
    assert_reason(response, 400, 422)


# -- what does not exist ---------------------------------------------------------------------------

MISSING = "1.2.826.0.1.3680043.8.498.1"


def _reads(study_uid: str, series_uid: str, sop_uid: str) -> list[str]:
    study = f"/dicom-web/studies/{study_uid}"
    series = f"{study}/series/{series_uid}"
    instance = f"{series}/instances/{sop_uid}"
    return [
        study,
        f"{study}/metadata",
        f"{study}/thumbnail",
        series,
        f"{series}/metadata",
        f"{series}/thumbnail",
        instance,
        f"{instance}/metadata",
        f"{instance}/rendered",
        f"{instance}/thumbnail",
        f"{instance}/frames/1/rendered",
    ]


@pytest.mark.parametrize("missing", ["study", "series", "instance"])
def test_reading_what_does_not_exist_is_404(corpus: Corpus, missing: str) -> None:
    study = corpus.studies["bjørn"]
    series, image = study.first()
    uids = {
        "study": (MISSING, series.series_uid, image.sop_uid),
        "series": (study.study_uid, MISSING, image.sop_uid),
        "instance": (study.study_uid, series.series_uid, MISSING),
    }[missing]
    paths = [path for path in _reads(*uids) if MISSING in path.split("/")]
    for path in paths:
        assert_reason(corpus.clinician.get(path), 404)


@pytest.mark.parametrize(
    "malformed",
    ["abc", "1.2.3.", "1..2", "01.2.3", "1.2.3x", "9" * 80, "1.2.ø", "1.2 3", "1.2.3;4", "%27--"],
)
def test_malformed_uids_in_the_path_are_refused_cleanly(corpus: Corpus, malformed: str) -> None:
    study = corpus.studies["bjørn"]
    series, image = study.first()
    segment = quote(malformed, safe="")
    paths = {
        *_reads(segment, series.series_uid, image.sop_uid),
        *_reads(study.study_uid, segment, image.sop_uid),
        *_reads(study.study_uid, series.series_uid, segment),
    }
    for path in sorted(paths):
        if segment not in path:
            continue
        assert_reason(corpus.clinician.get(path), 400, 404)


# -- every read is audited -------------------------------------------------------------------------

Read = Callable[[httpx.Client, Study], httpx.Response]

READS: dict[str, tuple[str, Read]] = {
    "search": (QUERY, lambda c, s: c.get("/dicom-web/studies", params={"PatientID": KARI})),
    "series search": (QUERY, lambda c, s: c.get(f"/dicom-web/studies/{s.study_uid}/series")),
    "instance search": (
        QUERY,
        lambda c, s: c.get("/dicom-web/instances", params={"StudyInstanceUID": s.study_uid}),
    ),
    "metadata": (ACCESSED, lambda c, s: c.get(f"/dicom-web/studies/{s.study_uid}/metadata")),
    "retrieve": (TRANSFERRED, lambda c, s: c.get(instance_path(s, *s.first()))),
    "retrieve study": (TRANSFERRED, lambda c, s: c.get(f"/dicom-web/studies/{s.study_uid}")),
    "rendered": (ACCESSED, lambda c, s: c.get(f"{instance_path(s, *s.first())}/rendered")),
    "thumbnail": (ACCESSED, lambda c, s: c.get(f"/dicom-web/studies/{s.study_uid}/thumbnail")),
}


@pytest.mark.parametrize("what", list(READS))
def test_every_read_is_audited(corpus: Corpus, what: str) -> None:
    event_id, read = READS[what]
    user = f"audit-{what.replace(' ', '-')}"
    study = corpus.studies["kari"]
    with corpus.user(user) as client:
        before = audit_events(corpus.running, user, event_id)
        response = read(client, study)
        assert response.status_code == 200, response.text
        after = audit_events(corpus.running, user, event_id)
    assert len(after) == len(before) + 1
    event = after[0]
    assert event.actor == user and event.actor_kind == "user" and event.actor_role == "clinician"
    assert event.county == "vestfold"
    assert event.source_address == "127.0.0.1"
    assert event.outcome == 0
    assert event.patient_ids == (KARI,)
    if event_id != QUERY:
        assert event.study_uids == (study.study_uid,)


def test_client_library_reads_are_audited(corpus: Corpus) -> None:
    user = "audit-library"
    corpus.user(user).close()
    session = requests.Session()
    session.auth = (user, PASSWORD)
    session.trust_env = False
    client = DICOMwebClient(url=f"{corpus.running.base_url}/dicom-web", session=session)
    study = corpus.studies["bjørn"]
    series, image = study.first()
    client.search_for_studies(search_filters={"PatientID": BJORN})
    client.retrieve_instance(study.study_uid, series.series_uid, image.sop_uid)
    client.retrieve_instance_metadata(study.study_uid, series.series_uid, image.sop_uid)
    session.close()
    for event_id in (QUERY, TRANSFERRED, ACCESSED):
        [event] = audit_events(corpus.running, user, event_id)
        assert event.patient_ids == (BJORN,)


def test_a_failed_lookup_is_audited(corpus: Corpus) -> None:
    user = "audit-missing"
    with corpus.user(user) as client:
        response = client.get(f"/dicom-web/studies/{MISSING}/metadata")
        assert_reason(response, 404)
        retrieve = client.get(f"/dicom-web/studies/{MISSING}")
        assert_reason(retrieve, 404)
    [accessed] = audit_events(corpus.running, user, ACCESSED)
    assert accessed.outcome == 4
    assert accessed.study_uids == (MISSING,)
    assert accessed.source_address == "127.0.0.1"
    [transferred] = audit_events(corpus.running, user, TRANSFERRED)
    assert transferred.outcome == 4
