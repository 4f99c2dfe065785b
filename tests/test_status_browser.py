"""The environments page in a real browser: headless Chromium (Debian's `chromium` and
`chromium-driver`, driven by Selenium) loads the served App — werkzeug on 127.0.0.1, the demo's
sample repository on the stand-ins — while a deployment runs and after it ended, at a phone's
375 px and at a desktop's width, and saves screenshots to `$PRBOT_TEST_ARTIFACTS` (else a
temporary directory; the path is printed).  A missing browser fails the test: `.ci/run` installs it.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from service_support import WEBHOOK_SECRET
from werkzeug.serving import make_server

from prbot import flows
from prbot.demo import Narrator, Story, World, make_world
from prbot.envboard import ServiceHealth
from prbot.service import create_app
from prbot.service.liveboards import LiveBoards
from prbot.service.settings import Secret, Settings

CHROMIUM = os.environ.get("PRBOT_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("PRBOT_CHROMEDRIVER", "/usr/bin/chromedriver")
TOKEN = "browser-token-7c0d2e9b41aa"
REPO = "acme/gitops"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = os.environ.get("PRBOT_TEST_ARTIFACTS")
    path = Path(where) / "status-page" if where else tmp_path_factory.mktemp("status-page-screenshots")
    path.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots of the environments page: {path}")
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """The sample repository with the bump PR merged and its deployment started, not polled yet."""
    world = make_world(tmp_path_factory.mktemp("browser-world"))
    story = Story(world, Narrator(io.StringIO()))
    number = story.push()
    assert number is not None
    story.plan(number, "plan")
    assert story.merge(number)
    state = flows.deploy_merged(world.repo, world.clusters, number)
    assert state is not None and not state.done
    flows.set_lock(world.repo.store, REPO, "prod", "alice", "release freeze <b>friday</b>", 0.0)
    return world


@pytest.fixture(scope="module")
def served(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = Settings(github_webhook_secret=Secret(WEBHOOK_SECRET), data_dir=tmp_path_factory.mktemp("data"),
                        status_page="token", status_token=Secret(TOKEN))
    app = create_app(settings, configure_logging=False,
                     boards=LiveBoards({REPO: world.repo}, lambda: ServiceHealth(queue_depth=1, workers=1,
                                                                                dead_letters=0)))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(10)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    for binary in (CHROMIUM, CHROMEDRIVER):
        if not (Path(binary).is_file() and os.access(binary, os.X_OK)):
            pytest.fail(f"{binary} is missing: install Debian's chromium and chromium-driver (.ci/run does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-extensions", "--no-first-run", "--hide-scrollbars",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(120)
    try:
        yield driver
    finally:
        driver.quit()


def shoot(driver: Any, artifacts: Path, name: str) -> None:
    path = artifacts / f"{name}.png"
    assert driver.save_screenshot(str(path)), f"no screenshot at {path}"
    assert path.stat().st_size > 1000


def viewport(driver: Any, width: int) -> None:
    """Make the page's own viewport `width` CSS pixels wide (the window has borders of its own)."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": width < 600})


def test_the_board_in_a_browser_while_deploying_then_healthy_on_a_phone_and_a_desktop(
        browser: Any, served: str, world: World, artifacts: Path) -> None:
    from selenium.webdriver.common.by import By

    viewport(browser, 1280)
    browser.get(f"{served}/status?token={TOKEN}")
    assert browser.current_url == f"{served}/status/{REPO}"        # the token left the address for a cookie
    assert TOKEN not in browser.page_source
    assert browser.find_element(By.ID, "deploying").is_displayed()
    refresh = browser.find_element(By.CSS_SELECTOR, 'meta[http-equiv="refresh"]').get_attribute("content")
    assert refresh == "5"
    path = [li.get_attribute("data-env") for li in browser.find_elements(By.CSS_SELECTOR, "#path li[data-env]")]
    assert path == ["dev", "staging", "prod"]
    apps = [tr.get_attribute("data-app") for tr in browser.find_elements(By.CSS_SELECTOR, "#board tbody tr")]
    assert apps == ["billing", "shop", "worker"]
    shop_dev = browser.find_element(By.CSS_SELECTOR, '#board tr[data-app="shop"] td[data-env="dev"]')
    assert "1.2.0" in shop_dev.text
    dev = browser.find_element(By.CSS_SELECTOR, '#envs tr[data-env-row="dev"]')
    assert "PR #1" in dev.text and any(s in dev.text for s in ("waiting", "syncing", "progressing"))
    prod = browser.find_element(By.CSS_SELECTOR, '#envs tr[data-env-row="prod"]')
    assert "🔒 alice: release freeze <b>friday</b>" in prod.text          # the markup is text, not bold
    assert browser.find_elements(By.CSS_SELECTOR, "#envs b") == []
    assert browser.find_element(By.ID, "workers").text == "1"
    assert browser.find_element(By.CSS_SELECTOR, "#board thead").is_displayed()
    shoot(browser, artifacts, "deploying-desktop")

    viewport(browser, 375)
    browser.refresh()
    assert not browser.find_element(By.CSS_SELECTOR, "#board thead").is_displayed()   # one card per app
    overflow = browser.execute_script("return document.documentElement.scrollWidth")
    assert overflow <= 375, f"the page is {overflow}px wide at 375px: it scrolls sideways"
    card = browser.find_element(By.CSS_SELECTOR, '#board tr[data-app="shop"]')
    assert card.size["width"] <= 375
    shoot(browser, artifacts, "deploying-375px")

    while flows.poll_deploy(world.repo, world.clusters, world.forge.get_pull(1).merge_commit_sha or "") is not None:
        world.clock.advance(30)
    browser.refresh()
    assert browser.find_elements(By.ID, "deploying") == []
    assert browser.find_element(By.CSS_SELECTOR, 'meta[http-equiv="refresh"]').get_attribute("content") == "60"
    dev = browser.find_element(By.CSS_SELECTOR, '#envs tr[data-env-row="dev"]')
    assert "healthy" in dev.text
    shop_dev = browser.find_element(By.CSS_SELECTOR, '#board tr[data-app="shop"] td[data-env="dev"]')
    assert "deployed: 1.2.0" in shop_dev.text
    pulls = browser.find_elements(By.CSS_SELECTOR, '#pulls li[data-kind="promote"]')
    assert pulls and "into staging" in pulls[0].text
    overflow = browser.execute_script("return document.documentElement.scrollWidth")
    assert overflow <= 375
    shoot(browser, artifacts, "healthy-375px")
    viewport(browser, 1280)
    browser.refresh()
    shoot(browser, artifacts, "healthy-desktop")
    assert sorted(p.name for p in artifacts.glob("*.png")) == [
        "deploying-375px.png", "deploying-desktop.png", "healthy-375px.png", "healthy-desktop.png"]
