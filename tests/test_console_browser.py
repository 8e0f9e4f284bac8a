"""The operator console in a real browser: Debian's Chromium, driven by Playwright, against gunicorn.

One browser session per run (so one per backend in CI): gunicorn with two
workers on the run's database, moto's S3 and the fake DLCS. The DLCS fails
the named query, so the manifest's last completion leaves it rebuild-failed;
an operator signs in, finds it under Failed with the reason, sees a forged
form refused (403, the DLCS not asked), presses Rebuild once the DLCS has
recovered and sees it published; signed out, or without the session, the
console refuses.

The browser is Debian's ``chromium`` (``.ci/run`` installs it); Playwright is
only the driver here and never downloads a browser (no ``playwright install``).
Without the browser the test skips locally, and fails in CI (``CI=true``).
``CONSOLE_SCREENSHOTS=DIR`` saves a screenshot of each page it visits.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import requests

from tests.conftest import ADMIN_TOKEN
from tests.test_end_to_end import (BASE_URL, ServiceClient, assert_no_tracebacks,
                                   assert_published, make_plan, notification,
                                   register_with_fake, running_service, service_environment)

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def _missing() -> str | None:
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is missing (apt-get install chromium; .ci/run does)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -r requirements.txt)"
    return None


@pytest.fixture
def browser():
    """Debian's Chromium, headless; CI fails rather than skips when it is missing."""
    missing = _missing()
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the browser test, but {missing}")
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def running(database_url, bucket, fake_dlcs, moto_server, tmp_path):
    name, _ = bucket
    env = service_environment(database_url=database_url, storage_url=f"s3://{name}/published",
                              dlcs_url=fake_dlcs.url, s3_endpoint=moto_server.url)
    with running_service(env, workers=2, threads=2) as server:
        client = ServiceClient(server.url)
        try:
            yield server, client
        finally:
            client.close()


class Shots:
    """Screenshots of the pages visited, when CONSOLE_SCREENSHOTS names a folder."""

    def __init__(self):
        folder = os.environ.get("CONSOLE_SCREENSHOTS")
        self.folder = Path(folder) if folder else None

    def take(self, page, name: str) -> None:
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(self.folder / f"{name}.png"), full_page=True)


def test_an_operator_rebuilds_a_failed_manifest_in_the_browser(running, browser, fake_dlcs):
    from playwright.sync_api import expect

    server, client = running
    plan = make_plan(2, "letters", {7001: 2})
    register_with_fake(fake_dlcs, plan)
    assert client.register(plan).status_code == 202
    fake_dlcs.fail_next(1, status=500)  # the DLCS fails the named query, once
    failed = client.deliver(notification(7001, 2, 2), "msg_last")
    assert failed.status_code == 503
    console, manifest_page = f"{server.url}/console", f"{server.url}/console/manifests/2/letters"
    shots = Shots()

    context = browser.new_context()
    context.set_default_timeout(10_000)
    page = context.new_page()

    # Nothing without signing in: the sign-in form, with the status that says so.
    refused = page.goto(manifest_page)
    assert refused.status == 401
    expect(page.get_by_label("Admin token")).to_be_visible()
    expect(page.get_by_text("2/letters")).to_have_count(0)
    page.get_by_label("Admin token").fill("not-the-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("That is not the admin token.")
    shots.take(page, "sign-in")

    page.get_by_label("Admin token").fill(ADMIN_TOKEN)
    page.get_by_role("button", name="Sign in").click()
    cookie = next(c for c in context.cookies() if c["name"] == "console_session")
    assert (cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (True, "Strict",
                                                                        "/console")
    # Signing in led back to the manifest first asked for; now from the list of failures.
    expect(page.locator("h1")).to_contain_text("2/letters")
    sections = page.get_by_role("navigation", name="Sections")
    sections.get_by_role("link", name="Manifests").click()
    page.get_by_role("link", name="Failed").click()
    row = page.locator("tbody tr", has_text="2/letters")
    expect(row).to_contain_text("rebuild failed")
    expect(row).to_contain_text("answered 500")
    shots.take(page, "manifests-failed")
    row.get_by_role("link", name="2/letters").click()
    expect(page.locator("h1")).to_contain_text("rebuild failed")
    expect(page.locator(".problem")).to_contain_text("answered 500")
    shots.take(page, "manifest-failed")

    # A form whose CSRF token is not the session's changes nothing.
    asked = fake_dlcs.calls(2, [7001])
    page.locator("form[action$='/rebuild'] input[name=csrf]").evaluate(
        "field => field.value = 'forged'")
    with page.expect_response(lambda r: r.url.endswith("/rebuild")) as forged:
        page.get_by_role("button", name="Rebuild").click()
    assert forged.value.status == 403
    expect(page.locator("h1")).to_have_text("Form refused")
    assert fake_dlcs.calls(2, [7001]) == asked
    assert client.status(plan)["state"] == "rebuild-failed"

    # The DLCS has recovered (its fault was used up): Rebuild publishes.
    page.goto(manifest_page)
    page.get_by_role("button", name="Rebuild").click()
    expect(page.locator(".flash.ok")).to_have_text("Rebuilt and published 2/letters.")
    expect(page.locator("h1")).to_contain_text("complete")
    expect(page.locator("a.published")).to_have_attribute("href", plan.url(BASE_URL))
    shots.take(page, "manifest-published")
    assert fake_dlcs.calls(2, [7001]) == asked + 1
    assert_published(client.manifest(plan).json(), plan)

    sections.get_by_role("link", name="Deliveries").click()
    expect(page.locator("tbody tr", has_text="msg_last")).to_contain_text("manifest-completed")
    shots.take(page, "deliveries")

    # Signed out, the page is refused again; so is an action from a browser with no session.
    page.get_by_role("button", name="Sign out").click()
    assert page.goto(manifest_page).status == 401
    stranger = browser.new_context()
    answer = stranger.request.post(f"{manifest_page}/rebuild", form={"csrf": "x"},
                                   headers={"Accept": "text/html"})
    assert answer.status == 401
    stranger.close()
    context.close()
    assert fake_dlcs.calls(2, [7001]) == asked + 1
    # Over plain HTTP the cookie cannot be Secure (the browser would drop it); behind a
    # TLS proxy gunicorn trusts (loopback, by default) it is.
    direct = requests.get(f"{console}/", timeout=10)
    assert direct.status_code == 200 and "Secure" not in direct.headers["Set-Cookie"]
    proxied = requests.get(f"{console}/", headers={"X-Forwarded-Proto": "https"}, timeout=10)
    assert "; Secure" in proxied.headers["Set-Cookie"]
    assert_no_tracebacks(server)
