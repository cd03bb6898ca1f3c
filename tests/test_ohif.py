"""OHIF Viewer v3, the prebuilt release of the npm package @ohif/app, served by the archive at
/ohif/ and driven in headless Chromium: a clinician signs in on the archive's login page, sees
the stored studies in OHIF's study list, opens each (one uncompressed, one JPEG 2000 as sensors
send it) and sees the image; every request OHIF made to the archive was answered, nothing broke
the /ohif/ Content-Security-Policy, and every read was audited under the clinician's name.

The npm package is built for PUBLIC_URL `/`; a clinic builds OHIF for `/ohif/` instead
(`PUBLIC_URL=/ohif/`). `ohif_build` makes the equivalent of that build from the release: the
places a build writes its public URL (index.html, the webpack runtime of the app and of each of
its workers, the stylesheets' font URLs) are rewritten, every other file is linked, and
app-config.js is tests/ohif/app-config.js.
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, sync_playwright
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless

from arkiv.audit import Actor
from arkiv.config import ConfigError, Settings
from arkiv.services import Archive
from storage.records import AuditEvent, AuditQuery
from tests.browser import Traffic, chromium, sign_in
from tests.conftest import RunningArchive, _start_archive
from tests.dicom_factory import DX_PRESENTATION, Spec, encode, make_dataset
from viewer.app import create_app

OHIF = Path(__file__).parent / "ohif"
DIST = OHIF / "node_modules" / "@ohif" / "app" / "dist"
USER = "tannlege"
PUBLIC_URL = "/ohif/"
QUERY = "110112"
ACCESSED = "110103"
SENSOR = Actor(name="SENSOR", kind="dicom-ae", county="vestfold", address="127.0.0.1")


@dataclass(frozen=True)
class Stored:
    """A study as a modality sent it: one image, in the transfer syntax it chose."""

    spec: Spec
    syntax: str

    def part10(self) -> bytes:
        ds = make_dataset(self.spec)
        if self.syntax != ExplicitVRLittleEndian:
            ds.compress(self.syntax, generate_instance_uid=False)
        return encode(ds)


STUDIES = (
    Stored(
        Spec(
            patient_id="01017012345",
            patient_name="Nordmann^Kari",
            study_date="20250314",
            accession="ACC0001",
            modality="IO",
            rows=256,
            columns=192,
            seed=3,
        ),
        ExplicitVRLittleEndian,
    ),
    # Sensors and panoramic units often send JPEG 2000: OHIF decodes it with a WebAssembly codec.
    Stored(
        Spec(
            patient_id="02028054321",
            patient_name="Hansen^Ola",
            study_date="20240607",
            accession="ACC0002",
            modality="PX",
            sop_class=DX_PRESENTATION,
            rows=200,
            columns=320,
            seed=4,
        ),
        JPEG2000Lossless,
    ),
)


def for_public_url(name: str, text: str) -> str:
    """A file of the release as a build for PUBLIC_URL writes it: index.html's links and its
    PUBLIC_URL, each webpack runtime's public path (the app's and its workers'), CSS urls."""
    if name == "index.html":
        text = text.replace('PUBLIC_URL="/"', f'PUBLIC_URL="{PUBLIC_URL}"')
        return re.sub(r'(href|src)="/(?!/)', rf'\1="{PUBLIC_URL}', text)
    if name.endswith(".js"):
        return text.replace(
            '__webpack_require__.p = "/";', f'__webpack_require__.p = "{PUBLIC_URL}";'
        )
    if name.endswith(".css"):
        return re.sub(r"url\(/(?!/)", f"url({PUBLIC_URL}", text)
    return text


def ohif_build(directory: Path) -> Path:
    """The release rebuilt for /ohif/ in `directory`; files it need not change are linked."""
    if not (DIST / "index.html").is_file():
        pytest.fail(
            f"OHIF Viewer is not installed in {DIST}: run .ci/install-node-packages "
            "(part of the README's test command, make test)"
        )
    directory.mkdir()
    for entry in DIST.iterdir():
        if entry.name == "app-config.js":
            continue
        if entry.is_file() and entry.suffix in (".html", ".js", ".css"):
            text = entry.read_text(encoding="utf-8")
            rebuilt = for_public_url(entry.name, text)
            if rebuilt != text:
                (directory / entry.name).write_text(rebuilt, encoding="utf-8")
                continue
        (directory / entry.name).symlink_to(entry)
    index = (directory / "index.html").read_text(encoding="utf-8")
    assert f'PUBLIC_URL="{PUBLIC_URL}"' in index, "the release's index.html has changed shape"
    (directory / "app-config.js").write_text(
        (OHIF / "app-config.js").read_text(encoding="utf-8"), encoding="utf-8"
    )
    return directory


@pytest.fixture
def archive_with_ohif(tmp_path: Path) -> Iterator[RunningArchive]:
    build = ohif_build(tmp_path / "ohif")
    for running in _start_archive(tmp_path / "data", {"ohif_dir": str(build)}):
        for study in STUDIES:
            running.archive.ingest.ingest_dicom(study.part10(), SENSOR)
        running.add_user(USER).close()
        yield running


@dataclass
class OhifTraffic(Traffic):
    """What OHIF asked the archive for: its DICOMweb and WADO requests first in a report."""

    def data_requests(self) -> list[tuple[str, str, int]]:
        return [a for a in self.answers if "/dicom-web/" in a[1] or "/wado" in a[1]]

    def report(self) -> str:
        data = self.data_requests()
        others = [a for a in self.answers if a not in data and a[2] >= 400]
        lines = [f"{status} {method} {url}" for method, url, status in data + others]
        return "\n".join(
            ["requests to the archive:", *lines, "browser console:", *self.console[-40:]]
        )


