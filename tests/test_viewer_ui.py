"""The clinician's image viewer driven in headless Chromium, as a dentist uses it: find the
patient by national ID (a form POST, the ID in no URL), open the patient's timeline and a study,
see real pixels (not a blank canvas), change the window, measure on a calibrated image (and be
told when an image is not calibrated), look at the full-mouth mount and compare with the prior
series, rotate/flip/invert/reset; another county's clinician is sent to break the glass and gets
no pixels before; every read is in the audit log under the clinician's name.

One archive and one browser serve the whole module (each test has a page of its own).
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, sync_playwright
from pydicom.uid import generate_uid

from arkiv.accounts import Principal, Role
from arkiv.audit import Actor
from arkiv.counties import County
from arkiv.photos import PhotoForm, UploadedFile
from storage.records import AuditEvent, AuditQuery
from tests import media_factory as media
from tests.browser import Traffic, chromium, sign_in
from tests.conftest import RunningArchive, _start_archive
from tests.dental_images import RULER_MARKS, calibrated_ruler, full_mouth_series, uncalibrated
from tests.dicom_factory import Spec, encode, synthetic_national_id

pytestmark = pytest.mark.timeout(240)

USER = "tannlege"
OTHER = "tannlege-buskerud"
PATIENT_ID = synthetic_national_id(date(1988, 5, 17), 130)
SENSOR = Actor(name="SENSOR", kind="dicom-ae", county="vestfold", address="127.0.0.1")
PATIENT = Spec(patient_id=PATIENT_ID, patient_name="Berg^Ingrid", birth_date="19880517")
FRAMES = re.compile(r"/dicom-web/studies/[\d.]+/series/[\d.]+/instances/[\d.]+/frames/\d+")


def fresh(spec: Spec, study_date: str) -> Spec:
    """The same patient in a new study of its own."""
    return replace(
        spec,
        study_uid=generate_uid(),
        series_uid=generate_uid(),
        sop_uid=generate_uid(),
        study_date=study_date,
        accession=f"ACC{study_date}",
    )


@dataclass
class Site:
    running: RunningArchive
    browser: Browser
    fmx_uid: str
    fmx_sops: list[str]
    prior_uid: str
    ruler_uid: str
    uncalibrated_uid: str


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """An archive holding the patient's two full-mouth series (2024 and 2025), a calibrated
    ruler and an uncalibrated film; a clinician of Vestfold (the owner) and one of Buskerud."""
    data = tmp_path_factory.mktemp("viewer") / "data"
    for running in _start_archive(Path(data)):
        ingest = running.archive.ingest.ingest_dicom
        prior = full_mouth_series(PATIENT, study_date="20240301")
        current = full_mouth_series(PATIENT, study_date="20250314")
        for ds in (*prior, *current):
            ingest(encode(ds), SENSOR)
        ruler = calibrated_ruler(fresh(PATIENT, "20250320"))
        film = uncalibrated(fresh(PATIENT, "20250321"))
        ingest(encode(ruler), SENSOR)
        ingest(encode(film), SENSOR)
        running.add_user(USER).close()
        running.add_user(OTHER, county=County.BUSKERUD).close()
        running.archive.photos.upload(
            Principal(USER, Role.CLINICIAN, County.VESTFOLD),
            [UploadedFile(media.jpeg(width=64, height=48), "image/jpeg", "foto.jpg")],
            PhotoForm(
                patient_id=PATIENT_ID, category="intraoral", teeth="16", taken_at="2025-03-14T11:00"
            ),
        )
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
            try:
                yield Site(
                    running,
                    browser,
                    str(current[0].StudyInstanceUID),
                    [str(ds.SOPInstanceUID) for ds in current],
                    str(prior[0].StudyInstanceUID),
                    str(ruler.StudyInstanceUID),
                    str(film.StudyInstanceUID),
                )
            finally:
                browser.close()


@pytest.fixture
def traffic(site: Site) -> Traffic:
    return Traffic(site.running.base_url)


@pytest.fixture
def page(site: Site, traffic: Traffic) -> Iterator[Page]:
    """A fresh browser context signed in as the Vestfold clinician."""
    context = site.browser.new_context(viewport={"width": 1600, "height": 1000}, locale="nb-NO")
    page = context.new_page()
    traffic.watch(page)
    sign_in(page, site.running.base_url, USER)
    try:
        yield page
    finally:
        context.close()


def open_study(page: Page, base_url: str, study_uid: str, traffic: Traffic) -> None:
    page.goto(f"{base_url}/studies/{study_uid}")
    wait_ready(page, traffic)


def wait_ready(page: Page, traffic: Traffic) -> None:
    page.wait_for_selector("#viewer[data-state=ready], #viewer[data-state=error]", timeout=30_000)
    state = page.get_attribute("#viewer", "data-state")
    if state != "ready":
        pytest.fail(f"viewer state {state}: {page.inner_text('#viewer')}\n{traffic.report()}")


def wait_full(page: Page, selector: str = ".viewport[data-active=true]") -> None:
    page.wait_for_function(
        """selector => {
            const all = Array.from(document.querySelectorAll(selector));
            return all.length > 0 && all.every(v => v.dataset.state === 'full');
        }""",
        arg=selector,
        timeout=30_000,
    )


def single(page: Page) -> None:
    """The active image alone in the viewer (single layout), drawn at full resolution."""
    if page.get_attribute("#viewports", "data-layout") != "single":
        page.click("#layout-single")
        page.wait_for_selector("#viewports[data-layout=single]")
    wait_full(page)


def canvas_pixels(page: Page, selector: str = ".viewport[data-active=true] canvas") -> np.ndarray:
    shot = page.locator(selector).first.screenshot()
    return np.asarray(Image.open(io.BytesIO(shot)).convert("L"), dtype=np.float64)


def transform(page: Page, selector: str = ".viewport[data-active=true]") -> list[float]:
    text = page.get_attribute(selector, "data-transform") or ""
    values = [float(v) for v in text.split(",")]
    assert len(values) == 6, text
    return values


def screen_point(page: Page, x: float, y: float) -> tuple[float, float]:
    """The page coordinates of image pixel (column x, row y)'s centre in the active viewport."""
    a, b, c, d, e, f = transform(page)
    box = page.locator(".viewport[data-active=true] canvas").bounding_box()
    assert box is not None
    cx, cy = x + 0.5, y + 0.5
    return box["x"] + a * cx + c * cy + e, box["y"] + b * cx + d * cy + f


