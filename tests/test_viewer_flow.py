"""A dentist's minute with the viewer, in headless Chromium: sign in, find the patient by national
ID (posted, never in a URL), open the patient page and a study, see real pixels, drag the window
and see them change, measure a known distance on a calibrated image and read it in millimetres,
be told when an image has no calibration; a clinician of another county gets the
break-the-glass page and no pixels. Every read is in the audit log under the clinician.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, sync_playwright

from arkiv.accounts import Role
from arkiv.audit import Actor
from arkiv.counties import County
from storage.records import AuditQuery
from tests.browser import Traffic, chromium
from tests.conftest import PASSWORD, RunningArchive, _start_archive
from tests.dicom_factory import Spec, encode, make_dataset, synthetic_national_id

PATIENT = synthetic_national_id(date(1984, 4, 4), 170)
SENSOR = Actor(name="SENSOR", kind="dicom-ae", county="vestfold", address="127.0.0.1")
SPACING_MM = 0.1


@dataclass
class Site:
    running: RunningArchive
    calibrated: str
    uncalibrated: str


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    for running in _start_archive(tmp_path_factory.mktemp("viewer-flow") / "data"):
        calibrated = make_dataset(
            Spec(patient_id=PATIENT, patient_name="Dahl^Eirik", birth_date="19840404",
                 study_date="20250110", rows=300, columns=400, seed=3)
        )  # fmt: skip
        calibrated.ImagerPixelSpacing = [str(SPACING_MM), str(SPACING_MM)]
        uncalibrated = make_dataset(
            Spec(patient_id=PATIENT, patient_name="Dahl^Eirik", birth_date="19840404",
                 study_date="20240110", rows=300, columns=400, seed=4)
        )  # fmt: skip
        for ds in (calibrated, uncalibrated):
            running.archive.ingest.ingest_dicom(encode(ds), SENSOR)
        running.archive.accounts.add_user("tannlege", PASSWORD, Role.CLINICIAN, County.VESTFOLD)
        running.archive.accounts.add_user("tm", PASSWORD, Role.CLINICIAN, County.TELEMARK)
        yield Site(running, calibrated.StudyInstanceUID, uncalibrated.StudyInstanceUID)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


def sign_in(browser: Browser, site: Site, user: str) -> tuple[Page, Traffic]:
    base = site.running.base_url
    page = browser.new_page(viewport={"width": 1400, "height": 900}, locale="nb-NO")
    traffic = Traffic(base)
    page.on("response", traffic.record)
    page.on("console", traffic.complain)
    page.goto(f"{base}/login")
    page.fill("#username", user)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")
    return page, traffic


def canvas_pixels(page: Page) -> np.ndarray:
    shot = page.locator(".viewport canvas").first.screenshot()
    return np.asarray(Image.open(io.BytesIO(shot)).convert("L"), dtype=np.float64)


def wait_full(page: Page) -> None:
    page.wait_for_selector('#viewer[data-state="ready"]')
    page.wait_for_selector('.viewport[data-active="true"][data-state="full"]')


def screen_point(page: Page, x: float, y: float) -> tuple[float, float]:
    """Where image pixel (x, y) is on the page, from the viewport's published transform."""
    viewport = page.locator('.viewport[data-active="true"]')
    a, b, c, d, e, f = (
        float(v) for v in (viewport.get_attribute("data-transform") or "").split(",")
    )
    box = viewport.locator("canvas").bounding_box()
    assert box is not None
    return box["x"] + a * x + c * y + e, box["y"] + b * x + d * y + f


def measure(page: Page, start: tuple[float, float], end: tuple[float, float]) -> None:
    page.click("#tool-length")
    page.mouse.move(*screen_point(page, *start))
    page.mouse.down()
    page.mouse.move(*screen_point(page, *end), steps=8)
    page.mouse.up()
    page.wait_for_selector('#measurements li[data-kind="length"]')


def test_find_open_window_and_measure(site: Site, browser: Browser) -> None:
    page, traffic = sign_in(browser, site, "tannlege")
    try:
        page.fill("form.search #patient_id", PATIENT)
        page.click("form.search button[type=submit]")
        page.click("a.patient-link")
        page.wait_for_selector("#timeline .study-card")
        assert page.locator(".timeline-day").count() == 2
        page.click(f'.study-card[data-study-uid="{site.calibrated}"] a.study-link')
        wait_full(page)
        assert not [url for _m, url, _s in traffic.answers if PATIENT in url], traffic.report()
        documents = [url for _m, url, _s in traffic.answers if url.endswith("/viewer")]
        assert len(documents) == 1, "the preloaded study document is the one the script uses"

        before = canvas_pixels(page)
        assert before.std() > 10, "the canvas shows an image, not a blank"
        window = page.get_attribute('.viewport[data-active="true"]', "data-window")
        box = page.locator(".viewport canvas").first.bounding_box()
        assert box is not None and window
        page.mouse.move(box["x"] + box["width"] * 0.4, box["y"] + box["height"] * 0.4)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.2, box["y"] + box["height"] * 0.7, steps=10)
        page.mouse.up()
        page.wait_for_selector(f'.viewport[data-active="true"]:not([data-window="{window}"])')
        after = canvas_pixels(page)
        assert np.abs(after - before).mean() > 2, "window/level changed the pixels on screen"

        measure(page, (50.5, 50.5), (350.5, 250.5))
        length = page.locator('#measurements li[data-kind="length"]').last
        expected = math.hypot(300, 200) * SPACING_MM
        assert float(length.get_attribute("data-value") or "nan") == pytest.approx(
            expected, rel=0.005
        )
        assert "mm" in length.inner_text()
        assert "Imager Pixel Spacing" in page.inner_text("#calibration")
        assert not traffic.console, traffic.report()
        assert all(status < 400 for _m, _u, status in traffic.answers), traffic.report()
    finally:
        page.close()
    reads = site.running.archive.index.find_audit_events(
        AuditQuery(actor="tannlege", event_id="110103", limit=100)
    )
    purposes = {e.details.get("purpose") for e in reads if site.calibrated in e.study_uids}
    assert {"study page", "viewer metadata", "frames"} <= purposes


def test_an_uncalibrated_image_is_measured_in_pixels_and_says_so(
    site: Site, browser: Browser
) -> None:
    page, _traffic = sign_in(browser, site, "tannlege")
    try:
        page.goto(f"{site.running.base_url}/studies/{site.uncalibrated}")
        wait_full(page)
        assert "ikke kalibrert" in page.inner_text("#calibration").lower()
        measure(page, (100.5, 100.5), (200.5, 100.5))
        length = page.locator('#measurements li[data-kind="length"]').last
        assert length.get_attribute("data-value") == ""
        assert "px" in length.inner_text()
    finally:
        page.close()


def test_another_countys_clinician_gets_break_the_glass_and_no_pixels(
    site: Site, browser: Browser
) -> None:
    page, traffic = sign_in(browser, site, "tm")
    try:
        response = page.goto(f"{site.running.base_url}/studies/{site.calibrated}")
        assert response is not None and response.status == 403
        assert "Vestfold" in page.inner_text("main") and "Dahl" not in page.content()
        assert page.locator('form[action="/break-glass"] select#reason').count() == 1
        assert not [u for _m, u, _s in traffic.answers if "/frames/" in u or "/viewer" in u]
    finally:
        page.close()
