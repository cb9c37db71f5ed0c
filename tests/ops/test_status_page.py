"""The status page in real headless Chromium (Debian's `chromium` + `chromium-driver`, driven by
selenium): it loads from the gateway with no network beyond loopback, and the numbers it shows
equal GET /admin/policy. A screenshot is kept under tests/artifacts/."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from gateway.config.tenants import key_tenant_name
from tests.conftest import TEST_KEYS_ENV, ask
from tests.support.scripted_tier import ThreadedTier

from .conftest import ADMIN_KEY, ADMIN_KEY_ENV, FileGateway, FileGatewayStarter
from .test_savings import savings_config, send_mix

DASH = "\u2014"
VERSION = metadata.version("recserve")
# Headless and quiet: no GPU, no sandbox (root in CI), no calls home, a fresh profile per test.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1280,1100")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    chromium = shutil.which("chromium")
    driver_path = shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        pytest.skip("Debian packages chromium and chromium-driver are not installed (make system-deps)")
    options = Options()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    service = Service(executable_path=driver_path, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        driver.quit()


def pct(x: float | None) -> str:
    return DASH if x is None else f"{x * 100:.1f}%"


def fixed(x: float | None, digits: int) -> str:
    return DASH if x is None else f"{x:.{digits}f}"


def shown(driver: WebDriver, selector: str) -> tuple[str, str | None]:
    node = driver.find_element(By.CSS_SELECTOR, selector)
    return node.text, node.get_attribute("data-value")


def read_whole(check: Callable[[], None], attempts: int = 3) -> None:
    """Run `check`, which reads part of the page, again from the start if the page redrew meanwhile.

    The page redraws on its refresh timer; on a slow machine a redraw can land between two reads
    (StaleElementReferenceException). The part is read again, whole; nothing is asserted looser.
    """
    for attempt in range(attempts):
        try:
            check()
            return
        except StaleElementReferenceException:
            if attempt == attempts - 1:
                raise


def check_savings_row(browser: WebDriver, row: str, s: dict[str, Any]) -> None:
    """The savings row `row` (a CSS selector of its cells) shows the figures `s` of /admin/policy."""
    segments = browser.find_elements(By.CSS_SELECTOR, f"{row}[data-field=served] .seg")
    assert {g.get_attribute("data-tier"): int(g.get_attribute("data-count") or -1) for g in segments} == \
        s["served"], row
    widths = [g.size["width"] for g in segments]  # drawn in proportion to the requests
    for segment, width in zip(segments, widths, strict=True):
        share = int(segment.get_attribute("data-count") or 0) / s["requests"]
        assert width == pytest.approx(share * sum(widths), abs=2), row
    assert float(shown(browser, f"{row}[data-field=below-top]")[1] or "nan") == s["below_top"]["requests_share"]
    assert float(shown(browser, f"{row}[data-field=weighted-communication]")[1] or "nan") == \
        s["weighted_communication"]["vs_top_tier_only"]
    spend_text, spend_raw = shown(browser, f"{row}[data-field=spend]")
    assert float(spend_raw or "nan") == s["spend"]["vs_top_tier_only"]
    assert spend_text.startswith(pct(s["spend"]["vs_top_tier_only"])), row


def test_status_page_shows_what_admin_policy_says(file_gateway: FileGateway, browser: WebDriver,
                                                  artifacts_dir: Path) -> None:
    with file_gateway.sdk() as sdk:
        for i, p in enumerate([0.91, 0.12, 0.83, 0.74, 0.27, 0.66, 0.58, 0.19, 0.95]):
            ask(sdk, f"q{i} [device:{p}][edge:0.{(i * 3) % 9 + 1}]", max_tokens=16)
        ask(sdk, "c [device:0.7]", max_tokens=2, extra_body={"recserve": {"task": "classification"}})
    with file_gateway.admin() as http:
        assert http.patch("/admin/policy", json={"casserve": {"thresholds": {"edge": 0.65}}}).status_code == 200

    browser.get(f"{file_gateway.root}/admin/ui#key={ADMIN_KEY}")
    WebDriverWait(browser, 20).until(
        lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-loaded") == "true")
    with httpx.Client(base_url=file_gateway.root, headers={"authorization": f"Bearer {ADMIN_KEY}"}) as http:
        view: dict[str, Any] = http.get("/admin/policy").json()

    def check_page() -> None:
        assert shown(browser, "header [data-field=version]")[0] == str(view["version"])
        assert shown(browser, "header [data-field=recserve-version]")[0] == view["recserve_version"] == VERSION
        assert shown(browser, ".summary [data-field=requests]")[0] == str(view["requests"]) == "10"
        saved_text, saved_raw = shown(browser, ".summary [data-field=saved]")
        assert saved_text == pct(view["communication"]["saved"])
        assert float(saved_raw or "nan") == view["communication"]["saved"]
        for tier in view["tiers"]:
            card = f"[data-tier='{tier['name']}']"
            share_text, share_raw = shown(browser, f"{card} [data-field=share]")
            assert share_text == pct(tier["share"]), tier["name"]
            assert float(share_raw or "nan") == tier["share"]
            if tier["recserve"] is None:
                continue
            assert float(shown(browser, f"{card} [data-field=casserve-threshold]")[1] or "nan") == \
                tier["casserve"]["threshold"]
            for task, stats in tier["recserve"]["tasks"].items():
                box = f"{card} [data-task='{task}']"
                threshold_text, threshold_raw = shown(browser, f"{box} [data-field=threshold]")
                assert threshold_text == fixed(stats["threshold"], 4), (tier["name"], task)
                if stats["threshold"] is not None:
                    assert float(threshold_raw or "nan") == stats["threshold"]
                assert shown(browser, f"{box} [data-field=escalation-rate]")[0] == pct(stats["escalation_rate"])
                bars = browser.find_elements(By.CSS_SELECTOR, f"{box} svg rect.bar")
                assert [int(b.get_attribute("data-count") or -1) for b in bars] == stats["histogram"]

    read_whole(check_page)
    assert view["tiers"][1]["casserve"]["threshold"] == 0.65
    assert view["tiers"][0]["recserve"]["tasks"]["generation"]["window_length"] == 9

    assert not browser.find_element(By.ID, "key-form").is_displayed()
    screenshot = artifacts_dir / "status-page.png"
    assert browser.save_screenshot(str(screenshot))
    assert screenshot.stat().st_size > 10_000
    print(f"status page screenshot: {screenshot}")


def test_status_page_charts_savings_per_workload(start_file_gateway: FileGatewayStarter, browser: WebDriver,
                                                 tiers: dict[str, ThreadedTier], artifacts_dir: Path) -> None:
    gateway = start_file_gateway(savings_config(tiers))
    with gateway.sdk() as sdk:
        send_mix(gateway.root, sdk)
    browser.get(f"{gateway.root}/admin/ui#key={ADMIN_KEY}")
    WebDriverWait(browser, 20).until(
        lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-loaded") == "true")
    with httpx.Client(base_url=gateway.root, headers={"authorization": f"Bearer {ADMIN_KEY}"}) as http:
        savings: dict[str, Any] = http.get("/admin/policy").json()["savings"]

    assert shown(browser, "#savings [data-field=top-tier]")[0] == "cloud"
    rows = {"total": savings["total"], **savings["workloads"]}
    names = [n.get_attribute("data-workload") for n in browser.find_elements(By.CSS_SELECTOR, "#savings .name")]
    assert names == list(rows) == ["total", "bot", "tagger", "generation"]

    for name, s in rows.items():
        read_whole(partial(check_savings_row, browser, f"#savings [data-workload='{name}']", s))
    saved_text, saved_raw = shown(browser, ".summary [data-field=spend-saved]")
    assert float(saved_raw or "nan") == pytest.approx(1 - savings["total"]["spend"]["vs_top_tier_only"])
    assert saved_text == pct(1 - savings["total"]["spend"]["vs_top_tier_only"])
    browser.find_element(By.ID, "savings").screenshot(str(artifacts_dir / "status-page-savings.png"))
    screenshot = artifacts_dir / "status-page-with-savings.png"
    assert browser.save_screenshot(str(screenshot))
    assert screenshot.stat().st_size > 10_000
    print(f"status page screenshot: {screenshot}")


def test_status_page_without_the_key_says_so(file_gateway: FileGateway, browser: WebDriver) -> None:
    browser.get(f"{file_gateway.root}/admin/ui")
    WebDriverWait(browser, 20).until(
        lambda d: "admin key" in d.find_element(By.ID, "status").text.lower())
    assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-loaded") == "false"
    assert browser.find_element(By.ID, "key-form").is_displayed()


def test_status_page_charts_savings_per_tenant(start_file_gateway: FileGatewayStarter, browser: WebDriver,
                                               tiers: dict[str, ThreadedTier], monkeypatch: pytest.MonkeyPatch,
                                               artifacts_dir: Path) -> None:
    """Two tenants (a group of keys, a key of its own): one row each, by name, never by key."""
    monkeypatch.setenv(TEST_KEYS_ENV, "sk-status-solo-key")
    monkeypatch.setenv("RECSERVE_STATUS_TEAM_KEYS", "sk-status-team-key")
    gateway = start_file_gateway({**savings_config(tiers),
                                  "auth": {"api_keys_env": TEST_KEYS_ENV, "admin_key_env": ADMIN_KEY_ENV,
                                           "tenants": {"team-a": {"keys_env": "RECSERVE_STATUS_TEAM_KEYS"}}}})
    for key, prompts in (("sk-status-team-key", ["a [device:0.9]", "b [device:0.5][edge:0.9]"]),
                         ("sk-status-solo-key", ["c [device:0.5][edge:0.5]"])):
        with openai.OpenAI(base_url=gateway.url, api_key=key, max_retries=0) as sdk:
            for prompt in prompts:
                ask(sdk, prompt, max_tokens=16, extra_body={"recserve": {"workload": "tagger"}})
    browser.get(f"{gateway.root}/admin/ui#key={ADMIN_KEY}")
    WebDriverWait(browser, 20).until(
        lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-loaded") == "true")
    with gateway.admin() as http:
        tenants: dict[str, Any] = http.get("/admin/policy").json()["savings"]["tenants"]
    solo = key_tenant_name("sk-status-solo-key", "recserve")
    names = [n.get_attribute("data-tenant") for n in browser.find_elements(By.CSS_SELECTOR, "#tenant-savings .name")]
    assert names == list(tenants) == ["team-a", solo]  # most requests first
    for name, figures in tenants.items():
        read_whole(partial(check_savings_row, browser, f"#tenant-savings [data-tenant='{name}']", figures["total"]))
    assert "sk-status" not in browser.page_source
    browser.find_element(By.ID, "tenant-savings").screenshot(str(artifacts_dir / "status-page-tenants.png"))
