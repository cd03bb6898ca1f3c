"""Clinician viewer benchmark: the time from clicking a study to its first full-resolution image.

Run from the project root::

    .venv/bin/python -m bench.viewer                       # 10 rounds, embedded and scale-out
    .venv/bin/python -m bench.viewer --rounds 1 --peers embedded

The archive holds one patient with an 18-image full-mouth series (1000×1300 and 1300×1000,
16-bit) and a panoramic (1500×2900, 16-bit), loaded before ``arkiv serve`` starts. Headless
Chromium (the Debian package) signs in over loopback, then per study and round, in a fresh
browser context (a cold cache, as the first look at a study is): open the patient page, click the
study, and read the viewer's performance marks ``arkiv:thumbnail-shown`` and ``arkiv:first-full``
(milliseconds from navigation start, which is the click). It prints the median and 90th
percentile per study and peer, then the window/level frame rate on the panoramic: the window
tool dragged across the image in 120 mouse moves, counting the viewport's redraws
(``data-renders``) and the page's animation frames; ms per redraw is the median of the page's
``arkiv:render`` measures. The aim is under 500 ms to the first full image.

The peers (``--peers``): ``embedded`` (SQLite and files) and ``scaleout`` (PostgreSQL + MinIO the
benchmark starts; left out when those are not installed, as bench.photos decides).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, Page, sync_playwright
from rich.console import Console
from rich.table import Table

from arkiv.accounts import Role
from arkiv.audit import Actor
from arkiv.config import Settings
from arkiv.counties import County
from arkiv.services import Archive
from bench.peers import LOCALHOST, ArkivPeer, Peer, PeerError, stop_all
from bench.scaleout import ScaleoutBackend, ScaleoutPeer
from tests.browser import sign_in
from tests.dental_images import full_mouth_series, panoramic
from tests.dicom_factory import Spec, encode, synthetic_national_id

console = Console(width=150)
USER, PASSWORD = "bench-tannlege", "bench-password-1"
CHROMIUM = Path("/usr/bin/chromium")
PATIENT_ID = synthetic_national_id(date(1979, 6, 2), 140)
RESULTS = Path(__file__).parent / "results" / "viewer.json"
AIM_MS = 500.0


class BenchViewerError(RuntimeError):
    """The benchmark could not be set up or the viewer answered wrongly."""


@dataclass
class Studies:
    fmx: str = ""
    panoramic: str = ""


def prepare_archive(settings: Settings, studies: Studies) -> None:
    """A clinician, and the patient's full-mouth series and panoramic."""
    archive = Archive(settings)
    try:
        archive.accounts.add_user(USER, PASSWORD, Role.CLINICIAN, County.VESTFOLD)
        actor = Actor(name="BENCH", kind="dicom-ae", county=County.VESTFOLD.value)
        patient = Spec(patient_id=PATIENT_ID, patient_name="Viewer^Bench", birth_date="19790602")
        series = full_mouth_series(patient, study_date="20250314")
        pano = panoramic(patient)
        pano.StudyDate = "20250310"
        for ds in (*series, pano):
            archive.ingest.ingest_dicom(encode(ds), actor)
        studies.fmx = str(series[0].StudyInstanceUID)
        studies.panoramic = str(pano.StudyInstanceUID)
    finally:
        archive.close()


class ViewerArkivPeer(ArkivPeer):
    def __init__(self, executable: Path, studies: Studies, timeout: float) -> None:
        super().__init__(executable, timeout, name="embedded")
        self.studies = studies

    def prepare(self, run_dir: Path) -> None:
        prepare_archive(Settings(data_dir=run_dir / "data"), self.studies)


class ViewerScaleoutPeer(ScaleoutPeer):
    def __init__(
        self, executable: Path, backend: ScaleoutBackend, studies: Studies, timeout: float
    ) -> None:
        super().__init__(executable, backend, timeout, name="scaleout")
        self.studies = studies

    def prepare(self, run_dir: Path) -> None:
        super().prepare(run_dir)
        prepare_archive(self.archive_settings(run_dir), self.studies)


@dataclass
class Timings:
    peer: str
    study: str
    first_full_ms: list[float] = field(default_factory=list)
    thumbnail_ms: list[float] = field(default_factory=list)
    thumbnail_marks_missing: int = 0

    def add(self, first: float | None, thumb: float | None) -> None:
        if first is None:
            raise BenchViewerError("no arkiv:first-full mark")
        self.first_full_ms.append(float(first))
        # A full image drawn before any thumbnail: the thumbnail took as long as the image.
        self.thumbnail_ms.append(float(thumb if thumb is not None else first))
        self.thumbnail_marks_missing += thumb is None

    def row(self) -> dict[str, Any]:
        return {
            "peer": self.peer,
            "study": self.study,
            "rounds": len(self.first_full_ms),
            "first_full_median_ms": statistics.median(self.first_full_ms),
            "first_full_p90_ms": p90(self.first_full_ms),
            "thumbnail_median_ms": statistics.median(self.thumbnail_ms),
            "thumbnail_p90_ms": p90(self.thumbnail_ms),
            "thumbnail_marks_missing": self.thumbnail_marks_missing,
            "first_full_ms": self.first_full_ms,
            "thumbnail_ms": self.thumbnail_ms,
        }


