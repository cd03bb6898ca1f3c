"""The clinician's pages, and the admin's patient reconciliation page, checked against WCAG 2.1
A and AA with axe-core (the rules engine browsers' own accessibility tools use), in headless
Chromium: labels on every control, names on every image and button, sufficient colour contrast,
landmarks, valid ARIA. A violation names the rule and the elements, so the failure says what to
fix.

axe-core comes from npm (tests/axe, pinned, installed by .ci/install-node-packages); the pages'
CSP would refuse the injected script, so this one browser context bypasses CSP (the CSP itself
is checked by the other browser tests, which do not).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, sync_playwright

from arkiv.accounts import Role
from arkiv.audit import Actor
from arkiv.counties import County
from tests.browser import chromium, sign_in
from tests.conftest import PASSWORD, RunningArchive, _start_archive
from tests.dicom_factory import Spec, encode, make_dataset, synthetic_national_id

AXE = Path(__file__).parent / "axe" / "node_modules" / "axe-core" / "axe.min.js"
PATIENT = synthetic_national_id(date(1990, 8, 14), 150)
OTHER = synthetic_national_id(date(1972, 2, 9), 260)
SENSOR = Actor(name="SENSOR", kind="dicom-ae", county="vestfold", address="127.0.0.1")
TELEMARK = Actor(name="SENSOR", kind="dicom-ae", county="telemark", address="127.0.0.1")
WCAG = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningArchive]:
    for archive in _start_archive(tmp_path_factory.mktemp("a11y") / "data"):
        for n, day in enumerate(("20240212", "20250303")):
            spec = Spec(
                patient_id=PATIENT,
                patient_name="Ås^Mari",
                birth_date="19900814",
                study_date=day,
                rows=200,
                columns=300,
                seed=n,
            )
            archive.archive.ingest.ingest_dicom(encode(make_dataset(spec)), SENSOR)
        other = Spec(patient_id=OTHER, patient_name="Moe^Per", birth_date="19720209")
        archive.archive.ingest.ingest_dicom(encode(make_dataset(other)), TELEMARK)
        # the same man under another spelling in Vestfold: a conflict for the admin's page
        misspelt = Spec(patient_id=OTHER, patient_name="Moen^Per", birth_date="19720209")
        archive.archive.ingest.ingest_dicom(encode(make_dataset(misspelt)), SENSOR)
        archive.archive.accounts.add_user("tannlege", PASSWORD, Role.CLINICIAN, County.VESTFOLD)
        archive.archive.accounts.add_user("admin", PASSWORD, Role.ADMIN, County.VESTFOLD)
        yield archive


def violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's WCAG 2.1 A/AA violations on the page as it stands."""
    if not AXE.is_file():
        pytest.fail(f"{AXE} is missing: run .ci/install-node-packages")
    page.add_script_tag(path=str(AXE))
    result: list[dict[str, Any]] = page.evaluate(
        "tags => axe.run(document, {runOnly: {type: 'tag', values: tags}})"
        ".then(r => r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,"
        " nodes: v.nodes.slice(0, 5).map(n => n.target.join(' '))})))",
        WCAG,
    )
    return result


def assert_accessible(page: Page, what: str) -> None:
    found = violations(page)
    assert not found, f"{what}: " + json.dumps(found, ensure_ascii=False, indent=1)


def test_the_clinicians_pages_meet_wcag_21_aa(running: RunningArchive) -> None:
    base = running.base_url
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            context = browser.new_context(bypass_csp=True, viewport={"width": 1280, "height": 900})
            page = context.new_page()
            page.goto(f"{base}/login")
            assert_accessible(page, "login")
            sign_in(page, base, "tannlege")
            assert_accessible(page, "search")

            page.fill("form.search #patient_id", PATIENT)
            page.click("form.search button[type=submit]")
            page.wait_for_selector("a.patient-link")
            assert_accessible(page, "search results")

            page.click("a.patient-link")
            page.wait_for_selector("#timeline .study-card")
            assert_accessible(page, "patient page")

            page.click(".study-card a.study-link >> nth=0")
            page.wait_for_selector('#viewer[data-state="ready"]')
            page.wait_for_selector('.viewport[data-state="full"]')
            assert_accessible(page, "viewer")

            page.goto(f"{base}/photos/upload")
            assert_accessible(page, "photo upload")

            page.goto(f"{base}/")
            page.fill("form.search #patient_id", OTHER)
            page.click("form.search button[type=submit]")
            page.wait_for_selector("section.break-glass")
            assert_accessible(page, "break the glass offer")
        finally:
            browser.close()


def test_the_admins_patient_reconciliation_page_meets_wcag_21_aa(running: RunningArchive) -> None:
    base = running.base_url
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            context = browser.new_context(bypass_csp=True, viewport={"width": 1280, "height": 900})
            page = context.new_page()
            sign_in(page, base, "admin", start="/admin")
            page.goto(f"{base}/admin/patients/conflicts")
            page.wait_for_selector("text=Moen^Per")
            assert_accessible(page, "patient reconciliation")
        finally:
            browser.close()
