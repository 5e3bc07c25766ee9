"""A real browser for the notebook displays: Debian's headless Chromium,
driven through chromedriver by selenium. Nothing is downloaded: the browser
and its driver are the Debian packages (scripts/system-deps.sh), and the
flags keep Chromium from reaching for the network, which this closed
network refuses."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]

# Installed before any page script runs: every uncaught error and rejected
# promise is kept where the test can read it.
CATCH_ERRORS = """
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message || e)));
window.addEventListener('unhandledrejection', e => window.__errors.push(String(e.reason)));
"""


def available() -> bool:
    return Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()


@dataclass
class Page:
    """What a page showed."""

    svg_boxes: list[dict[str, float]]
    errors: list[str]
    console: list[dict[str, Any]]
    title: str


@contextmanager
def chromium(width: int = 1100, height: int = 900) -> Iterator[Any]:
    """A selenium driver of headless Chromium with a fresh profile."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="lamina-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for f in [*FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"]:
        opts.add_argument(f)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def render(html: Path, screenshot: Path | None = None) -> Page:
    """Load ``html`` and report its SVG boxes, its script errors and its
    console; save a screenshot of the whole page to ``screenshot``."""
    with chromium() as driver:
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": CATCH_ERRORS})
        driver.get(html.resolve().as_uri())
        boxes = driver.execute_script(
            "return [...document.querySelectorAll('svg')].map(s => {"
            " const r = s.getBoundingClientRect();"
            " return {width: r.width, height: r.height, cls: s.getAttribute('class') || ''}; })"
        )
        errors = driver.execute_script("return window.__errors")
        console = driver.get_log("browser")
        if screenshot is not None:
            h = driver.execute_script("return document.documentElement.scrollHeight")
            driver.set_window_size(1100, min(int(h) + 40, 6000))
            driver.save_screenshot(str(screenshot))
        return Page(boxes, list(errors or []), list(console), driver.title)