def p90(values: list[float]) -> float:
    """The 90th percentile by nearest rank (the largest of fewer than ten values)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


def patient_page(page: Page, base: str) -> str:
    """The patient page's URL, found as a clinician finds it: the search form (a POST)."""
    page.fill("form.search #patient_id", PATIENT_ID)
    page.click("form.search button[type=submit]")
    href = page.get_attribute("a.patient-link", "href")
    if not href:
        raise BenchViewerError(f"the search found no patient: {page.inner_text('main')[:300]}")
    return f"{base}{href}"


_MARKS = """() => {
    const first = performance.getEntriesByName('arkiv:first-full')[0];
    const thumb = performance.getEntriesByName('arkiv:thumbnail-shown')[0];
    return [first ? first.startTime : null, thumb ? thumb.startTime : null];
}"""


def open_study(browser: Browser, base: str, patient_url: str, study_uid: str) -> Page:
    """A fresh context, signed in, on the patient page; the study clicked and its first
    full image drawn. The page is returned open (its context is closed by the caller)."""
    context = browser.new_context(viewport={"width": 1600, "height": 1000}, locale="nb-NO")
    page = context.new_page()
    sign_in(page, base, USER, PASSWORD)
    click_study(page, patient_url, study_uid)
    return page


def click_study(page: Page, patient_url: str, study_uid: str) -> None:
    """From the patient page, click the study and wait for its first full image."""
    page.goto(patient_url)
    page.click(f'.study-card a[href="/studies/{study_uid}"]')
    page.wait_for_function(
        """() => performance.getEntriesByName('arkiv:first-full').length > 0
            || document.querySelector('#viewer[data-state=error]')""",
        timeout=60_000,
    )
    if page.get_attribute("#viewer", "data-state") == "error":
        raise BenchViewerError(f"the viewer failed: {page.inner_text('#viewer-error')}")


def measure_opening(
    browser: Browser, base: str, patient_url: str, peer: str, name: str, uid: str, rounds: int
) -> list[Timings]:
    """Per round, the first look in a fresh browser context (nothing cached: the first study a
    clinician opens after starting the browser) and the next look in the same context (the
    viewer's script and styles cached, the connection open: every study after that)."""
    cold, warm = Timings(peer, name), Timings(peer, f"{name} (cached)")
    for _ in range(rounds):
        page = open_study(browser, base, patient_url, uid)
        try:
            cold.add(*page.evaluate(_MARKS))
            click_study(page, patient_url, uid)
            warm.add(*page.evaluate(_MARKS))
        finally:
            page.context.close()
    return [cold, warm]


_RAF_START = """() => {
    window.__benchFrames = 0;
    window.__benchRunning = true;
    const tick = () => {
        window.__benchFrames += 1;
        if (window.__benchRunning) requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
    const vp = document.querySelector('.viewport[data-active=true]')
        || document.querySelector('.viewport');
    return [performance.now(), Number(vp.dataset.renders || 0)];
}"""

_RAF_STOP = """(since) => {
    window.__benchRunning = false;
    const vp = document.querySelector('.viewport[data-active=true]')
        || document.querySelector('.viewport');
    const renders = performance.getEntriesByName('arkiv:render')
        .filter(e => e.startTime >= since).map(e => e.duration);
    return [performance.now(), Number(vp.dataset.renders || 0), window.__benchFrames, renders];
}"""


def measure_window(
    browser: Browser, base: str, patient_url: str, peer: str, uid: str, steps: int = 120
) -> dict[str, Any]:
    """Drag the window tool across the panoramic in `steps` moves; redraws per second."""
    page = open_study(browser, base, patient_url, uid)
    try:
        page.wait_for_selector(".viewport[data-state=full]")
        if page.get_attribute("#tool-window", "aria-pressed") != "true":
            page.click("#tool-window")
        box = page.locator(".viewport[data-state=full] canvas").first.bounding_box()
        if box is None:
            raise BenchViewerError("the panoramic's canvas is not visible")
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        started, renders_before = page.evaluate(_RAF_START)
        page.mouse.move(x, y)
        page.mouse.down()
        page.mouse.move(
            x + min(400, box["width"] / 3), y + min(200, box["height"] / 3), steps=steps
        )
        page.mouse.up()
        page.wait_for_timeout(50)
        ended, renders_after, frames, durations = page.evaluate(_RAF_STOP, started)
    finally:
        page.context.close()
    elapsed_s = max((float(ended) - float(started)) / 1000, 1e-6)
    renders = int(renders_after) - int(renders_before)
    if renders <= 0:
        raise BenchViewerError("dragging the window tool did not redraw the panoramic")
    per_render = (
        statistics.median(float(d) for d in durations) if durations else elapsed_s * 1000 / renders
    )
    return {
        "peer": peer,
        "moves": steps,
        "elapsed_s": elapsed_s,
        "renders": renders,
        "renders_per_s": renders / elapsed_s,
        "animation_frames_per_s": int(frames) / elapsed_s,
        "ms_per_render_median": per_render,
        "ms_per_render_source": "arkiv:render measures" if durations else "elapsed / renders",
    }


