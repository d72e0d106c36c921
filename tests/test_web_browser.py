"""The loop closed in a real browser (Debian's Chromium, driven by Selenium through
Debian's chromedriver; nothing downloaded): a clerk opens the link in the letter the
daemon wrote and answers on a phone-sized screen; a supervisor opens the board from the
digest and decides on a desktop-sized one; the planner follows."""

from __future__ import annotations

import email
import email.policy
import json
import re
import shutil
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import SEED, Cli
from tests.web_server import bind, serving

UNIT = "环境保护局"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
URL = re.compile(r"https?://127\.0\.0\.1:\d+/[ls]/[A-Za-z0-9_.\-]+")


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    if not Path(CHROMEDRIVER).exists():
        pytest.fail("chromedriver is missing: `make packages` installs chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1280,900")
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


def width(driver: WebDriver, pixels: int) -> None:
    """A phone (390) or a desktop (1280): headless Chromium keeps windows ≥ 500 px wide,
    so the device metrics are emulated."""
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": pixels, "height": 900, "deviceScaleFactor": 1, "mobile": pixels < 500},
    )


def no_sideways_scroll(driver: WebDriver) -> None:
    inner, scroll = driver.execute_script(
        "return [window.innerWidth, document.documentElement.scrollWidth]"
    )
    assert scroll <= inner, f"the page scrolls sideways at {inner} px ({scroll} px wide)"


def open_part(driver: WebDriver, number: int, action: str) -> Any:
    section = driver.find_element(By.ID, f"task-{number}")
    section.find_element(By.XPATH, f".//summary[contains(., '{action}')]").click()
    return section.find_element(By.XPATH, f".//summary[contains(., '{action}')]/..")


def submit(driver: WebDriver, button: Any) -> None:
    """Click a form's button and wait for the page it leads to."""
    page = driver.find_element(By.TAG_NAME, "html")
    button.click()
    wait = WebDriverWait(driver, 20)
    wait.until(lambda _: _left(page))
    wait.until(lambda d: d.execute_script("return document.readyState") == "complete")
    wait.until(expected_conditions.presence_of_element_located((By.TAG_NAME, "footer")))


def _left(page: Any) -> bool:
    """Whether the browser has left a page: its element is stale, or (ChromeDriver 156,
    in a race with the navigation) "does not belong to the document"."""
    try:
        page.is_enabled()
    except StaleElementReferenceException:
        return True
    except WebDriverException as exc:
        if "does not belong to the document" in str(exc):
            return True
        raise
    return False


def notice(driver: WebDriver) -> str:
    """What the page says after a form was sent (the page itself if it says no notice)."""
    found = driver.find_elements(By.CSS_SELECTOR, ".notice")
    return found[0].text if found else driver.find_element(By.TAG_NAME, "body").text


def link_in(folder: Path, to: str, kind: str) -> str:
    """The link in the plain text of the e-mail the daemon wrote to ``to``."""
    for path in sorted(folder.rglob(f"{kind}-*.eml")):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        if to in str(message["To"]):
            body = message.get_body(("plain",))
            assert isinstance(body, EmailMessage)
            found = URL.search(str(body.get_content()))
            assert found, f"no link in {path.name}"
            return found.group(0)
    raise AssertionError(f"no {kind} to {to} in {folder}")