def drag(page: Page, start: tuple[float, float], end: tuple[float, float], steps: int = 8) -> None:
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(*end, steps=steps)
    page.mouse.up()


def canvas_centre(
    page: Page, selector: str = ".viewport[data-active=true] canvas"
) -> tuple[float, float]:
    box = page.locator(selector).first.bounding_box()
    assert box is not None
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


def audit(site: Site, **query: Any) -> list[AuditEvent]:
    return site.running.archive.index.find_audit_events(AuditQuery(limit=2000, **query))


def no_failures(traffic: Traffic) -> None:
    failed = [a for a in traffic.answers if a[2] >= 400]
    assert not failed, traffic.report()
    refused = [line for line in traffic.console if "Content Security Policy" in line]
    assert not refused, "\n".join(refused)


def test_search_timeline_and_study(site: Site, page: Page, traffic: Traffic) -> None:
    base = site.running.base_url
    page.goto(f"{base}/")
    page.fill("form.search #patient_id", PATIENT_ID)
    page.click("form.search button[type=submit]")
    page.click("a.patient-link")
    page.wait_for_url(re.compile(r".*/patients/\d+$"))
    days = page.locator("#timeline .timeline-day")
    assert days.count() >= 3, page.inner_text("#timeline")
    cards = page.locator("#timeline .timeline-day .study-card")
    assert cards.count() == 4, page.inner_text("#timeline")
    photo = page.locator("#timeline .timeline-day .photo-card")
    assert photo.count() == 1, page.inner_text("#timeline")
    links = page.locator(f'.study-card a[href^="/studies/"][href="/studies/{site.fmx_uid}"]')
    assert links.count() == 1
    links.first.click()
    page.wait_for_url(f"{base}/studies/{site.fmx_uid}")
    wait_ready(page, traffic)
    wait_full(page)
    assert not [u for _, u, _ in traffic.answers if PATIENT_ID in u], traffic.report()
    assert any(m == "POST" and "/search" in u for m, u, _ in traffic.answers), traffic.report()
    documents = [u for _, u, _ in traffic.answers if u.endswith(f"/{site.fmx_uid}/viewer")]
    assert len(documents) == 1, "the preloaded study document is the one the script uses"
    assert not traffic.console, traffic.report()
    no_failures(traffic)


def test_pixels_are_shown_and_the_window_tool_changes_them(
    site: Site, page: Page, traffic: Traffic
) -> None:
    open_study(page, site.running.base_url, site.fmx_uid, traffic)
    single(page)
    before = canvas_pixels(page)
    assert before.std() > 10, f"the canvas is (nearly) blank: std {before.std():.1f}"
    window = page.get_attribute(".viewport[data-active=true]", "data-window")
    renders = int(page.get_attribute(".viewport[data-active=true]", "data-renders") or "0")
    assert page.get_attribute("#tool-window", "aria-pressed") == "true"
    x, y = canvas_centre(page)
    drag(page, (x, y), (x - 150, y + 120))
    page.wait_for_function(
        "w => document.querySelector('.viewport[data-active=true]').dataset.window !== w",
        arg=window,
    )
    after = canvas_pixels(page)
    assert np.abs(after - before).mean() > 3, "the window change did not change the pixels"
    assert int(page.get_attribute(".viewport[data-active=true]", "data-renders") or "0") > renders
    no_failures(traffic)


