"""The web page at ``GET /`` in real headless Chromium (Debian's ``chromium`` + ``chromium-driver``, driven by
Selenium) against a real uvicorn on loopback. Screenshots go to ``$DAA_SCREENSHOT_DIR`` (default: a pytest tmp dir).

Chromium and chromedriver missing is a failure, not a skip: CI installs them (``apt-get install -y chromium
chromium-driver``)."""

from __future__ import annotations

import base64
import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from testkit import FIXTURES, ROOT, running_service

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as ChromeService
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select, WebDriverWait

    SELENIUM_MISSING = ""
except ImportError as exc:  # reported by the driver fixture as a failure
    SELENIUM_MISSING = str(exc)

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("DAA_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("DAA_CHROMEDRIVER", "/usr/bin/chromedriver")
AGE_LABEL = re.compile(r"^\d+\.\d \(\d+\.\d–\d+\.\d\)$")  # "32.2 (20.0–44.5)"


@contextlib.contextmanager
def serve(log_path: Path, **env: str) -> Iterator[str]:
    """The real service (``python -m app``, which serves the page) on a free loopback port; yields its URL."""
    with running_service({"DAA_THREADS": "1", **env}, log_path=log_path) as (base, _):
        yield base


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serve(tmp_path_factory.mktemp("page-server") / "server.log") as base:
        yield base


@pytest.fixture(scope="module")
def shots(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(os.environ.get("DAA_SCREENSHOT_DIR") or tmp_path_factory.mktemp("page-screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():  # shown even under capture
        print(f"\npage screenshots: {folder}")
    return folder


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if SELENIUM_MISSING:
        pytest.fail(f"selenium is not installed ({SELENIUM_MISSING}): pip install -e '.[dev]'")
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).is_file()]
    if missing:
        pytest.fail(
            f"headless browser test needs {' and '.join(missing)}: apt-get install -y chromium chromium-driver "
            "(or point DAA_CHROMIUM / DAA_CHROMEDRIVER at them)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--window-size=1000,800",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=ChromeService(executable_path=CHROMEDRIVER), options=options)
    try:
        browser.set_window_size(1000, 800)
        yield browser
    finally:
        browser.quit()


def wait(driver: Any, condition: Any, timeout: float = 60, message: str = "") -> Any:
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition, message)


def open_page(driver: Any, base_url: str, width: int = 1000, height: int = 800, mobile: bool = False) -> None:
    """Load the page in a viewport of exactly width x height CSS pixels (a phone's when mobile)."""
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}
    )
    driver.get(base_url + "/")
    wait(driver, lambda d: d.execute_script("return document.readyState") == "complete", 20)
    driver.get_log("browser")  # start each page with an empty console log


def upload(driver: Any, path: Path) -> None:
    driver.find_element(By.ID, "file").send_keys(str(path))


def wait_for_faces(driver: Any) -> list[Any]:
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#boxes .box .label"), 90, "no face box appeared")
    return driver.find_elements(By.CSS_SELECTOR, "#boxes .box")


def points(driver: Any) -> int:
    return len(driver.find_elements(By.CSS_SELECTOR, "#chart svg circle.pt"))


def console_problems(driver: Any) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]