def plan(cli: Cli, moment: str) -> list[dict[str, Any]]:
    result = cli("plan", "--at", moment, "--json")
    assert result.code == 0, result.err
    items: list[dict[str, Any]] = json.loads(result.out)
    return items


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_clerk_answers_and_a_supervisor_decides_in_a_browser(
    cli: Cli,
    isolated_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    browser: WebDriver,
) -> None:
    port = bind(monkeypatch)
    assert cli("import", str(SEED)).code == 0
    assert cli("digest", "--at", "2018-10-08 08:45").code == 0
    assert cli("run", "--once", "--at", "2018-10-08 09:30").code == 0
    outbox = isolated_env / "var" / "outbox"
    letter = link_in(outbox, UNIT, "letter")
    board = link_in(outbox, "gongjianban", "digest")
    pdf = isolated_env / "验收报告.pdf"
    pdf.write_bytes(b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n")

    with serving(port):
        # the clerk, on a phone
        width(browser, 390)
        browser.get(letter)
        assert f"{UNIT} · 督办事项" in browser.title
        no_sideways_scroll(browser)
        form = open_part(browser, 28, "报送进展")
        form.find_element(By.NAME, "note").send_keys("已完成方案起草，正在征求意见")
        submit(browser, form.find_element(By.CSS_SELECTOR, "button[type=submit]"))
        assert "进展已报送" in notice(browser)
        no_sideways_scroll(browser)

        for number, note in ((1, "供热管网改造已完成，附验收报告"), (27, "规划方案已印发")):
            form = open_part(browser, number, "报告办结")
            form.find_element(By.NAME, "note").send_keys(note)
            if number == 1:
                form.find_element(By.NAME, "file").send_keys(str(pdf))
            submit(browser, form.find_element(By.CSS_SELECTOR, "button[type=submit]"))
            assert "等待审核" in notice(browser)

        form = open_part(browser, 14, "申请延期")
        due = form.find_element(By.NAME, "due")
        browser.execute_script("arguments[0].value = '2018-12-31'", due)
        form.find_element(By.NAME, "note").send_keys("补贴资金下达推迟，需延至年底")
        submit(browser, form.find_element(By.CSS_SELECTOR, "button[type=submit]"))
        assert "延期申请已提交" in notice(browser)
        assert "已申请延期至2018年12月31日" in browser.find_element(By.ID, "task-14").text

        # the supervisor, at a desk, from the digest
        width(browser, 1280)
        browser.get(board)
        assert "督办看板" in browser.title
        no_sideways_scroll(browser)
        submit(browser, browser.find_element(By.PARTIAL_LINK_TEXT, "审核办结"))
        no_sideways_scroll(browser)
        cards = {
            int(re.search(r"第(\d+)项", c.text).group(1)): c  # type: ignore[union-attr]
            for c in browser.find_elements(By.CSS_SELECTOR, "section.card")
        }
        assert set(cards) == {1, 27, 14}
        assert "验收报告.pdf" in cards[1].text
        submit(browser, cards[1].find_element(By.CSS_SELECTOR, "button[value=approve]"))
        assert "已处理" in notice(browser)
        card = browser.find_element(By.XPATH, "//section[contains(., '第27项')]")
        card.find_element(By.NAME, "note").send_keys("未附印发文件，请补充")
        submit(browser, card.find_element(By.CSS_SELECTOR, "button[value=return]"))
        card = browser.find_element(By.XPATH, "//section[contains(., '第14项')]")
        submit(browser, card.find_element(By.CSS_SELECTOR, "button[value=approve]"))
        assert browser.find_elements(By.CSS_SELECTOR, "section.card") == []

        # the task's history on the board, and the board on a phone
        browser.get(board.replace("/s/", "/s/", 1) + "/task/1")
        history = browser.find_element(By.TAG_NAME, "main").text
        for said in ("签收", "报告办结", "审核通过", "附件"):
            assert said in history
        width(browser, 390)
        for page in (board, board + "/review", board + "/task/1", letter):
            browser.get(page)
            no_sideways_scroll(browser)

        # the clerk sees the outcome
        browser.get(letter)
        assert "办结报告已退回：未附印发文件，请补充" in browser.find_element(By.ID, "task-27").text
        assert "已批准延期" in browser.find_element(By.ID, "task-14").text

    # the planner follows: no reminder for the approved part, reminders back for the
    # returned one, the extended one at its new date
    items = plan(cli, "2018-10-15 09:30")
    mine = {(i["task"], i["kind"]) for i in items if i["unit"] == UNIT}
    assert not any(task == 1 for task, _ in mine), "reminded of a completion approved"
    assert (27, "overdue") in mine, "a returned report is not reminded again"
    assert not any(task == 14 for task, _ in mine), "reminded of a date extended"
    later = {(i["task"], i["kind"]) for i in plan(cli, "2018-12-24 09:30") if i["unit"] == UNIT}
    assert (14, "upcoming") in later
    tasks = json.loads(cli("tasks", "--json").out)["tasks"]
    parts = {t["no"]: {u["name"]: u for u in t["units"]} for t in tasks}
    assert parts[1][UNIT]["status"] == "done"
    assert parts[27][UNIT]["status"] == "open"
    assert parts[14][UNIT]["due"] == "2018-12-31"
