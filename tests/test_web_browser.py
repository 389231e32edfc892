"""The web application in a real headless Chromium (Debian's, driven by Playwright).

The server is uvicorn on a loopback port in a background thread; screenshots of each
step go to test-artifacts/ (REGISTRY_TEST_ARTIFACTS overrides the folder).
"""

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
import uvicorn
from conftest import WEB_PASSWORD as PASSWORD

from registry.web.app import create_app

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("REGISTRY_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "test-artifacts"))

if os.environ.get("CI"):  # CI installs both; there a missing one is a failure, never a skip
    from playwright import sync_api
else:
    sync_api = pytest.importorskip("playwright.sync_api")
if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        pytest.fail("CI must install Debian's chromium for the browser tests", pytrace=False)
    pytest.skip("Debian's chromium is not installed", allow_module_level=True)


@pytest.fixture
def server(web_registry):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    web = uvicorn.Server(uvicorn.Config(create_app(web_registry, secret_key="browser-test"), host="127.0.0.1", port=port,
                                        log_level="warning"))  # fmt: skip
    thread = threading.Thread(target=web.run, daemon=True)
    thread.start()
    for _ in range(100):
        if web.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    web.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def page():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        page.set_default_timeout(5000)
        yield page
        browser.close()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True)


def test_sign_in_find_a_patient_and_read_the_record(server, page):
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(f"{server}/patients/EX-002")
    assert page.url == f"{server}/login?next=/patients/EX-002"
    page.fill("#username", "cora")
    page.fill("#password", "wrong password!")
    page.click("button[type=submit]")
    assert page.text_content("[role=alert]") == "Wrong user name or password."
    shot(page, "01-sign-in-refused")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    assert page.url == f"{server}/patients/EX-002"
    assert page.text_content("h1") == "EX-002"
    assert page.locator("td", has_text="<script>alert(1)</script>").count() == 2  # the event and its history
    assert dialogs == []  # shown as text, never run
    shot(page, "02-patient-page")
    page.click("text=All patients")
    page.fill("#q", "00")
    page.click("text=Search")
    assert page.locator("tbody tr").count() == 4
    shot(page, "03-patient-list")
    page.goto(f"{server}/patients/EX-901")
    assert page.text_content("h1") == "Not found"  # another site's patient
    page.click("text=All patients")
    page.click("text=Sign out")
    assert page.url == f"{server}/login"
