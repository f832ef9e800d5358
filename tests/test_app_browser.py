"""``sfd app`` in a real browser: Debian's chromium, headless, driven through its own chromedriver (selenium
is told where both are, so nothing downloads a browser or a driver). Upload a photo, run, read the output's
size and the scores from the page, keep a screenshot; then, as a new visitor, see none of it, upload a file that
is not an image and get a message, and pick a bundled example.

Skips with the reason where chromium, chromedriver, selenium or gradio is missing (`.ci/run` installs chromium).
``SFD_APP_SCREENSHOT=PATH`` also writes the screenshot there; ``SFD_APP_MODEL=RUN`` serves that x4 model instead
of the tiny untrained one (whose output is dark): docs/images/app.png was made so (docs/app.md says how).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from app_helpers import make_tiny_run, start_app, stop
from PIL import Image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")

pytestmark = [
    pytest.mark.skipif(
        not CHROMIUM or not DRIVER,
        reason="no chromium/chromedriver (apt-get install chromium chromium-driver; .ci/run does)",
    ),  # fmt: skip
    pytest.mark.filterwarnings("ignore:.*RANDOM.*", "ignore:.*randomly initialised.*"),
]


@pytest.fixture
def browser():
    pytest.importorskip("gradio", reason="sfd app needs the app extra: pip install 'sfd[app]'")
    webdriver = pytest.importorskip("selenium.webdriver", reason="the browser test needs selenium (the dev extra)")
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not look for a browser or driver to download
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1250"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    yield driver
    driver.quit()


def test_upload_run_and_read_the_page(browser, tmp_path):
    import skimage
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    run = os.environ.get("SFD_APP_MODEL") or make_tiny_run(tmp_path / "app")
    photo = tmp_path / "cat.png"
    with Image.open(Path(skimage.__file__).parent / "data" / "chelsea.png") as im:
        im.resize((192, 144), Image.Resampling.LANCZOS).save(photo)
    proc, url, _ = start_app(run, tmp_path, guard=False, cwd=Path.cwd())  # a relative SFD_APP_MODEL works
    try:
        wait = WebDriverWait(browser, 240)
        browser.get(url)
        upload = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#sfd-upload input[type=file]")))
        upload.send_keys(str(photo))
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#sfd-input img")))  # the preview
        browser.find_element(By.ID, "sfd-run").click()
        size = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#size-A")))
        assert (size.get_attribute("data-width"), size.get_attribute("data-height")) == ("768", "576")  # x4
        scores = {
            (cell.get_attribute("data-image"), cell.get_attribute("data-metric")): cell.text
            for cell in browser.find_elements(By.CSS_SELECTOR, "#sfd-scores td[data-metric]")
        }
        assert {image for image, _ in scores} == {"input", str(run)}
        for metric in ("sfd-iqa", "clipiqa"):
            assert 0 <= float(scores["input", metric]) <= 1 and 0 <= float(scores[str(run), metric]) <= 1
        assert float(scores["input", "niqe"]) > 0 and float(scores[str(run), "niqe"]) > 0
        red = browser.find_element(By.CSS_SELECTOR, "li[data-weights='sfd-iqa']")
        assert "RANDOM CLIP" in red.text and "204, 0, 0" in red.value_of_css_property("color")
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#sfd-download a"))  # the download link
        fetched = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert fetched and all(u.startswith((url.rstrip("/"), "data:", "blob:")) for u in fetched), fetched
        browser.execute_script("window.scrollTo(0, 0)")
        shot = tmp_path / "app.png"
        browser.save_screenshot(str(shot))
        with Image.open(shot) as im:
            assert im.size[0] >= 1000
        if os.environ.get("SFD_APP_SCREENSHOT"):
            shutil.copy(shot, os.environ["SFD_APP_SCREENSHOT"])

        browser.get(url)  # a new visitor: nothing of the request above is on the page
        upload = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#sfd-upload input[type=file]")))
        assert not browser.find_elements(By.CSS_SELECTOR, "#size-A, #sfd-scores, #sfd-download a")
        bad = tmp_path / "not_an_image.png"
        bad.write_bytes(b"this is not an image")
        upload.send_keys(str(bad))
        message = wait.until(ec.presence_of_element_located((By.ID, "sfd-error")))
        assert "not an image" in message.text and "Traceback" not in browser.page_source
        browser.find_element(By.XPATH, "//button[contains(., 'chelsea.png')]").click()  # a bundled example
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#sfd-input img")))
        wait.until(lambda d: not d.find_elements(By.ID, "sfd-error"))
    finally:
        stop(proc)
