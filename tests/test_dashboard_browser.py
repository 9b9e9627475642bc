"""The dashboard in a real headless Chromium (Debian's), driven by Playwright.

``bin/test`` installs chromium through ``bin/setup-browser`` when it is missing;
run directly, these tests fail (never skip) without it. Each test saves a
screenshot in its pytest temporary directory; with
``TASKGATE_SAVE_DASHBOARD_SCREENSHOT=1`` the first test also writes
``docs/dashboard.png``, the picture the README shows.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.helpers import ROOT, wait_for

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("TASKGATE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
KEY = "browser-test-key-0123456789"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"{CHROMIUM} is missing: run bin/setup-browser (bin/test does) or "
            "apt-get install chromium, or set TASKGATE_CHROMIUM"
        )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=60_000
        )
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    opened = context.new_page()
    opened.set_default_timeout(15_000)
    yield opened
    context.close()


def post(stack, name, body, headers=None, **query):
    response = requests.post(
        stack.url(f"/v1/tasks/{name}"),
        json=body,
        params=query,
        headers=headers,
        timeout=30,
    )
    assert response.status_code in (200, 202, 500), response.text
    return response.json()


def task_row(page: Page, task_id: str):
    return page.locator(f'#tasks tr[data-task-id="{task_id}"]')


def progress_value(page: Page, task_id: str) -> float:
    bar = task_row(page, task_id).locator("progress")
    return float(bar.evaluate("element => element.value"))


def test_dashboard_shows_workers_tasks_progress_and_cancels(
    make_stack, redis_server_instance, page, tmp_path
):
    stack = make_stack(
        redis_server_instance.url(14),
        TASKGATE_WORKER_PROCESSES="3",
        TASKGATE_TASK_MODULES="worker.tasks",  # the examples only, as users see them
    ).start_all()
    echo = post(stack, "echo", {"greeting": "hello"})["id"]
    failed = post(stack, "fail", {}, wait="5")["task_id"]
    counting = post(stack, "countdown", {"steps": 40, "interval_s": 0.25}, wait="0")
    sleeper = post(stack, "sleep", {"seconds": 60}, wait="0")["id"]

    page.goto(stack.url("/dashboard"))

    expect(page.locator("#live")).to_have_attribute("data-state", "live")
    worker = page.locator("#workers tbody tr[data-worker-id]")
    expect(worker).to_have_count(1)
    expect(worker).to_contain_text(f"pid {stack_pool_pid(stack)}")
    expect(task_row(page, echo)).to_have_attribute("data-status", "succeeded")
    expect(task_row(page, failed)).to_have_attribute("data-status", "failed")
    expect(task_row(page, sleeper)).to_have_attribute("data-status", "running")
    expect(page.locator('#names tbody tr[data-name="echo"]')).to_be_visible()
    expect(page.locator("#chart rect.succeeded").first).to_be_attached()

    # The countdown's bar moves as the page polls.
    expect(task_row(page, counting["id"]).locator("progress")).to_be_visible()
    first = progress_value(page, counting["id"])
    wait_for(
        lambda: progress_value(page, counting["id"]) > first,
        timeout_s=10,
        interval_s=0.2,
        what="the progress bar to move",
    )
    assert progress_value(page, counting["id"]) > first

    # A click shows the task's record.
    task_row(page, echo).locator("td").first.click()
    expect(page.locator("#detail")).to_be_visible()
    expect(page.locator("#detail-id")).to_have_text(echo)
    expect(page.locator("#detail-record")).to_contain_text('"greeting": "hello"')
    expect(page.locator("#detail-status")).to_have_text("succeeded")
    expect(page.locator("#detail-cancel")).to_be_disabled()

    task_row(page, counting["id"]).locator("td").first.click()
    expect(page.locator("#detail-record")).to_contain_text('"progress"')
    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("TASKGATE_SAVE_DASHBOARD_SCREENSHOT") == "1":
        page.screenshot(path=str(ROOT / "docs" / "dashboard.png"), full_page=True)

    # The row's Cancel button cancels the running sleep.
    task_row(page, sleeper).locator("button.cancel").click()
    wait_for(
        lambda: (
            requests.get(stack.url(f"/v1/tasks/{sleeper}"), timeout=10).json()["status"]
            == "cancelled"
        ),
        what="the task to be cancelled",
    )
    expect(task_row(page, sleeper)).to_have_attribute("data-status", "cancelled")
    expect(page.locator("#message")).to_contain_text("cancelled")


def stack_pool_pid(stack) -> int:
    workers = requests.get(stack.url("/v1/workers"), timeout=10).json()["workers"]
    return int(workers[0]["pid"])


def test_dashboard_with_keys_works_only_after_the_key_is_entered(
    make_stack, redis_server_instance, page, tmp_path
):
    stack = make_stack(redis_server_instance.url(15), TASKGATE_API_KEYS=KEY).start_all()
    task = post(stack, "echo", {"n": 1}, headers={"Authorization": f"Bearer {KEY}"})[
        "id"
    ]
    sent: list[str | None] = []
    page.on(
        "request",
        lambda request: (
            sent.append(request.headers.get("authorization"))
            if "/v1/" in request.url
            else None
        ),
    )

    page.goto(stack.url("/dashboard"))

    expect(page.locator("#key-panel")).to_be_visible()
    expect(page.locator("#key-problem")).to_contain_text("401 Unauthorized")
    expect(page.locator("#live")).to_have_attribute("data-state", "locked")
    expect(page.locator("#workers tbody tr[data-worker-id]")).to_have_count(0)
    page.screenshot(path=str(tmp_path / "dashboard-locked.png"))

    page.fill("#key-input", "not-the-right-key-at-all")
    page.click("#key-save")
    expect(page.locator("#key-problem")).to_contain_text("403 Forbidden")
    expect(page.locator("#key-panel")).to_be_visible()

    page.fill("#key-input", KEY)
    page.click("#key-save")
    expect(page.locator("#key-panel")).to_be_hidden()
    expect(page.locator("#live")).to_have_attribute("data-state", "live")
    expect(page.locator("#workers tbody tr[data-worker-id]")).to_have_count(1)
    expect(task_row(page, task)).to_have_attribute("data-status", "succeeded")
    assert page.evaluate("sessionStorage.getItem('taskgate.apiKey')") == KEY

    # Every call since the key went in carries it, in the next rounds too.
    seen = len(sent)
    # Playwright hands events over only while it is called: wait through it.
    wait_for(
        lambda: page.wait_for_timeout(100) or len(sent) >= seen + 6,
        what="two more polling rounds",
    )
    assert set(sent[seen:]) == {f"Bearer {KEY}"}
    assert None in sent  # the first round, before the key, had none
    page.screenshot(path=str(tmp_path / "dashboard-unlocked.png"))


def test_docs_screenshot_is_committed():
    shot = Path(ROOT / "docs" / "dashboard.png")
    assert shot.is_file()
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
