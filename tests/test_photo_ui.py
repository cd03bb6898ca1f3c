"""The clinician's photo pages driven in headless Chromium, as a clinic uses them: sign in on the
login form, upload a before-treatment photo through the upload page (a real JPEG, with upload
progress), follow the link to the patient's gallery and see the thumbnail, upload the
after-treatment photo from the gallery's own upload link, tick both and compare them, zoom one
with the mouse wheel and see the other follow. Every request the pages made was answered, no
Content-Security-Policy refusal, and the comparison read each photo under the clinician's name.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import FilePayload, Page, sync_playwright

from arkiv.audit import Actor
from storage.records import AuditQuery
from tests.browser import Traffic, chromium, sign_in
from tests.conftest import RunningArchive, _start_archive
from tests.dicom_factory import Spec, encode, make_dataset, synthetic_national_id
from tests.media_factory import mp4

USER = "tannlege"
PATIENT_ID = synthetic_national_id(date(1988, 5, 17), 120)
SENSOR = Actor(name="SENSOR", kind="dicom-ae", county="vestfold", address="127.0.0.1")
ACCESSED = "110103"


def clinic_photo(seed: int) -> bytes:
    """A colourful 800×600 JPEG as a clinic camera makes it (gradients and a bright patch), so
    that thumbnails, renditions and screenshots have something to show."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:600, 0:800]
    pixels = np.stack(
        [(x * 255 // 800), (y * 255 // 600), ((x + y + seed * 40) % 256)], axis=-1
    ).astype(np.uint8)
    top, left = rng.integers(50, 350), rng.integers(50, 500)
    pixels[top : top + 150, left : left + 200] = (230, 40 + 30 * seed, 60)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture
def running(tmp_path: Path) -> Iterator[RunningArchive]:
    """An archive that knows the patient (one intra-oral X-ray) and has one clinician."""
    for archive in _start_archive(tmp_path / "data"):
        spec = Spec(patient_id=PATIENT_ID, patient_name="Berg^Ingrid", birth_date="19880517")
        archive.archive.ingest.ingest_dicom(encode(make_dataset(spec)), SENSOR)
        archive.add_user(USER).close()
        yield archive


def upload(page: Page, traffic: Traffic, category: str, name: str, data: bytes) -> None:
    """Fill the form (the national ID only if the page did not), choose the file, upload it
    and wait for its progress bar to complete."""
    if not page.input_value("#patient_id"):
        page.fill("#patient_id", PATIENT_ID)
    page.select_option("#category", category)
    page.set_input_files("#files", files=[file(name, "image/jpeg", data)])
    item = page.locator(".upload-item")
    assert item.count() == 1 and name in item.inner_text()
    page.click("#upload-button")
    page.wait_for_selector('.upload-item[data-state="done"], .upload-item[data-state="failed"]')
    if item.get_attribute("data-state") != "done":
        pytest.fail(f"the upload failed: {item.inner_text()}\n{traffic.report()}")
    progress = page.eval_on_selector(".upload-item progress", "p => [p.value, p.max]")
    assert progress == [1, 1], progress
    assert "Lagret" in item.inner_text()
    page.wait_for_selector("#upload-done:not([hidden])")


def file(name: str, media_type: str, data: bytes) -> FilePayload:
    return {"name": name, "mimeType": media_type, "buffer": data}


def images_loaded(page: Page, selector: str, count: int) -> None:
    page.wait_for_function(
        """([selector, count]) => {
            const images = Array.from(document.querySelectorAll(selector));
            return images.length === count && images.every(i => i.complete && i.naturalWidth > 0);
        }""",
        arg=[selector, count],
        timeout=30_000,
    )


def transforms(page: Page) -> list[str]:
    """Each compared image's transform as the browser applies it (a matrix)."""
    result: list[str] = page.eval_on_selector_all(
        ".compare-image", "images => images.map(i => getComputedStyle(i).transform)"
    )
    return result


def test_a_clinician_uploads_sees_and_compares_photos(running: RunningArchive) -> None:
    base = running.base_url
    traffic = Traffic(base)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            traffic.watch(page)
            sign_in(page, base, USER)

            # The first photo, from the menu's upload page, dated by the form (it has no EXIF).
            page.click("nav >> text=Last opp foto")
            page.wait_for_url(f"{base}/photos/upload")
            page.fill("#teeth", "11 21")
            page.fill("#taken_at", "2026-01-15T09:30")
            upload(page, traffic, "before-treatment", "foer.jpg", clinic_photo(1))

            page.click("#gallery-link")
            page.wait_for_url(re.compile(r".*/patients/\d+/photos$"))
            gallery = page.url
            assert "Berg, Ingrid" in page.inner_text(".patient-header")
            assert PATIENT_ID not in gallery, "a national ID in a URL"
            images_loaded(page, "img.photo-thumb", 1)
            card = page.inner_text(".photo-card")
            assert "Før behandling" in card and "Tann 11 21" in card and "09:30" in card

            # The second photo, from the gallery's upload link: the form knows the patient.
            page.click("text=Last opp foto for denne pasienten")
            page.wait_for_url(re.compile(r".*/photos/upload\?patient=\d+$"))
            assert page.input_value("#patient_id") == PATIENT_ID
            upload(page, traffic, "after-treatment", "etter.jpg", clinic_photo(2))
            page.click("#gallery-link")
            page.wait_for_url(gallery)
            images_loaded(page, "img.photo-thumb", 2)
            days = page.locator(".photo-day h2").all_inner_texts()
            assert len(days) == 2 and days[1] == "15.01.2026", days  # the newest day first

            # The category filter is applied by the server.
            page.select_option("#category", "after-treatment")
            page.click(".photo-filters button[type=submit]")
            page.wait_for_url(re.compile(r".*category=after-treatment.*"))
            assert page.locator(".photo-card").count() == 1
            assert "Etter behandling" in page.inner_text(".photo-card")

            # The patient search (a form POST, like every browser sends it) leads to the gallery.
            page.click("nav >> text=Pasientsøk")
            page.fill("form.search #patient_id", PATIENT_ID)
            page.click("form.search button[type=submit]")
            page.click("section.patient >> text=Foto")
            page.wait_for_url(gallery)

            # Tick both, compare.
            assert page.is_disabled("#compare-button")
            boxes = page.locator(".photo-card input[type=checkbox]")
            boxes.nth(0).check()
            boxes.nth(1).check()
            assert page.is_enabled("#compare-button")
            page.click("#compare-button")
            page.wait_for_url(re.compile(r".*/photos/compare\?a=[0-9a-f]{32}&b=[0-9a-f]{32}$"))
            images_loaded(page, ".compare-image", 2)
            captions = page.locator(".compare-side figcaption").all_inner_texts()
            assert "Før behandling" in captions[0] and "Etter behandling" in captions[1], captions

            # The wheel on the left image zooms both alike.
            before = transforms(page)
            assert before[0] == before[1], before
            box = page.locator("#image-1").bounding_box()
            assert box is not None
            page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            page.mouse.wheel(0, -120)
            page.wait_for_function(
                "() => document.getElementById('image-1').style.transform.includes('scale(1.1')"
            )
            zoomed = transforms(page)
            assert zoomed[0] != before[0], (before, zoomed)
            assert zoomed[0] == zoomed[1], zoomed
            # Dragging the right image pans both; 0 on the keyboard resets.
            right = page.locator("#image-2").bounding_box()
            assert right is not None
            page.mouse.move(right["x"] + right["width"] / 2, right["y"] + right["height"] / 2)
            page.mouse.down()
            page.mouse.move(right["x"] + right["width"] / 2 + 60, right["y"] + right["height"] / 2)
            page.mouse.up()
            panned = transforms(page)
            assert panned[0] == panned[1] != zoomed[0], (zoomed, panned)
            page.keyboard.press("0")
            reset = transforms(page)
            assert reset[0] == reset[1] and reset[0] in ("none", "matrix(1, 0, 0, 1, 0, 0)")

            page.keyboard.press("+")
            shot = Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("RGB")
        finally:
            browser.close()

    colours = shot.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 200, "the screenshot is (nearly) blank"
    refused = [line for line in traffic.console if "Content Security Policy" in line]
    assert not refused, "\n".join(refused)
    failed = [answer for answer in traffic.answers if answer[2] >= 400]
    assert not failed, traffic.report()

    events = running.archive.index.find_audit_events(AuditQuery(actor=USER, limit=1000))
    compared = [
        e.details.get("photo_id")
        for e in events
        if e.event_id == ACCESSED and e.details.get("purpose") == "photo compare"
    ]
    shown = re.findall(r"[0-9a-f]{32}", "".join(url for _, url, _ in traffic.answers))
    assert len(set(compared)) == 2 and set(compared) <= set(shown), compared
    assert all(e.outcome == 0 for e in events), [e for e in events if e.outcome]
    assert all(PATIENT_ID in e.patient_ids for e in events if e.event_id == ACCESSED)


def test_a_refused_file_shows_its_reason_and_a_video_plays_in_ranges(
    running: RunningArchive, tmp_path: Path
) -> None:
    base = running.base_url
    traffic = Traffic(base)
    clip = mp4(tmp_path / "klipp", seconds=2, location=False)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            traffic.watch(page)
            sign_in(page, base, USER)
            page.goto(f"{base}/photos/upload")
            page.fill("#patient_id", PATIENT_ID)
            page.select_option("#category", "intraoral")
            page.set_input_files(
                "#files",
                files=[
                    file("tann.jpg", "image/jpeg", b"this is a letter, not a photo\n" * 40),
                    file("klipp.mp4", "video/mp4", clip),
                ],
            )
            page.click("#upload-button")
            page.wait_for_function(
                """() => Array.from(document.querySelectorAll('.upload-item'))
                    .every(i => i.dataset.state === 'done' || i.dataset.state === 'failed')""",
                timeout=120_000,
            )
            items = page.locator(".upload-item")
            refused, video = items.nth(0), items.nth(1)
            assert refused.get_attribute("data-state") == "failed", traffic.report()
            reason = refused.locator(".status").inner_text()
            assert reason and not reason.startswith("Feil "), reason  # the API's own reason
            assert video.get_attribute("data-state") == "done", video.inner_text()

            page.click("#gallery-link")
            page.wait_for_url(re.compile(r".*/patients/\d+/photos$"))
            player = page.locator(".photo-card video")
            assert player.count() == 1
            assert player.get_attribute("preload") == "metadata"
            photo_id = (player.get_attribute("src") or "").split("/")[3]
            assert player.get_attribute("poster") == f"/api/photos/{photo_id}/web"
            assert page.locator(".photo-card input[type=checkbox]").count() == 0
            page.wait_for_function(
                "() => document.querySelector('.photo-card video').readyState >= 1",
                timeout=30_000,
            )
            duration = page.eval_on_selector(".photo-card video", "v => v.duration")
            assert 1.5 < duration < 2.5, duration
            page.eval_on_selector(
                ".photo-card video",
                """v => new Promise(done => {
                    v.addEventListener('seeked', () => done(), { once: true });
                    v.currentTime = 1.5;
                })""",
            )
        finally:
            browser.close()

    served = [a for a in traffic.answers if a[1].endswith(f"/api/photos/{photo_id}/video")]
    assert served and all(status == 206 for _, _, status in served), traffic.report()
    failed = [a for a in traffic.answers if a[2] >= 400 and not a[1].endswith("/api/photos")]
    assert not failed, traffic.report()