def print_tables(rows: list[dict[str, Any]], window: list[dict[str, Any]]) -> None:
    table = Table(title=f"viewer: click to first full image (aim < {AIM_MS:.0f} ms)")
    for column in ("peer", "study", "rounds", "first full median ms", "first full p90 ms",
                   "thumbnail median ms", "thumbnail p90 ms"):  # fmt: skip
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            row["peer"], row["study"], str(row["rounds"]),
            f"{row['first_full_median_ms']:.0f}", f"{row['first_full_p90_ms']:.0f}",
            f"{row['thumbnail_median_ms']:.0f}", f"{row['thumbnail_p90_ms']:.0f}",
        )  # fmt: skip
    console.print(table)
    frames = Table(title="window/level drag on the panoramic")
    for column in ("peer", "moves", "renders", "renders/s", "animation frames/s",
                   "ms per render (median)"):  # fmt: skip
        frames.add_column(column, justify="right")
    for item in window:
        frames.add_row(
            item["peer"], str(item["moves"]), str(item["renders"]),
            f"{item['renders_per_s']:.1f}", f"{item['animation_frames_per_s']:.1f}",
            f"{item['ms_per_render_median']:.2f}",
        )  # fmt: skip
    console.print(frames)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.viewer", description=__doc__)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--peers", default="embedded,scaleout")
    parser.add_argument("--moves", type=int, default=120, help="mouse moves of the window drag")
    parser.add_argument("--arkiv-bin", type=Path, default=Path(sys.executable).parent / "arkiv")
    parser.add_argument("--startup-timeout", type=float, default=90.0)
    parser.add_argument("--tmp-dir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=RESULTS, help="write the results here")
    return parser.parse_args(argv)


def make_peers(args: argparse.Namespace) -> list[tuple[Peer, Studies]]:
    peers: list[tuple[Peer, Studies]] = []
    for name in (p.strip() for p in args.peers.split(",") if p.strip()):
        studies = Studies()
        if name == "embedded":
            peers.append((ViewerArkivPeer(args.arkiv_bin, studies, args.startup_timeout), studies))
        elif name == "scaleout":
            missing = ScaleoutBackend.missing()
            if missing:
                console.print(f"[yellow]scaleout left out: {missing}")
                continue
            peer = ViewerScaleoutPeer(
                args.arkiv_bin, ScaleoutBackend(), studies, args.startup_timeout
            )
            peers.append((peer, studies))
        else:
            raise BenchViewerError(f"unknown peer {name!r}")
    return peers


def run_peer(
    browser: Browser, peer: Peer, studies: Studies, args: argparse.Namespace
) -> tuple[list[Timings], dict[str, Any]]:
    base = f"http://{LOCALHOST}:{peer.http_port}"
    context = browser.new_context(locale="nb-NO")
    try:
        page = context.new_page()
        sign_in(page, base, USER, PASSWORD)
        patient_url = patient_page(page, base)
    finally:
        context.close()
    timings = [
        kind
        for name, uid in (("fmx", studies.fmx), ("panoramic", studies.panoramic))
        for kind in measure_opening(browser, base, patient_url, peer.name, name, uid, args.rounds)
    ]
    window = measure_window(browser, base, patient_url, peer.name, studies.panoramic, args.moves)
    return timings, window


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not CHROMIUM.is_file():
        console.print(f"[red]bench.viewer: {CHROMIUM} is missing (Debian chromium)")
        return 1
    work = Path(tempfile.mkdtemp(prefix="arkiv-bench-viewer-", dir=args.tmp_dir))
    timings: list[Timings] = []
    window: list[dict[str, Any]] = []
    peers: list[tuple[Peer, Studies]] = []
    try:
        peers = make_peers(args)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=["--no-sandbox"]
            )
            try:
                for peer, studies in peers:
                    started = time.monotonic()
                    peer.start(work / peer.name)
                    console.print(
                        f"{peer.name}: loaded and started in {time.monotonic() - started:.0f} s"
                    )
                    try:
                        found, drag = run_peer(browser, peer, studies, args)
                        timings.extend(found)
                        window.append(drag)
                    finally:
                        peer.stop()
            finally:
                browser.close()
        rows = [t.row() for t in timings]
        print_tables(rows, window)
        if args.json is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            doc = {"rounds": args.rounds, "aim_ms": AIM_MS, "opening": rows, "window": window}
            args.json.write_text(json.dumps(doc, indent=2), encoding="utf-8")
            console.print(f"results written to {args.json}")
        return 0
    except (BenchViewerError, PeerError) as exc:
        console.print(f"[red]bench.viewer: {exc}")
        for peer, _ in peers:
            console.print(f"--- {peer.name} log ---\n{peer.log_tail()}")
        return 1
    finally:
        for peer, _ in peers:
            peer.stop()
        for peer, _ in peers:
            if isinstance(peer, ScaleoutPeer):
                peer.backend.stop()
        stop_all()


if __name__ == "__main__":
    raise SystemExit(main())
