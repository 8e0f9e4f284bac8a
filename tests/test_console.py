"""The operator console through Flask's test client: signing in, the cookie, CSRF, every page.

The DLCS is mocked with ``responses``; a ``RequestsMock`` with nothing
registered proves that a refused request called nothing (any call would fail).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import email.utils
import html
import json
import re

import pytest
import responses

from tests.conftest import ADMIN_TOKEN, sample
from tests.manifest_states import (API, EVERY_STATE, api_settings, deliver, make_every_state,
                                   named_query, register)
from webhook import create_app, db
from webhook.routes.console_session import COOKIE_NAME, SESSION_SECONDS

HTML = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
PROBLEM = "application/problem+json"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture
def app(settings):
    application = create_app(api_settings(settings))
    yield application
    db.dispose()


class Console:
    """A browser's view of the console: cookies kept by the test client, pages as HTML."""

    def __init__(self, client):
        self.client = client
        self.csrf: str | None = None

    def get(self, url: str, **kwargs):
        response = self.client.get(url, headers=HTML, **kwargs)
        found = _CSRF.search(response.get_data(as_text=True))
        if found:
            self.csrf = found.group(1)
        return response

    def post(self, url: str, data: dict | None = None, *, csrf: str | None = "page", **kwargs):
        form = dict(data or {})
        if csrf is not None:
            form["csrf"] = self.csrf if csrf == "page" else csrf
        return self.client.post(url, data=form, headers=HTML, **kwargs)

    def sign_in(self, token: str = ADMIN_TOKEN, **form):
        self.get("/console/")
        return self.post("/console/sign-in", {"token": token, **form})

    def follow(self, response):
        """GET where a 303 leads, as a browser does."""
        assert response.status_code == 303, response.get_data(as_text=True)[:500]
        return self.get(response.headers["Location"])


@pytest.fixture
def console(client) -> Console:
    signed = Console(client)
    assert signed.follow(signed.sign_in()).status_code == 200
    return signed


def text(response) -> str:
    return response.get_data(as_text=True)


def set_cookie(response) -> str:
    [cookie] = [v for k, v in response.headers.items()
                if k == "Set-Cookie" and v.startswith(COOKIE_NAME + "=")]
    return cookie


def state_of(client, admin, slug: str) -> str:
    return client.get(f"/2/manifests/{slug}/status", headers=admin).get_json()["state"]


# ----------------------------------------------------------------- no token, no console


def test_without_an_admin_token_there_is_no_console(settings):
    app = create_app(dataclasses.replace(settings, admin_token=None))
    try:
        client = app.test_client()
        for method, url in (("GET", "/console/"), ("GET", "/console/manifests"),
                            ("POST", "/console/sign-in"), ("GET", "/console/console.css")):
            response = client.open(url, method=method, headers=HTML, data={"token": ""})
            assert response.status_code == 404, url
            assert response.mimetype == PROBLEM
            assert response.get_json()["type"].endswith(":console-disabled")
            assert "Set-Cookie" not in response.headers
    finally:
        db.dispose()


# ----------------------------------------------------------------- signing in


@pytest.mark.parametrize("url", ["/console/manifests", "/console/manifests?state=complete",
                                 "/console/manifests/2/failed", "/console/deliveries"])
def test_no_page_shows_anything_without_signing_in(client, admin, url):
    make_every_state(client, admin)
    page = Console(client).get(url)
    assert page.status_code == 401
    assert 'name="token"' in text(page)  # the sign-in form, which brings you back here
    assert f'name="next" value="{url}"' in text(page).replace("&amp;", "&")
    assert not any(f">2/{made.slug}<" in text(page) for made in EVERY_STATE)
    problem = client.get(url)  # a client that does not ask for HTML gets problem+json
    assert problem.status_code == 401 and problem.mimetype == PROBLEM


@pytest.mark.parametrize("action", ["/console/manifests/2/failed/rebuild",
                                    "/console/manifests/2/ingesting/reconcile",
                                    "/console/deliveries/msg_failed/replay",
                                    "/console/sign-out"])
def test_no_action_runs_without_signing_in(client, admin, action):
    make_every_state(client, admin)
    outsider = Console(client)
    outsider.get("/console/")  # a session with a CSRF token, but not signed in
    with responses.RequestsMock():  # any call to the DLCS would fail the test
        answer = outsider.post(action)
    assert answer.status_code == 401
    assert state_of(client, admin, "failed") == "rebuild-failed"


@pytest.mark.parametrize("token", ["", "wrong", ADMIN_TOKEN[:-1], ADMIN_TOKEN + "x",
                                   ADMIN_TOKEN.upper(), "é" * 10])
def test_anything_but_the_admin_token_does_not_sign_in(client, token):
    visitor = Console(client)
    answer = visitor.sign_in(token)
    assert answer.status_code == 401
    assert "That is not the admin token." in text(answer)
    assert visitor.get("/console/manifests").status_code == 401