def test_length_on_the_calibrated_ruler_and_pixels_when_uncalibrated(
    site: Site, page: Page, traffic: Traffic
) -> None:
    base = site.running.base_url
    open_study(page, base, site.ruler_uid, traffic)
    single(page)
    assert "0.100 mm" in page.inner_text("#calibration"), page.inner_text("#calibration")
    page.click("#tool-length")
    (x0, y0), (x1, y1) = RULER_MARKS[0], RULER_MARKS[1]
    drag(page, screen_point(page, x0, y0), screen_point(page, x1, y1))
    item = page.locator("#measurements li[data-kind=length]")
    item.first.wait_for(timeout=5_000)
    value = float(item.first.get_attribute("data-value") or "nan")
    assert abs(value - 50.0) <= 0.25, (value, item.first.inner_text())
    assert "mm" in item.first.inner_text()

    open_study(page, base, site.uncalibrated_uid, traffic)
    single(page)
    calibration = page.inner_text("#calibration")
    assert "ikke kalibrert" in calibration.lower(), calibration  # a Norwegian clinic's browser
    page.click("#tool-length")
    x, y = canvas_centre(page)
    drag(page, (x - 100, y), (x + 100, y))
    item = page.locator("#measurements li[data-kind=length]")
    item.first.wait_for(timeout=5_000)
    assert item.first.get_attribute("data-value") == ""
    assert "px" in item.first.inner_text(), item.first.inner_text()
    no_failures(traffic)


def test_full_mouth_mount_and_comparison_with_the_prior(
    site: Site, page: Page, traffic: Traffic
) -> None:
    open_study(page, site.running.base_url, site.fmx_uid, traffic)
    assert page.get_attribute("#viewports", "data-layout") == "fmx"
    viewports = page.locator("#viewports .viewport[data-image-id]")
    assert viewports.count() == 18
    shown = set(viewports.evaluate_all("vs => vs.map(v => v.dataset.imageId)"))
    assert shown == set(site.fmx_sops)
    wait_full(page, "#viewports .viewport")

    def place(sop: str) -> list[str]:
        found: list[str] = page.eval_on_selector(
            f'.viewport[data-image-id="{sop}"]', "v => [v.style.gridRow, v.style.gridColumn]"
        )
        return found

    # Instance 5 is the upper right molar periapical (16-18): row 0, column 0 of the mount;
    # instance 1 the right molar bitewing: row 1, column 1; instance 12 (lower right molar
    # 46-48) row 2, column 0; instance 11 (upper left molar 26-28) row 0, column 6.
    assert place(site.fmx_sops[4]) == ["1", "1"]
    assert place(site.fmx_sops[0]) == ["2", "2"]
    assert place(site.fmx_sops[11]) == ["3", "1"]
    assert place(site.fmx_sops[10]) == ["1", "7"]

    page.click(f'.viewport[data-image-id="{site.fmx_sops[4]}"] canvas')
    page.wait_for_selector(f'.viewport[data-image-id="{site.fmx_sops[4]}"][data-active=true]')
    assert page.is_enabled("#compare-prior"), "the prior series is not offered"
    page.click("#compare-prior")
    page.wait_for_selector("#viewports[data-layout=compare]")
    pair = page.locator("#viewports .viewport")
    assert pair.count() == 2
    wait_full(page, "#viewports .viewport")
    ids = pair.evaluate_all("vs => vs.map(v => v.dataset.imageId)")
    assert site.fmx_sops[4] in ids and len(set(ids)) == 2, ids
    before = pair.evaluate_all("vs => vs.map(v => v.dataset.transform)")
    page.mouse.move(*canvas_centre(page, "#viewports .viewport canvas"))
    page.mouse.wheel(0, -240)
    page.wait_for_function(
        """before => {
            const now = Array.from(document.querySelectorAll('#viewports .viewport'))
                .map(v => v.dataset.transform);
            return now.every((t, i) => t !== before[i]);
        }""",
        arg=before,
        timeout=5_000,
    )
    after = pair.evaluate_all("vs => vs.map(v => v.dataset.transform)")
    assert after[0] == after[1], after  # the same size, the same display: the same transform
    no_failures(traffic)


