"""The landing page in a real browser: Debian's Chromium, headless, driven by Selenium
through Debian's chromedriver (no browser download). The demo runs as a newcomer
starts it; screenshots land in ``test-artifacts/`` (or $VIBER_EXPORTER_ARTIFACTS).

Without chromium and chromedriver these tests skip, unless VIBER_EXPORTER_REQUIRE_E2E=1.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from ..children import SCRIPT, free_port
from ..conftest import wait_for

pytestmark = pytest.mark.slow

ARTIFACTS = Path(os.environ.get("VIBER_EXPORTER_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))
PERCENT = re.compile(r"^\d{1,3}\.\d %$")


def browser_paths() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        if os.environ.get("VIBER_EXPORTER_REQUIRE_E2E") == "1":
            pytest.fail("chromium and chromedriver are required (VIBER_EXPORTER_REQUIRE_E2E=1): "
                        "apt-get install chromium chromium-driver")
        pytest.skip("chromium or chromedriver not installed")
    return chromium, driver


def make_driver(javascript: bool = True) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = browser_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1400,1000"):
        options.add_argument(argument)
    if not javascript:
        options.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
    return webdriver.Chrome(options=options, service=Service(executable_path=driver))


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    browser_paths()
    port = free_port()
    env = {**os.environ, "VIBER_EXPORTER_LOAD_PLUGINS": ""}
    process = subprocess.Popen([str(SCRIPT), "demo", "--listen", f"127.0.0.1:{port}"], env=env,
                               cwd=tmp_path_factory.mktemp("demo"), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: ready(url), timeout=30)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=15)


def ready(url: str) -> bool:
    try:
        return requests.get(f"{url}/-/ready", timeout=1).status_code == 200
    except requests.RequestException:
        return False


#: read in one script call: the page swaps its live part in place every 10 s, so
#: elements found one call earlier may be gone (stale) by the next
CARDS_SCRIPT = """
return Array.from(document.querySelectorAll('article.card')).map(card => ({
  name: card.id.replace('instance-', ''),
  percentages: Array.from(card.querySelectorAll('.rate b')).map(b => b.textContent.trim()),
  charts: Array.from(card.querySelectorAll('figure.chart svg polyline'))
    .filter(line => line.getAttribute('points') && line.getBoundingClientRect().width > 0).length,
}));
"""


def card_figures(driver: Any) -> dict[str, dict[str, Any]]:
    """Per instance card: the big percentages shown and how many charts are drawn."""
    return {card["name"]: card for card in driver.execute_script(CARDS_SCRIPT)}


def shows_rates_and_charts(driver: Any) -> bool:
    figures = card_figures(driver)
    return set(figures) == {"routee", "bsg"} and all(
        any(PERCENT.match(p) for p in f["percentages"]) and f["charts"] for f in figures.values()
    )


def test_the_demo_page_shows_rates_and_charts_for_each_instance_and_fits_a_phone(demo):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver = make_driver()
    try:
        driver.get(demo)
        driver.execute_script("window.loadedOnce = 'yes'")  # gone if the page reloads itself
        try:
            WebDriverWait(driver, 30, poll_frequency=0.5).until(shows_rates_and_charts)
        except TimeoutException:
            driver.save_screenshot(str(ARTIFACTS / "landing-timeout.png"))
            shown = {name: (f["percentages"], f["charts"]) for name, f in card_figures(driver).items()}
            pytest.fail(f"no rates and charts for both instances within 30 s: {shown}")
        assert driver.execute_script("return window.loadedOnce") == "yes", \
            "the figures arrived by the in-place refresh, not a full reload"
        driver.save_screenshot(str(ARTIFACTS / "landing-wide.png"))
        # the wide layout puts the cards side by side
        tops = driver.execute_script(
            "return Array.from(document.querySelectorAll('article.card')).map(c => c.getBoundingClientRect().top)")
        assert len(tops) == 2 and abs(tops[0] - tops[1]) < 1, "two cards on one row at 1400 px"

        driver.set_window_size(390, 844)  # a phone
        WebDriverWait(driver, 10).until(lambda d: d.execute_script("return window.innerWidth") <= 400)
        overflow = driver.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"the narrow window scrolls sideways by {overflow} px"
        driver.save_screenshot(str(ARTIFACTS / "landing-narrow.png"))
        assert (ARTIFACTS / "landing-narrow.png").stat().st_size > 10_000
    finally:
        driver.quit()


def test_the_page_works_without_javascript_and_the_api_reference_renders(demo):
    from selenium.webdriver.common.by import By

    driver = make_driver(javascript=False)
    try:
        driver.get(demo)
        cards = driver.find_elements(By.CSS_SELECTOR, "article.card")  # no script: nothing swaps them
        assert sorted(c.get_attribute("id") for c in cards) == ["instance-bsg", "instance-routee"]
        refresh = driver.find_elements(By.CSS_SELECTOR, 'meta[http-equiv="refresh"]')
        assert refresh, "without script the page reloads itself"
        driver.find_element(By.LINK_TEXT, "API reference").click()
        heading = driver.find_element(By.TAG_NAME, "h1").text
        assert heading.startswith("viber-exporter API")
        methods = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "h2 code")]
        assert sum("/api/v1/callbacks/{provider}" in m for m in methods) == 1, methods
        driver.save_screenshot(str(ARTIFACTS / "api-reference.png"))
    finally:
        driver.quit()