def test_signing_in_leads_back_to_the_page_asked_for_and_only_there(client):
    visitor = Console(client)
    assert visitor.sign_in(next="/console/deliveries?outcome=failed").headers["Location"] == \
        "/console/deliveries?outcome=failed"
    for elsewhere in ("https://evil.example/", "//evil.example/console/", "/\\evil.example",
                      "/metrics", "javascript:alert(1)"):
        visitor = Console(client.application.test_client())
        assert visitor.sign_in(next=elsewhere).headers["Location"] == "/console/manifests"


def test_the_session_cookie_is_http_only_strict_and_expires(client):
    visitor = Console(client)
    before = visitor.get("/console/")
    assert "Secure" not in set_cookie(before)  # plain HTTP: a Secure cookie would be lost
    answer = visitor.sign_in()
    cookie = set_cookie(answer)
    attributes = {part.strip().split("=")[0]: part.strip().partition("=")[2]
                  for part in cookie.split(";")[1:]}
    assert {"HttpOnly", "SameSite", "Path", "Expires"} <= attributes.keys()
    assert attributes["SameSite"] == "Strict" and attributes["Path"] == "/console"
    assert "Secure" not in attributes
    expires = email.utils.parsedate_to_datetime(attributes["Expires"])
    left = expires - dt.datetime.now(dt.timezone.utc)
    assert dt.timedelta(seconds=SESSION_SECONDS - 60) < left <= dt.timedelta(
        seconds=SESSION_SECONDS)
    assert ADMIN_TOKEN not in cookie


def test_the_session_cookie_is_secure_over_https(client):
    page = client.get("/console/", headers=HTML, base_url="https://console.example")
    assert "; Secure" in set_cookie(page)
    # A forwarding header alone proves nothing: only the WSGI server decides the scheme.
    forged = client.get("/console/", headers={**HTML, "X-Forwarded-Proto": "https"})
    assert "Secure" not in set_cookie(forged)


def test_a_session_ends_after_its_lifetime(app, console):
    reading = app.extensions["webhook.services"].reading  # the console's clock
    start = reading.clock()
    reading.clock = lambda: start + dt.timedelta(seconds=SESSION_SECONDS - 120)
    assert console.get("/console/manifests").status_code == 200
    reading.clock = lambda: start + dt.timedelta(seconds=SESSION_SECONDS + 1)
    assert console.get("/console/manifests").status_code == 401


def test_a_cookie_signed_for_another_token_or_changed_is_refused(settings, client, console):
    value = client.get_cookie(COOKIE_NAME, path="/console").value
    other = create_app(dataclasses.replace(api_settings(settings),
                                           admin_token="another-admin-token-0123456789"))
    try:
        stranger = other.test_client()
        stranger.set_cookie(COOKIE_NAME, value, path="/console")
        assert stranger.get("/console/manifests", headers=HTML).status_code == 401
    finally:
        db.dispose()
    payload, _, signature = value.partition(".")
    forged = json.dumps({"signed_in_at": 4102444800, "csrf": "x"}).encode()
    client.set_cookie(COOKIE_NAME, base64.urlsafe_b64encode(forged).decode().rstrip("=")
                      + "." + signature, path="/console")
    assert client.get("/console/manifests", headers=HTML).status_code == 401


def test_signing_out_ends_the_session(console):
    answer = console.post("/console/sign-out")
    assert answer.status_code == 303 and answer.headers["Location"] == "/console/"
    assert set_cookie(answer).startswith(f"{COOKIE_NAME}=;")  # deleted
    assert console.get("/console/manifests").status_code == 401


def test_the_api_has_no_session(client, admin, console):
    for response in (client.get("/healthz"), client.get("/2/manifests", headers=admin),
                     client.get("/deliveries", headers=admin)):
        assert response.status_code == 200
        assert "Set-Cookie" not in response.headers
        assert "Cookie" not in response.headers.get("Vary", "")


# ----------------------------------------------------------------- CSRF


@pytest.mark.parametrize("csrf", [None, "", "wrong", "other-session"])
def test_a_form_without_this_sessions_csrf_token_changes_nothing(client, admin, console, csrf):
    make_every_state(client, admin)
    if csrf == "other-session":
        other = Console(client.application.test_client())
        other.sign_in()
        csrf = other.csrf
    with responses.RequestsMock():  # the DLCS has recovered, but must not be asked
        for action in ("/console/manifests/2/failed/rebuild",
                       "/console/manifests/2/ingesting/reconcile",
                       "/console/deliveries/msg_failed/replay", "/console/sign-out"):
            answer = console.post(action, csrf=csrf)
            assert answer.status_code == 403, action
            assert "nothing was changed" in text(answer)
    assert state_of(client, admin, "failed") == "rebuild-failed"
    assert console.get("/console/manifests").status_code == 200  # still signed in
    problem = client.post("/console/manifests/2/failed/rebuild", data={"csrf": "wrong"})
    assert problem.status_code == 403 and problem.mimetype == PROBLEM