def test_rotate_flip_invert_and_reset(site: Site, page: Page, traffic: Traffic) -> None:
    open_study(page, site.running.base_url, site.ruler_uid, traffic)
    single(page)
    original = transform(page)
    pixels = canvas_pixels(page)

    def changed(previous: list[float]) -> list[float]:
        page.wait_for_function(
            """previous => {
                const now = document.querySelector('.viewport[data-active=true]').dataset.transform;
                return now.split(',').some((v, i) => Math.abs(Number(v) - previous[i]) > 1e-3);
            }""",
            arg=previous,
            timeout=5_000,
        )
        now = transform(page)
        assert now != previous, previous
        return now

    page.click("#rotate")
    rotated = changed(original)
    a, b, c, d = rotated[:4]
    assert abs(a) < 1e-6 and abs(d) < 1e-6 and b * c < 0, rotated  # 90°: x goes down the screen
    page.click("#flip-h")
    flipped = changed(rotated)
    page.click("#flip-v")
    changed(flipped)
    page.click("#invert")
    inverted = canvas_pixels(page)
    assert inverted.shape != pixels.shape or np.abs(inverted - pixels).mean() > 10
    page.click("#reset")
    page.wait_for_function(
        """original => {
            const now = document.querySelector('.viewport[data-active=true]').dataset.transform;
            return now.split(',').every((v, i) => Math.abs(Number(v) - original[i]) < 1e-3);
        }""",
        arg=original,
        timeout=5_000,
    )
    assert np.allclose(transform(page), original, atol=1e-3), (transform(page), original)
    back = canvas_pixels(page)
    assert back.shape == pixels.shape and np.abs(back - pixels).mean() < 2
    no_failures(traffic)


def test_another_county_must_break_the_glass(site: Site, traffic: Traffic) -> None:
    base = site.running.base_url
    context = site.browser.new_context(viewport={"width": 1400, "height": 900}, locale="nb-NO")
    try:
        page = context.new_page()
        traffic.watch(page)
        sign_in(page, base, OTHER)
        answer = page.goto(f"{base}/studies/{site.fmx_uid}")
        assert answer is not None
        text = page.inner_text("main") if page.locator("main").count() else page.content()
        viewer_state = (
            page.get_attribute("#viewer", "data-state") if page.locator("#viewer").count() else None
        )
        if viewer_state is None:
            assert answer.status == 403, answer.status
            assert "bryte glasset" in text or "break the glass" in text, text
        else:
            page.wait_for_selector("#viewer[data-state=error]")
            assert "glass" in page.inner_text("#viewer-error"), page.inner_text("#viewer-error")
        document = page.request.get(f"{base}/api/studies/{site.fmx_uid}/viewer")
        assert document.status in (403, 404), document.status
        assert "glass" in document.text(), document.text()
        assert not [u for _, u, _ in traffic.answers if FRAMES.search(u)], traffic.report()
        refused = [
            e for e in audit(site, actor=OTHER) if site.fmx_uid in e.study_uids and e.outcome != 0
        ]
        assert refused, "the refused read is not in the audit log"

        # Break the glass from the refusal page (or the search page), then the study opens.
        if page.locator("form[action='/break-glass'] select#reason").count():
            form = "form[action='/break-glass']"
        else:
            page.goto(f"{base}/")
            page.fill("form.search #patient_id", PATIENT_ID)
            page.click("form.search button[type=submit]")
            form = "form[action='/break-glass']"
        reasons = page.eval_on_selector_all(
            f"{form} select#reason option", "os => os.map(o => o.value).filter(v => v)"
        )
        page.select_option(f"{form} select#reason", reasons[0])
        page.click(f"{form} button[type=submit]")
        page.wait_for_load_state()
        if not page.url.endswith(f"/studies/{site.fmx_uid}"):
            page.goto(f"{base}/studies/{site.fmx_uid}")
        wait_ready(page, traffic)
        wait_full(page)
    finally:
        context.close()
    served = [a for a in traffic.answers if FRAMES.search(a[1])]
    assert served and all(status == 200 for _, _, status in served), traffic.report()


def test_the_reads_are_audited_under_the_clinician(
    site: Site, page: Page, traffic: Traffic
) -> None:
    open_study(page, site.running.base_url, site.uncalibrated_uid, traffic)
    wait_full(page)
    events = [e for e in audit(site, actor=USER) if site.uncalibrated_uid in e.study_uids]
    purposes = {str(e.details.get("purpose")) for e in events}
    assert any("metadata" in p or "viewer" in p for p in purposes), purposes
    assert "frames" in purposes, purposes
    assert all(e.outcome == 0 for e in events), [e for e in events if e.outcome]
    assert all(PATIENT_ID in e.patient_ids for e in events)
