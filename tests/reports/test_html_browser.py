"""Acceptance: the default suite's HTML report opens in headless Chromium (Debian's /usr/bin/chromium,
driven by playwright, which downloads no browser) with no console errors, no page errors and no network
requests; a screenshot is taken and every plot has rendered marks.

Skips when Chromium or playwright is missing, except under CI (the CI variable set), where it fails:
`make browser` installs Chromium and the dev extra installs playwright, so CI must never skip it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from edgebench.reports import render

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]


def _chromium() -> str | None:
    for candidate in (os.environ.get("EDGEBENCH_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def _missing(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must run the browser test (`make browser` installs Chromium, the dev extra playwright)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install '.[dev]')")
    exe = _chromium()
    if exe is None:
        _missing("Chromium is not installed (make browser)")
    with sync_playwright() as p:
        # playwright gives every launch a fresh, empty profile (user-data-dir) of its own
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        yield b
        b.close()


def open_page(browser, html_path: Path, width: int = 1400):
    ctx = browser.new_context(viewport={"width": width, "height": 1000})
    page = ctx.new_page()
    events: dict[str, list[str]] = {"console": [], "pageerror": [], "requests": []}
    page.on("console", lambda m: events["console"].append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: events["pageerror"].append(str(e)))
    page.on("request", lambda r: events["requests"].append(r.url) if not r.url.startswith(("file:", "data:", "about:")) else None)
    page.goto(html_path.resolve().as_uri(), wait_until="load")
    return ctx, page, events


CHART_STATS = """() => Array.from(document.querySelectorAll('svg.chart')).map(svg => {
  const r = svg.getBoundingClientRect();
  const marks = Array.from(svg.querySelectorAll('.mark')).map(m => { const b = m.getBBox(); return [b.width, b.height]; });
  const lines = Array.from(svg.querySelectorAll('.series')).map(m => { const b = m.getBBox(); return b.width + b.height; });
  return {id: svg.id, w: r.width, h: r.height, marks: marks, lines: lines, texts: svg.querySelectorAll('text').length};
})"""


def test_default_suite_report_renders_in_chromium(browser, default_store, tmp_path):
    out = render.write(default_store.store, default_store.run_id, tmp_path / "reports")
    ctx, page, events = open_page(browser, out / "report.html")
    try:
        shot = tmp_path / "report.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 50_000  # a real page, not a blank one
        charts = page.evaluate(CHART_STATS)
        ids = {c["id"] for c in charts}
        assert {"chart-local-Accuracy-vs-p90-latency-batch-1", "chart-local-Accuracy-vs-p90-latency-batch-8",
                "chart-local-Accuracy-vs-peak-memory", "chart-local-Accuracy-vs-model-size", "cdf-local-b1", "cdf-local-b8",
                "sweep-acc-local-magnitude_unstructured", "sweep-speed-local-magnitude_unstructured"} <= ids
        for c in charts:
            assert c["w"] > 200 and c["h"] > 150, c["id"]
            assert c["marks"] and all(w > 0 and h > 0 for w, h in c["marks"]), c["id"]
            assert all(extent > 0 for extent in c["lines"]), c["id"]
            assert c["texts"] > 5, c["id"]  # title, tick labels, axis labels
        cdf_lines = {c["id"]: len(c["lines"]) for c in charts if c["id"].startswith("cdf-")}
        assert cdf_lines == {"cdf-local-b1": 6, "cdf-local-b8": 6}
        # the cell table sorts when a header is clicked (the page's only script)
        table = page.locator("section#target-local table.cells")
        table.locator("th", has_text="p50 ms").click()
        p50s = [float(v) for v in table.locator("tbody tr td:nth-child(5)").all_inner_texts()]
        assert p50s == sorted(p50s) and len(p50s) == 12
        assert page.locator(".recommendation .headline").first.inner_text().startswith("tie between 2:")
        assert events == {"console": [], "pageerror": [], "requests": []}
        print(f"screenshot: {shot}")
    finally:
        ctx.close()


def test_failed_run_report_renders_in_chromium(browser, failed_store, tmp_path):
    out = render.write(failed_store.store, failed_store.run_id, tmp_path / "reports")
    ctx, page, events = open_page(browser, out / "report.html", width=1000)
    try:
        page.screenshot(path=str(tmp_path / "failed.png"), full_page=True)
        rows = page.locator("section#failures table.failures tbody tr")
        assert rows.count() == 3
        assert "InvalidProtobuf" in page.locator("section#failures").inner_text()
        assert events == {"console": [], "pageerror": [], "requests": []}
    finally:
        ctx.close()