def test_signing_in_needs_the_forms_csrf_token_too(client):
    visitor = Console(client)
    visitor.get("/console/")
    assert visitor.post("/console/sign-in", {"token": ADMIN_TOKEN}, csrf=None).status_code == 403
    fresh = Console(client.application.test_client())  # no session at all: no token to match
    assert fresh.post("/console/sign-in", {"token": ADMIN_TOKEN}, csrf="x").status_code == 403
    assert visitor.get("/console/manifests").status_code == 401


def test_signing_in_gives_a_new_csrf_token(client):
    visitor = Console(client)
    visitor.get("/console/")
    before = visitor.csrf
    visitor.follow(visitor.sign_in())
    assert visitor.csrf != before  # a token planted before signing in is worth nothing


# ----------------------------------------------------------------- pages


TABS = {"ingesting": {"ingesting", "queue-interrupted", "queue-stopped", "queueing",
                      "rebuilding"},
        "complete": {"complete", "missing-one"},
        "rebuild-failed": {"crashed", "failed"}}


def test_every_page_renders_for_every_state(client, admin, console):
    made = make_every_state(client, admin)
    deliver(client, 9999, msg_id="msg_ignored")  # no manifest has batch 9999
    everything = text(console.get("/console/manifests"))
    assert all(f">2/{m.slug}<" in everything for m in made)
    for state, slugs in TABS.items():
        page = console.get(f"/console/manifests?state={state}")
        assert page.status_code == 200
        shown = set(re.findall(r'class="manifest" href="/console/manifests/2/([^"]+)"',
                               text(page)))
        assert shown == slugs, state
    for m in made:
        page = console.get(f"/console/manifests/2/{m.slug}")
        assert page.status_code == 200, m.slug
        body = text(page)
        assert f'<h1>2/{m.slug} <span class="state state-{m.state}">' in body, m.slug
        if m.error:
            assert m.error in body, m.slug
        assert ("2/5/bar" in body) == bool(m.missing), m.slug  # the missing asset is named
        published = "https://presentation.example/2/manifests/" + m.slug
        assert (f'href="{published}"' in body) == (m.slug in (
            "complete", "missing-one", "crashed", "rebuilding")), m.slug
    for outcome in ("", "ignored", "batch-completed", "manifest-completed", "duplicate",
                    "unprocessable", "failed"):
        page = console.get(f"/console/deliveries?outcome={outcome}&batch=")
        assert page.status_code == 200, outcome
    failed = text(console.get("/console/deliveries?outcome=failed"))
    assert "2/failed" in failed and "Replay" in failed


def test_an_unknown_or_impossible_manifest_is_a_404_page(console):
    for url in ("/console/manifests/2/nothing-here", "/console/manifests/0/x",
                f"/console/manifests/{2**31}/x", "/console/manifests/2/no.dots"):
        assert console.get(url).status_code == 404, url


@pytest.mark.parametrize("url", ["/console/manifests?state=lost", "/console/manifests?limit=0",
                                 "/console/manifests?customer=-1", "/console/manifests?page=x",
                                 "/console/deliveries?batch=x", "/console/deliveries?outcome=no",
                                 "/console/deliveries?page=x", "/console/deliveries?surprise=1"])
def test_an_invalid_query_is_a_400_page(console, url):
    page = console.get(url)
    assert page.status_code == 400
    assert "Invalid query" in text(page)


def test_long_lists_page(client, admin, console):
    for n in range(5):
        register(client, admin, f"m{n}", 8000 + n)
        deliver(client, 9000 + n, msg_id=f"msg_{n}")
    first = console.get("/console/manifests?limit=2")
    seen = []
    page = first
    while True:
        seen.append(re.findall(r'class="manifest" href="/console/manifests/2/([^"]+)"',
                               text(page)))
        following = re.search(r'rel="next" href="([^"]+)"', text(page))
        if following is None:
            break
        page = console.get(following.group(1).replace("&amp;", "&"))
        assert "First page" in text(page)
    assert seen == [["m0", "m1"], ["m2", "m3"], ["m4"]]
    logs = re.findall(r"<code>(msg_\d)</code>",
                      text(console.get("/console/deliveries?limit=3&outcome=ignored")))
    assert logs == ["msg_4", "msg_3", "msg_2"]


