"""The console in a real headless Chromium (Debian's chromium and chromium-driver, driven by
Selenium) against the console actor of a secured broker over real HTTP: log in, create a
topic and produce from the forms, see the record (a script in it shown as text, never run),
watch a group's lag fall without reloading, re-drive a dead letter. Screenshots land in a
temporary directory; ``RAY_BROKER_SCREENSHOTS=docs/console pytest tests/test_console_browser.py``
refreshes the ones the README shows."""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from pathlib import Path

import pytest

import ray_broker as rb
from tests.conftest import start_local_ray

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SCREENSHOTS_VARIABLE = "RAY_BROKER_SCREENSHOTS"
XSS = "<script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\">"
ADMIN = ("admin", "admin-pw")

pytestmark = pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
)


@pytest.fixture(scope="module")
def served(_session_ray, tmp_path_factory):
    from ray_broker.console import start_console

    start_local_ray()
    broker = rb.connect(
        data_dir=tmp_path_factory.mktemp("browser"),
        namespace=f"browser-{uuid.uuid4().hex[:8]}",
        config={"security.enabled": True},
        username=ADMIN[0],
        password=ADMIN[1],
    )
    broker.console = start_console(broker, "127.0.0.1:0")
    yield broker
    broker.shutdown()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,1000",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    asked = os.environ.get(SCREENSHOTS_VARIABLE)
    driver.screenshots = Path(asked) if asked else tmp_path_factory.mktemp("screenshots")
    driver.screenshots.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


def shot(driver, name: str) -> None:
    path = driver.screenshots / f"{name}.png"
    assert driver.save_screenshot(str(path)) and path.stat().st_size > 10_000


def wait_for(driver, check, timeout_s: float = 30.0):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout_s, poll_frequency=0.2).until(lambda d: check(d))


def by_id(driver, element_id: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id)


def log_in(driver, base: str) -> None:
    driver.get(f"{base}/console")
    assert "/console/login" in driver.current_url
    by_id(driver, "username").send_keys(ADMIN[0])
    by_id(driver, "password").send_keys(ADMIN[1])
    by_id(driver, "login").click()
    wait_for(driver, lambda d: d.current_url.rstrip("/").endswith("/console"))


def test_log_in_create_a_topic_produce_and_see_the_record_as_text(served, browser):
    base = served.console["url"].removesuffix("/console")
    log_in(browser, base)
    topic = f"orders-{uuid.uuid4().hex[:6]}"
    by_id(browser, "topic-name").send_keys(topic)
    by_id(browser, "create").click()
    wait_for(browser, lambda d: by_id(d, "topic-title").text == topic)
    by_id(browser, "produce-key").send_keys("customer-42")
    by_id(browser, "produce-value").send_keys(XSS)
    by_id(browser, "produce").click()
    wait_for(browser, lambda d: "Produced at partition:offset 0:0" in by_id(d, "produced").text)
    from selenium.webdriver.common.by import By

    values = [cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "#records td.value")]
    assert values == [XSS]  # shown as text: the markup arrived escaped
    assert browser.title != "pwned" and "pwned" not in browser.execute_script(
        "return document.title"
    )
    assert browser.find_elements(By.CSS_SELECTOR, "#records img") == []
    shot(browser, "topic")
    browser.get(f"{base}/console")
    wait_for(browser, lambda d: topic in by_id(d, "topics").text)
    shot(browser, "overview")


def test_a_groups_lag_falls_on_the_page_without_reloading(served, browser):
    base = served.console["url"].removesuffix("/console")
    topic = f"clicks-{uuid.uuid4().hex[:6]}"
    served.admin().create_topic(topic, 2)
    producer = served.producer()
    for i in range(600):
        producer.send(topic, value=f"click-{i}".encode(), key=str(i % 7).encode())
    producer.flush()
    group = f"analytics-{topic}"
    consumer = served.consumer(
        topic, group_id=group, auto_offset_reset="earliest", max_poll_records=40
    )
    consumer.poll(2000)
    consumer.commit()
    browser.get(f"{base}/console/groups/{group}")
    browser.execute_script("window.notReloaded = true")
    seen = [int(by_id(browser, "group-lag").text)]
    stop = threading.Event()

    def drain() -> None:  # a slow consumer: 40 records, a commit, a pause
        while not stop.is_set():
            consumer.poll(500)
            consumer.commit()
            time.sleep(0.4)

    worker = threading.Thread(target=drain, daemon=True)
    worker.start()
    try:
        deadline = time.monotonic() + 60
        while seen[-1] > 0 and time.monotonic() < deadline:
            time.sleep(0.5)
            text = by_id(browser, "group-lag").text
            if text.isdigit() and int(text) != seen[-1]:
                seen.append(int(text))
                if len(seen) == 3:
                    shot(browser, "group")
    finally:
        stop.set()
        worker.join(timeout=10)
        consumer.close()
    assert seen[0] > 0 and seen[-1] == 0, seen
    assert len(seen) >= 3 and seen == sorted(seen, reverse=True), seen
    assert browser.execute_script("return window.notReloaded") is True


def test_redrive_a_dead_letter_from_its_page(served, browser):
    base = served.console["url"].removesuffix("/console")
    topic = f"mail-{uuid.uuid4().hex[:6]}"
    served.admin().create_topic(topic, 1)
    producer = served.producer()
    producer.send(topic, value=b"to: nobody@invalid")
    producer.flush()
    member = served.share_consumer(
        topic,
        group_id="mailer",
        auto_offset_reset="earliest",
        share_acknowledgement_mode="explicit",
    )
    deadline = time.monotonic() + 30
    records = []
    while not records and time.monotonic() < deadline:
        records = [r for batch in member.poll(500).values() for r in batch]
    member.acknowledge(records[0], rb.AcknowledgeType.REJECT, error="550 no such mailbox")
    member.commit_sync()
    dlq = f"{topic}.mailer.dlq"
    browser.get(f"{base}/console/share-groups/mailer")
    wait_for(browser, lambda d: (d.refresh() or True) and dlq in d.page_source)
    shot(browser, "share-group")

    def letter_shown(driver) -> bool:
        driver.get(f"{base}/console/dead-letters/{dlq}")
        return "550 no such mailbox" in by_id(driver, "dead-letters").text

    wait_for(browser, letter_shown)
    shot(browser, "dead-letters")
    by_id(browser, "redrive").click()
    wait_for(browser, lambda d: "Re-drove 1 records" in by_id(d, "redriven").text)
    again = []
    deadline = time.monotonic() + 30
    while not again and time.monotonic() < deadline:
        again = [r for batch in member.poll(500).values() for r in batch]
    assert [r.value for r in again] == [b"to: nobody@invalid"]
    member.acknowledge(again[0], "accept")
    member.close()