def test_page_is_served_with_strict_headers(base_url: str) -> None:
    page = httpx.get(base_url + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<input id="file"' in page.text
    for resp in (page, httpx.get(base_url + "/static/app.js"), httpx.get(base_url + "/static/style.css")):
        assert resp.status_code == 200
        assert resp.headers["cache-control"] == "no-cache"
        assert resp.headers["x-content-type-options"] == "nosniff"
        csp = resp.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "img-src 'self' blob: data:" in csp and "unsafe" not in csp
    assert httpx.get(base_url + "/static/app.js").headers["content-type"].startswith("text/javascript")
    assert httpx.get(base_url + "/static/style.css").headers["content-type"].startswith("text/css")
    for bad in ("/static/index.htm", "/static/..%2Fpage.py", "/static/missing.js"):
        resp = httpx.get(base_url + bad)
        assert resp.status_code == 404 and resp.json()["code"] == "not_found"
    schema = httpx.get(base_url + "/openapi.json").json()
    assert "/" not in schema["paths"] and not any(p.startswith("/static") for p in schema["paths"])
    total = sum((ROOT / "app" / "static" / n).stat().st_size for n in ("index.html", "app.js", "style.css"))
    assert total < 40_000, total


def test_upload_shows_face_age_and_chart(driver: Any, base_url: str, shots: Path) -> None:
    open_page(driver, base_url)
    upload(driver, FIXTURES / "astronaut.jpg")
    boxes = wait_for_faces(driver)
    assert len(boxes) >= 1
    label = boxes[0].find_element(By.CSS_SELECTOR, ".label").text
    assert AGE_LABEL.match(label), label
    box = boxes[0].rect
    photo = driver.find_element(By.ID, "photo").rect
    assert box["width"] > 20 and box["height"] > 20
    assert "Found 1 face" in driver.find_element(By.ID, "status").text
    assert photo["x"] - 1 <= box["x"] and box["x"] + box["width"] <= photo["x"] + photo["width"] + 1

    # select the face in the list with the mouse: the chart has one point per reference age (100 at interval 1)
    face = driver.find_element(By.CSS_SELECTOR, "#faces button.face")
    face.click()
    assert face.get_attribute("aria-pressed") == "true"
    wait(driver, lambda d: points(d) == 100, 10, "chart without 100 points")
    chart = driver.find_element(By.CSS_SELECTOR, "#chart svg")
    assert chart.find_elements(By.CSS_SELECTOR, "line.mean") and chart.find_elements(By.CSS_SELECTOR, "rect.band")
    assert "reference age" in chart.text and "estimate" in chart.text
    meta = driver.find_element(By.ID, "meta").text
    assert re.search(r"decode [\d.]+, detect [\d.]+, estimate [\d.]+ ms", meta), meta
    assert "320 × 320 px" in meta and "version" in meta
    driver.save_screenshot(str(shots / "desktop-chart.png"))

    # keyboard: faces are buttons, on the photo and in the list; Space and Enter select them, with a visible focus
    unselect = "document.querySelectorAll('[data-face]').forEach((b) => b.setAttribute('aria-pressed', 'false'))"
    for target, key in ((boxes[0], Keys.SPACE), (face, Keys.ENTER)):
        driver.execute_script(unselect)
        target.send_keys(key)
        wait(driver, lambda d, t=target: t.get_attribute("aria-pressed") == "true", 5, f"{key!r} did not select")
        assert driver.execute_script("return document.activeElement === arguments[0]", target)
        assert driver.execute_script("return getComputedStyle(arguments[0]).outlineStyle", target) == "solid"

    # fewer references (paper Table 7): the photo is estimated again, with 10 points
    Select(driver.find_element(By.ID, "interval")).select_by_value("10")
    wait(driver, lambda d: points(d) == 10, 60, "chart did not redraw with 10 references")
    assert "10 reference ages" in driver.find_element(By.ID, "meta").text
    assert console_problems(driver) == []


def test_text_file_is_refused_in_plain_words(driver: Any, base_url: str, shots: Path, tmp_path: Path) -> None:
    open_page(driver, base_url)
    note = tmp_path / "notes.txt"
    note.write_text("this is not a photo\n")
    upload(driver, note)
    wait(driver, error_text, 30, "no error shown")
    assert "not a photo this service can read" in error_text(driver)
    assert "JPEG, PNG" in error_text(driver) and "unsupported_image_type" in error_text(driver)
    assert driver.find_element(By.ID, "error").get_attribute("role") == "alert"
    driver.save_screenshot(str(shots / "desktop-415.png"))


# A File made in the page from the fixture's bytes, dropped on the drop zone or pasted (Ctrl+V) into the page.
SEND_FILE = """
const [b64, how] = arguments;
const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
const transfer = new DataTransfer();
transfer.items.add(new File([bytes], 'photo.jpg', {type: 'image/jpeg'}));
if (how === 'drop') {
  const zone = document.getElementById('dropzone');
  zone.dispatchEvent(new DragEvent('dragover', {dataTransfer: transfer, bubbles: true, cancelable: true}));
  zone.dispatchEvent(new DragEvent('drop', {dataTransfer: transfer, bubbles: true, cancelable: true}));
} else {
  document.body.dispatchEvent(new ClipboardEvent('paste', {clipboardData: transfer, bubbles: true, cancelable: true}));
}
"""


def test_drop_and_paste(driver: Any, base_url: str) -> None:
    data = base64.b64encode((FIXTURES / "astronaut.jpg").read_bytes()).decode()
    for how in ("drop", "paste"):
        open_page(driver, base_url)
        driver.execute_script(SEND_FILE, data, how)
        boxes = wait_for_faces(driver)
        assert AGE_LABEL.match(boxes[0].find_element(By.CSS_SELECTOR, ".label").text), how
        assert driver.find_element(By.ID, "photo").get_attribute("src").startswith("blob:")
        assert console_problems(driver) == []


def error_text(driver: Any) -> str:
    box = driver.find_element(By.ID, "error")
    return box.text if box.is_displayed() else ""


def test_api_key_too_large_and_no_face(driver: Any, shots: Path, tmp_path: Path) -> None:
    """A service with API keys and a 25 KB upload limit (astronaut.jpg is 29 KB, rocket.jpg 11 KB and faceless)."""
    with serve(tmp_path / "server.log", DAA_API_KEYS="good-key", DAA_MAX_UPLOAD_BYTES="25000") as base:
        open_page(driver, base)
        driver.execute_script("sessionStorage.clear()")
        upload(driver, FIXTURES / "astronaut.jpg")
        wait(driver, lambda d: "needs an API key" in error_text(d), 30, "no API key prompt")
        key_input = driver.find_element(By.ID, "api-key")
        assert driver.find_element(By.ID, "key-form").is_displayed()
        assert driver.execute_script("return document.activeElement === arguments[0]", key_input)
        driver.save_screenshot(str(shots / "desktop-401.png"))

        key_input.send_keys("wrong-key", Keys.ENTER)  # sent again with X-API-Key, refused: the key is forgotten
        wait(driver, lambda d: "not accepted" in error_text(d), 30)
        assert driver.execute_script("return sessionStorage.getItem('daa-api-key')") is None

        driver.find_element(By.ID, "api-key").send_keys("good-key", Keys.ENTER)  # accepted; the photo is too large
        wait(driver, lambda d: "too large (the limit is 24 KB)" in error_text(d), 30)
        assert "file_too_large" in error_text(driver)
        assert not driver.find_element(By.ID, "key-form").is_displayed()
        assert driver.execute_script("return sessionStorage.getItem('daa-api-key')") == "good-key"

        open_page(driver, base)  # the key lasts for the tab: no prompt after a reload
        upload(driver, FIXTURES / "rocket.jpg")
        wait(driver, lambda d: "No face found" in d.find_element(By.ID, "status").text, 30)
        assert driver.find_element(By.ID, "faces-empty").is_displayed()
        assert not driver.find_elements(By.CSS_SELECTOR, "#boxes .box") and not error_text(driver)
        driver.execute_script("sessionStorage.clear()")


# Stubbed fetch: a busy service (503 + Retry-After) and a network failure, which a test cannot provoke for real.
STUB_FETCH = """
const answers = arguments[0];
window.__calls = 0;
const real = window.fetch.bind(window);
window.fetch = async (url, init) => {
  window.__calls += 1;
  const a = answers.shift();
  if (!a) return real(url, init);
  if (a.network) throw new TypeError('Failed to fetch');
  return new Response(JSON.stringify(a.body), {status: a.status, headers: a.headers});
};
"""
BUSY = {
    "status": 503,
    "body": {"code": "overloaded", "message": "the service is busy (queue); retry shortly", "detail": None},
    "headers": {"Content-Type": "application/json", "Retry-After": "1"},
}


def test_busy_and_network_errors(driver: Any, base_url: str) -> None:
    open_page(driver, base_url)
    driver.execute_script(STUB_FETCH, [BUSY])
    upload(driver, FIXTURES / "astronaut.jpg")  # 503, then one automatic retry after Retry-After: 1 s succeeds
    wait_for_faces(driver)
    assert driver.execute_script("return window.__calls") == 2

    driver.execute_script(STUB_FETCH, [BUSY, BUSY])  # busy twice: say when to try again
    Select(driver.find_element(By.ID, "interval")).select_by_value("5")
    wait(driver, lambda d: "busy" in error_text(d), 15)
    assert "Try again in 1 second." in error_text(driver)
    assert not driver.find_element(By.ID, "result").is_displayed()  # no stale result next to the error

    driver.execute_script(STUB_FETCH, [{"network": True}])
    upload(driver, FIXTURES / "astronaut.jpg")
    wait(driver, lambda d: "Could not reach" in error_text(d), 15)


# Labels of faces other than the selected one must not cover each other (crowded photos show the age only).
NO_LABEL_OVERLAP = """
const r = [...document.querySelectorAll('#boxes .box:not(.selected) .label')].map((l) => l.getBoundingClientRect());
const hit = (a, b) => a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
return !r.some((a, i) => r.slice(i + 1).some((b) => hit(a, b)));
"""


def test_phone_layout_does_not_overflow(driver: Any, base_url: str, shots: Path) -> None:
    try:
        open_page(driver, base_url, 390, 800, mobile=True)
        assert driver.execute_script("return window.innerWidth") == 390
        upload(driver, FIXTURES / "group.jpg")
        assert len(wait_for_faces(driver)) == 3
        wait(driver, lambda d: points(d) == 100, 10)
        photo = driver.find_element(By.ID, "photo").rect
        for label in driver.find_elements(By.CSS_SELECTOR, "#boxes .label"):  # every age label stays over the photo
            r = label.rect
            assert photo["x"] - 3 <= r["x"] and r["x"] + r["width"] <= photo["x"] + photo["width"] + 3, (label.text, r)
        wait(driver, lambda d: d.execute_script(NO_LABEL_OVERLAP), 5, "age labels overlap on the photo")
        driver.save_screenshot(str(shots / "phone.png"))
        driver.find_element(By.CSS_SELECTOR, "#chart-panel details summary").click()  # the values table, opened
        widths = driver.execute_script(
            "return [document.documentElement.scrollWidth, document.body.scrollWidth, window.innerWidth]"
        )
        assert widths[0] <= widths[2] and widths[1] <= widths[2], widths
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": 390, "height": min(height, 4000), "deviceScaleFactor": 1, "mobile": True},
        )
        full = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
        (shots / "phone-full.png").write_bytes(base64.b64decode(full["data"]))
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_a_clip_plays_with_each_tracked_face_boxed_and_its_fused_age(
    driver: Any, base_url: str, shots: Path, tmp_path: Path
) -> None:
    from testkit import encode_clip, fixture_faces, moving_faces

    a, b = fixture_faces()[:2]
    clip = tmp_path / "two.webm"  # VP9: what any Chromium build plays
    clip.write_bytes(
        encode_clip(moving_faces([a, b], size=(640, 360), seconds=3, face_side=130), fps=15, codec="libvpx-vp9", fmt="webm")
    )
    open_page(driver, base_url)
    upload(driver, clip)
    wait(driver, lambda d: "Found 2 people" in d.find_element(By.ID, "status").text, 90, "no tracks")
    video = driver.find_element(By.ID, "clip")
    assert video.is_displayed() and not driver.find_element(By.ID, "photo").is_displayed()
    rows = driver.find_elements(By.CSS_SELECTOR, "#faces [data-track]")
    assert [r.find_element(By.CSS_SELECTOR, ".face-n").text for r in rows] == ["Person 1", "Person 2"]
    assert all(re.match(r"^\d+\.\d years$", r.find_element(By.CSS_SELECTOR, ".face-age").text) for r in rows)
    # Paused at 1 s, both faces are boxed where they are then, each labelled with its track's fused age.
    driver.execute_script("arguments[0].pause(); arguments[0].currentTime = 1.0;", video)
    wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#boxes .box[data-track]")) == 2, 20, "no boxes")
    labels = sorted(e.text for e in driver.find_elements(By.CSS_SELECTOR, "#boxes .box .label"))
    ages = [r.find_element(By.CSS_SELECTOR, ".face-age").text.split()[0] for r in rows]
    assert labels == sorted(f"{i + 1}: {age}" for i, age in enumerate(ages)), labels
    stage, box = driver.find_element(By.ID, "stage").rect, driver.find_elements(By.CSS_SELECTOR, "#boxes .box")[0].rect
    assert stage["x"] - 1 <= box["x"] and box["x"] + box["width"] <= stage["x"] + stage["width"] + 1
    assert "frames searched" in driver.find_element(By.ID, "meta").text
    driver.save_screenshot(str(shots / "clip.png"))
    assert console_problems(driver) == []