def test_everything_shown_is_escaped(client, admin, console):
    body = json.loads(sample("registration-2-assets.json"))
    body["label"] = {"en": ['<script>alert("label")</script>']}
    body["batches"] = [4242]
    assert client.put("/2/manifests/escaped", json=body, headers=admin).status_code == 202
    deliver(client, 9999, msg_id='msg_<img src=x onerror="alert(1)">')
    for url in ("/console/manifests", "/console/manifests/2/escaped", "/console/deliveries"):
        page = text(console.get(url))
        assert "<script>" not in page and "<img" not in page, url
    assert "&lt;script&gt;" in text(console.get("/console/manifests/2/escaped"))


def test_console_pages_forbid_framing_and_caching(console):
    page = console.get("/console/manifests")
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["Cache-Control"] == "no-store"
    style = console.get("/console/console.css")
    assert style.status_code == 200 and style.mimetype == "text/css"


# ----------------------------------------------------------------- actions


def test_rebuild_shows_its_failure_then_publishes_once_the_dlcs_recovers(client, admin, console):
    make_every_state(client, admin)
    with responses.RequestsMock() as dlcs:
        dlcs.get(named_query(2003), status=500, json={"description": "still down"})
        page = console.follow(console.post("/console/manifests/2/failed/rebuild"))
    assert page.status_code == 200
    assert "Rebuild failed:" in text(page) and "still down" in text(page)
    assert state_of(client, admin, "failed") == "rebuild-failed"

    with responses.RequestsMock() as dlcs:
        dlcs.get(named_query(2003), body=sample("named-query-2-assets.json"),
                 content_type="application/json")
        page = console.follow(console.post("/console/manifests/2/failed/rebuild"))
    assert "Rebuilt and published 2/failed." in text(page)
    assert 'href="https://presentation.example/2/manifests/failed"' in text(page)
    assert state_of(client, admin, "failed") == "complete"
    assert client.get("/2/manifests/failed").status_code == 200


def test_rebuild_of_a_manifest_still_ingesting_says_so(client, admin, console):
    make_every_state(client, admin)
    with responses.RequestsMock():
        page = console.follow(console.post("/console/manifests/2/ingesting/rebuild"))
    assert "Rebuild failed: Batches of this manifest are still ingesting." in text(page)
    with responses.RequestsMock():
        page = console.follow(console.post("/console/manifests/2/nothing-here/rebuild"))
    assert page.status_code == 404
    assert "Rebuild failed: No manifest 2/nothing-here is registered." in text(page)


def test_reconcile_completes_what_the_dlcs_reports_finished(client, admin, console):
    make_every_state(client, admin)
    state = json.loads(sample("queue-response-201.json"))
    state.update({"@id": f"{API}/customers/2/queue/batches/2004", "count": 2, "completed": 2,
                  "finished": "2025-02-20T12:31:40.9931Z"})
    with responses.RequestsMock() as dlcs:
        dlcs.get(f"{API}/customers/2/queue/batches/2004", status=500)
        page = console.follow(console.post("/console/manifests/2/ingesting/reconcile"))
    assert "Reconcile failed:" in text(page) and "500" in text(page)
    with responses.RequestsMock() as dlcs:
        dlcs.get(f"{API}/customers/2/queue/batches/2004", json=state)
        dlcs.get(named_query(2004), body=sample("named-query-2-assets.json"),
                 content_type="application/json")
        page = console.follow(console.post("/console/manifests/2/ingesting/reconcile"))
    assert ("Reconciled 2/ingesting: manifest-completed; completed batches 2004."
            in text(page))
    assert state_of(client, admin, "ingesting") == "complete"


def test_replay_runs_a_delivery_again_and_comes_back_to_the_same_list(client, admin, console):
    body = json.loads(sample("registration-2-assets.json"))
    body["batches"] = [1234]
    assert client.put("/2/manifests/letters", json=body, headers=admin).status_code == 202
    with responses.RequestsMock() as dlcs:
        dlcs.get(named_query(1234), status=500)
        assert deliver(client, 1234, msg_id="msg_last").status_code == 503
    listed = console.get("/console/deliveries?outcome=failed")
    assert "msg_last" in text(listed)
    with responses.RequestsMock() as dlcs:
        dlcs.get(named_query(1234), body=sample("named-query-2-assets.json"),
                 content_type="application/json")
        answer = console.post("/console/deliveries/msg_last/replay",
                              {"back": "/console/deliveries?outcome=failed"})
    assert answer.headers["Location"] == "/console/deliveries?outcome=failed"
    page = console.follow(answer)
    assert "Replayed msg_last: manifest-completed." in text(page)
    assert "msg_last" not in re.sub(r'<p class="flash.*?</p>', "", text(page))  # not failed now
    with responses.RequestsMock():
        page = console.follow(console.post("/console/deliveries/msg_unknown/replay",
                                           {"back": "https://evil.example/"}))
    assert ("Replay of msg_unknown failed: No delivery 'msg_unknown' is recorded."
            in html.unescape(text(page)))