def viewport_pixels(page: Page) -> np.ndarray:
    """The middle of OHIF's first viewport as grey levels (the corners hold overlay text)."""
    canvas = page.locator("canvas.cornerstone-canvas").first
    png = canvas.screenshot()
    grey = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float64)
    height, width = grey.shape
    return grey[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4]


def wait_for_image(page: Page, traffic: OhifTraffic, timeout: float = 60.0) -> np.ndarray:
    deadline = time.monotonic() + timeout
    page.wait_for_selector("canvas.cornerstone-canvas", timeout=timeout * 1000)
    while True:
        pixels = viewport_pixels(page)
        if pixels.std() > 5.0:
            return pixels
        if time.monotonic() > deadline:
            pytest.fail(f"no image in OHIF's viewport\n{traffic.report()}")
        page.wait_for_timeout(500)


def audit_events(running: RunningArchive) -> list[AuditEvent]:
    return running.archive.index.find_audit_events(AuditQuery(actor=USER, limit=1000))


def test_ohif_lists_and_displays_the_archived_studies(
    archive_with_ohif: RunningArchive,
) -> None:
    running = archive_with_ohif
    base = running.base_url
    traffic = OhifTraffic(base)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            traffic.watch(page)
            sign_in(page, base, USER)

            page.goto(f"{base}{PUBLIC_URL}")
            try:
                for name in ("Nordmann", "Hansen"):
                    page.get_by_text(name, exact=False).first.wait_for(timeout=60_000)
            except PlaywrightError:
                pytest.fail(f"OHIF's study list did not show the studies\n{traffic.report()}")
            listing = page.locator("body").inner_text()
            for study in STUDIES:
                for shown in (study.spec.accession, study.spec.modality, study.spec.study_date[:4]):
                    assert shown in listing, f"{shown} is not in the study list:\n{listing}"

            for study in STUDIES:
                page.goto(f"{base}{PUBLIC_URL}viewer?StudyInstanceUIDs={study.spec.study_uid}")
                pixels = wait_for_image(page, traffic)
                assert pixels.max() - pixels.min() > 20, traffic.report()
        finally:
            browser.close()

    refused = [line for line in traffic.console if "Content Security Policy" in line]
    assert not refused, "OHIF's CSP at /ohif/ blocks what the viewer needs:\n" + "\n".join(refused)
    data = traffic.data_requests()
    failed = [answer for answer in traffic.answers if answer[2] >= 400]
    assert not failed, traffic.report()
    assert any("/dicom-web/studies?" in url for _, url, _ in data), traffic.report()
    for study in STUDIES:
        opened = [url for _, url, _ in data if study.spec.study_uid in url]
        assert any(url.endswith("/metadata") for url in opened), traffic.report()
        assert any("/frames/" in url or "/rendered" in url for url in opened), traffic.report()

    events = audit_events(running)
    assert {event.actor_kind for event in events} == {"user"}, events
    assert all(event.outcome == 0 for event in events), events
    assert any(event.event_id == QUERY for event in events), "the study list was not audited"
    for study in STUDIES:
        reads = [
            e for e in events if e.event_id == ACCESSED and study.spec.study_uid in e.study_uids
        ]
        assert reads, f"OHIF's reads of {study.spec.accession} were not audited"


def test_the_archive_serves_an_ohif_build_at_ohif_and_nothing_outside_it(tmp_path: Path) -> None:
    build = tmp_path / "build"
    build.mkdir()
    boot = 'window.PUBLIC_URL="/ohif/"'
    (build / "index.html").write_text(f"<html><head><script>{boot}</script></head></html>")
    (build / "app.bundle.js").write_text("console.log('ohif')")
    (tmp_path / "secret.txt").write_text("not for the web")
    digest = base64.b64encode(hashlib.sha256(boot.encode()).digest()).decode()
    for running in _start_archive(tmp_path / "data", {"ohif_dir": str(build)}):
        with running.client() as client:
            page = client.get("/ohif/viewer", params={"StudyInstanceUIDs": "1.2.3"})
            assert page.status_code == 200 and boot in page.text
            policy = page.headers["content-security-policy"]
            assert f"'sha256-{digest}'" in policy and "'unsafe-eval'" not in policy
            assert "'unsafe-inline'" not in policy.split("script-src")[1].split(";")[0]
            script = client.get("/ohif/app.bundle.js")
            assert script.text == "console.log('ohif')"
            assert "'unsafe-eval'" in script.headers["content-security-policy"]
            assert client.get("/ohif/missing.bundle.js").status_code == 404
            for escape in ("/ohif/%2e%2e/secret.txt", "/ohif/..%2fsecret.txt"):
                answer = client.get(escape)
                assert answer.status_code == 404 and "not for the web" not in answer.text
            rooted = client.get("/ohif//etc/passwd")
            assert rooted.status_code == 200 and boot in rooted.text
    for running in _start_archive(tmp_path / "plain"):
        with running.client() as client:
            assert client.get("/ohif/app.bundle.js").status_code == 404


def test_an_ohif_dir_without_a_build_stops_the_web_app_with_a_clear_error(tmp_path: Path) -> None:
    archive = Archive(Settings(data_dir=tmp_path / "data", ohif_dir=str(tmp_path)))
    try:
        with pytest.raises(ConfigError, match=r"no index\.html"):
            create_app(archive)
    finally:
        archive.close()
