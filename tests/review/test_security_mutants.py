"""The review app's security layer (`heaters_resources.review.security`) on its own: the Host
check, the access token, the signed session cookie, same-origin POSTs and the CSRF token.

A one-route ASGI app stands behind `SecurityMiddleware`, so each rule is seen exactly as a
browser (or an attacker's page) would see it, without a database: what is refused, with which
status and explanation, what reaches the app, and which cookie comes back.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
from typing import Any

import pytest
from starlette.testclient import TestClient

from heaters_resources.review.ratelimit import FailureLimiter
from heaters_resources.review.security import (
    COOKIE,
    ReviewSession,
    SecurityMiddleware,
    Signer,
    _header,
    _host_name,
    _origin_of,
    check_bind,
    check_token,
    is_loopback,
    same_secret,
    verify_csrf,
)

BASE = "http://127.0.0.1:8765"
SECRET = b"k" * 32
COOKIE_FORMAT = re.compile(rf"^{COOKIE}=([0-9a-f]{{32}})\.([01])\.([0-9a-f]{{40}}); ")


async def session_app(scope: Any, receive: Any, send: Any) -> None:
    """Answers with the ReviewSession the middleware handed over."""
    session: ReviewSession = scope["state"]["review_session"]
    body = json.dumps({"sid": session.sid, "authed": session.authed, "csrf": session.csrf})
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body.encode()})


def _client(
    token: str | None = None, base_url: str = BASE, limiter: FailureLimiter | None = None
) -> TestClient:
    """A client that does not follow redirects (the tests look at them). It keeps cookies like a
    browser; tests that need a cookie-less request use a new client."""
    app = SecurityMiddleware(session_app, signer=Signer(SECRET), token=token, limiter=limiter)
    return TestClient(app, base_url=base_url, follow_redirects=False)  # type: ignore[arg-type]


def _cookie(sid: str = "ab" * 16, authed: bool = False) -> dict[str, str]:
    return {"Cookie": f"{COOKIE}={Signer(SECRET).cookie_value(sid, authed)}"}


# --------------------------------------------------------------------------- loopback and bind


@pytest.mark.parametrize(
    "host", ["localhost", "127.0.0.1", "127.0.0.2", "::1", "[::1]", "[0:0:0:0:0:0:0:1]"]
)
def test_loopback_names(host: str) -> None:
    """Names and addresses of this machine, in any spelling a Host header may use."""
    assert is_loopback(host)


@pytest.mark.parametrize(
    "host", ["evil.example", "10.0.0.1", "0.0.0.0", "", "localhost.evil", "::", "X127.0.0.1X"]
)
def test_non_loopback_names(host: str) -> None:
    """Anything else is remote, including look-alikes."""
    assert not is_loopback(host)


def test_network_bind_needs_a_token() -> None:
    """Serving on the network without a token would let anyone act; the refusal says how to fix
    it."""
    with pytest.raises(ValueError) as info:
        check_bind("0.0.0.0", None)
    assert str(info.value) == (
        "binding the review app to 0.0.0.0 exposes it to the network: "
        "configure an access token (--token or HEATERS_REVIEW_TOKEN)"
    )
    with pytest.raises(ValueError, match="access token"):
        check_bind("192.168.1.5", "")
    check_bind("0.0.0.0", "s3cret-s3cret-16")
    check_bind("localhost", None)
    check_bind("[::1]", None)


@pytest.mark.parametrize("host", ["0.0.0.0", "127.0.0.1"])
def test_short_tokens_are_refused_on_any_bind(host: str) -> None:
    """A token under 16 characters can be guessed (a 2-character one fell in < 1000 tries)."""
    with pytest.raises(ValueError) as info:
        check_bind(host, "x" * 15)
    assert str(info.value).startswith(
        "the review access token must be at least 16 characters (got 15)"
    )
    check_bind(host, "x" * 16)
    check_token("y" * 16)
    with pytest.raises(ValueError, match="at least 16"):
        check_token("")


def test_secrets_compare_in_constant_time_whatever_their_characters() -> None:
    """`hmac.compare_digest` raises TypeError on non-ASCII `str`: a request must not reach it
    with one (it was a 500)."""
    assert same_secret("abc", "abc") and not same_secret("abc", "abd")
    assert not same_secret("\u00e9t\u00e9", "ete") and same_secret("\u00e9", "\u00e9")
    assert not same_secret("\ud800", "x")  # a lone surrogate from a JSON body
    assert not same_secret("", "x")


# --------------------------------------------------------------------------------- helpers


def test_headers_are_read_by_exact_lowercase_name() -> None:
    """ASGI header names are lower-case bytes; values are latin-1."""
    scope = {"headers": [(b"x-other", b"1"), (b"host", b"h\xe9:1")]}
    assert _header(scope, b"host") == "h\u00e9:1"  # latin-1, as HTTP headers are
    assert _header(scope, b"cookie") is None
    assert _header({}, b"host") is None


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("127.0.0.1:8765", "127.0.0.1"),
        ("localhost", "localhost"),
        ("[::1]:8765", "[::1]"),
        ("[::1]", "[::1]"),
        ("localhost:x:8765", ""),
        ("[::1", ""),
        ("[::1]x", ""),
        ("[::1]:", ""),
        ("127.0.0.1:80@evil.example", ""),
        ("127.0.0.1:\u0668\u0660", ""),  # Arabic-Indic digits are not a port
        ("localhost:", ""),
        ("", ""),
    ],
)
def test_host_name_drops_only_the_port(header: str, name: str) -> None:
    """The Host check compares names, so only a numeric port is removed; anything malformed
    is no name at all."""
    assert _host_name(header) == name


def test_origin_of_a_referer() -> None:
    """Only an absolute URL has an origin to compare with this app's."""
    assert _origin_of("http://127.0.0.1:8765/clips/3?x=1") == "http://127.0.0.1:8765"
    assert _origin_of("https://review.lan/") == "https://review.lan"
    for no_origin in (None, "", "/relative/path", "//host/path", "http:///path"):
        assert _origin_of(no_origin) is None


# ------------------------------------------------------------------------------- signatures


def test_signatures_are_hmac_sha256_of_the_value() -> None:
    """Cookies and CSRF tokens are HMAC-SHA256 with the app's secret, each for its own purpose."""
    signer = Signer(SECRET)
    expected = hmac.new(SECRET, b"value", hashlib.sha256).hexdigest()[:40]
    assert signer.sign("value") == expected
    assert Signer(b"other").sign("value") != expected
    assert signer.csrf("abc") == signer.sign("csrf.abc") != signer.sign("abc")


@pytest.mark.parametrize("authed", [True, False])
def test_cookie_round_trip(authed: bool) -> None:
    """A cookie the app signed reads back as the same session and flag."""
    signer = Signer(SECRET)
    value = signer.cookie_value("s1d", authed)
    assert value == f"s1d.{int(authed)}.{signer.sign(f's1d.{int(authed)}')}"
    assert signer.read_cookie(value) == ("s1d", authed)


def test_forged_or_malformed_cookies_are_ignored() -> None:
    """A cookie with a wrong signature or shape is no session at all (so no one can flag himself
    authenticated)."""
    signer = Signer(SECRET)
    good = signer.cookie_value("s1d", False)
    sid, _, sig = good.split(".")
    assert signer.read_cookie(f"{sid}.1.{sig}") is None  # authed flag flipped
    assert signer.read_cookie(f"other.0.{sig}") is None
    assert signer.read_cookie(Signer(b"other").cookie_value("s1d", True)) is None
    for bad in (None, "", "s1d.0", f"{good}.x", "a.b.c.d"):
        assert signer.read_cookie(bad) is None


def test_csrf_token_from_header_or_form() -> None:
    """Writes need this session's CSRF token, from the header (scripts) or the form (no
    JavaScript)."""
    session = ReviewSession("sid", True, Signer(SECRET).csrf("sid"))
    assert verify_csrf(session, session.csrf, None)
    assert verify_csrf(session, None, session.csrf)
    assert not verify_csrf(session, "0" * 40, session.csrf)  # the header wins when present
    assert not verify_csrf(session, None, "0" * 40)
    assert not verify_csrf(session, None, None)
    assert not verify_csrf(session, "", "")
    assert not verify_csrf(ReviewSession("sid", True, ""), "", None)


# -------------------------------------------------------------------------------- Host check


def test_without_a_token_only_loopback_hosts_are_answered() -> None:
    """DNS rebinding: a page under another name must not reach the local app."""
    refused = _client(base_url="http://evil.example:8765").get("/")
    assert refused.status_code == 421
    assert refused.text == "This review app only answers on 127.0.0.1 / localhost."
    assert _client(base_url="http://localhost:8765").get("/").status_code == 200
    assert _client(base_url="http://[::1]:8765").get("/").status_code == 200
    assert _client().get("/", headers={"Host": "localhost:x:8765"}).status_code == 421
    # with a token the app may be reached under any name (the token protects it)
    assert _client("t", base_url="http://review.lan").get("/?token=t").status_code == 303


def _call(app: Any, scope: dict[str, Any], token: str | None = None) -> list[dict[str, Any]]:
    """One raw ASGI call through the middleware; returns the messages sent back."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"payload", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(SecurityMiddleware(app, signer=Signer(SECRET), token=token)(scope, receive, send))
    return sent


async def echo_app(scope: Any, receive: Any, send: Any) -> None:
    """Reads the request body and echoes it; sends no headers of its own (ASGI allows that)."""
    body = (await receive())["body"]
    assert scope["state"]["review_session"].authed
    await send({"type": "http.response.start", "status": 200})
    await send({"type": "http.response.body", "body": body})


def test_non_http_scopes_pass_through_untouched() -> None:
    """Lifespan (and other non-HTTP) messages are not the middleware's business."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        got = (await receive())["body"]
        await send({"type": "lifespan.startup.complete", "scope": scope["type"], "got": got})

    sent = _call(app, {"type": "lifespan"}, token="t")
    assert sent == [{"type": "lifespan.startup.complete", "scope": "lifespan", "got": b"payload"}]


def test_minimal_http_scope() -> None:
    """A server may leave out `state`, `path` and `query_string` (ASGI): the session still reaches
    the app, the request body too, and the new cookie is added as a lower-case header."""
    scope = {"type": "http", "method": "GET", "headers": [(b"host", b"127.0.0.1:8765")]}
    start, body = _call(echo_app, scope)
    assert body["body"] == b"payload"
    [(name, value)] = start["headers"]
    assert name == b"set-cookie" and COOKIE_FORMAT.match(value.decode())


def test_minimal_scope_with_a_token_redirects_to_the_root() -> None:
    """The defaults of a minimal scope hold for the token check as well."""
    scope = {"type": "http", "method": "GET", "headers": [(b"host", b"review.lan")]}
    start, _ = _call(echo_app, {**scope, "query_string": b"token=t"}, token="t")
    assert (start["status"], dict(start["headers"])[b"location"]) == (303, b"/")
    assert _call(echo_app, scope, token="t")[0]["status"] == 401


# ---------------------------------------------------------------------------- session cookie


def test_a_new_browser_gets_a_signed_session_cookie_once() -> None:
    """A new browser gets one HttpOnly, SameSite=Strict session cookie; the app sees that
    session."""
    c = _client()
    first = c.get("/")
    assert first.status_code == 200
    set_cookie = first.headers["set-cookie"]
    match = COOKIE_FORMAT.match(set_cookie)
    assert match, set_cookie
    assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie and "Path=/" in set_cookie
    sid, flag, _ = match.groups()
    body = first.json()
    assert (body["sid"], flag) == (sid, "0")
    assert body["csrf"] == Signer(SECRET).csrf(sid)
    assert body["authed"] is True  # no token configured: every local browser may act
    again = c.get("/", headers={"Cookie": set_cookie.split(";")[0]})
    assert "set-cookie" not in again.headers
    assert again.json()["sid"] == sid
    other = _client().get("/")
    assert other.json()["sid"] != sid


def test_a_forged_cookie_starts_a_new_session() -> None:
    """A forged cookie does not take over its session id."""
    forged = {"Cookie": f"{COOKIE}={'ab' * 16}.1.{'0' * 40}"}
    r = _client().get("/", headers=forged)
    assert r.json()["sid"] != "ab" * 16
    assert "set-cookie" in r.headers


# ------------------------------------------------------------------------------ access token


def test_token_is_required_once_then_remembered() -> None:
    """The token is asked for once, then kept in the signed cookie and dropped from the URL."""
    c = _client("s3cret")
    missing = c.get("/clips/3")
    assert missing.status_code == 401
    assert missing.text == (
        "Access token required: open the URL printed by `heaters review` (it ends with ?token=...)."
    )
    assert c.get("/clips/3?token=wrong").status_code == 401
    assert c.get("/clips/3", headers=_cookie(authed=False)).status_code == 401
    r = c.get("/clips/3?token=s3cret&x=1&y=2")
    assert r.status_code == 303 and r.headers["location"] == "/clips/3?x=1&y=2"
    match = COOKIE_FORMAT.match(r.headers["set-cookie"])
    assert match and match.group(2) == "1"
    assert _client("s3cret").get("/?token=s3cret").headers["location"] == "/"
    cookie = {"Cookie": r.headers["set-cookie"].split(";")[0]}
    ok = c.get("/clips/3", headers=cookie)
    assert ok.status_code == 200 and ok.json()["authed"] is True
    assert "set-cookie" not in ok.headers


def test_public_paths_need_no_token() -> None:
    """Static files and the health check answer without the token, and only those paths."""
    c = _client("s3cret")
    assert c.get("/static/app.js").status_code == 200
    assert c.get("/healthz").status_code == 200
    public = c.get("/healthz")
    assert public.json()["authed"] is False
    assert c.get("/staticfile").status_code == 401


# ------------------------------------------------------------------------ same-origin writes


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
def test_safe_methods_need_no_origin(method: str) -> None:
    """Reading needs no Origin header."""
    assert _client().request(method, "/", headers=_cookie()).status_code == 200


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_writes_need_this_apps_origin(method: str) -> None:
    """Every other method must come from this app's own origin."""
    c = _client()
    refused = c.request(method, "/", headers=_cookie())
    assert refused.status_code == 403
    assert refused.text == "Cross-site request refused (Origin/Referer missing or not this app)."
    evil = c.request(method, "/", headers={**_cookie(), "Origin": "http://evil.example"})
    assert evil.status_code == 403
    assert c.request(method, "/", headers={**_cookie(), "Origin": BASE}).status_code == 200


def test_same_origin_from_referer_or_https() -> None:
    """Without Origin, the Referer decides; behind TLS the https origin is this app too."""
    c = _client()
    assert c.post("/", headers={**_cookie(), "Referer": f"{BASE}/clips/1"}).status_code == 200
    assert c.post("/", headers={**_cookie(), "Referer": "http://evil.example/"}).status_code == 403
    secure = {**_cookie(), "Origin": "https://127.0.0.1:8765"}
    assert c.post("/", headers=secure).status_code == 200
    other_port = {**_cookie(), "Origin": "http://127.0.0.1:9999"}
    assert c.post("/", headers=other_port).status_code == 403


def test_a_write_without_a_session_is_refused() -> None:
    """A write from a browser that never loaded a page has no CSRF token to show: refused."""
    r = _client().post("/", headers={"Origin": BASE})
    assert r.status_code == 403 and r.text == "No review session: reload the page."


# ------------------------------------------------------------------- token edge cases, limits


def test_a_non_ascii_or_odd_token_is_a_401_not_a_crash() -> None:
    """`?token=%C3%A9...` used to reach `hmac.compare_digest` as non-ASCII `str` (a 500)."""
    c = _client("s3cret-s3cret-16")
    for given in ("%C3%A9t%C3%A9", "%FF", "%00", "s3cret-s3cret-1%C2%B2", "x" * 5000):
        r = c.get(f"/?token={given}")
        assert r.status_code == 401, given


def test_the_redirect_after_the_token_stays_on_this_site() -> None:
    """The Location keeps the path percent-encoded (a header is latin-1: `/€` was a 500) and
    never becomes `//host`, which a browser would follow to another site."""
    c = _client("s3cret-s3cret-16")
    r = c.get("/%E2%82%AC/x?token=s3cret-s3cret-16&a=%C3%A9")
    assert r.status_code == 303 and r.headers["location"] == "/%E2%82%AC/x?a=%C3%A9"
    scope = {
        "type": "http",
        "method": "GET",
        "path": "//evil.example/x",
        "query_string": b"token=s3cret-s3cret-16",
        "headers": [(b"host", b"review.lan")],
    }
    start, _ = _call(echo_app, scope, token="s3cret-s3cret-16")
    assert (start["status"], dict(start["headers"])[b"location"]) == (303, b"/evil.example/x")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_wrong_tokens_are_rate_limited_per_address() -> None:
    """After `burst` wrong tokens an address gets 429 with Retry-After, even with the right
    token; one attempt comes back every `every_seconds`. Requests without a token cost
    nothing; other addresses are not affected."""
    clock = FakeClock()
    limiter = FailureLimiter(burst=3, every_seconds=10.0, clock=clock)
    c = _client("s3cret-s3cret-16", limiter=limiter)
    for _ in range(5):
        assert c.get("/").status_code == 401  # no token given: not an attempt
    for _ in range(3):
        assert c.get("/?token=wrong-wrong-wrong").status_code == 401
    limited = c.get("/?token=s3cret-s3cret-16")
    assert limited.status_code == 429 and limited.headers["retry-after"] == "10"
    assert limited.text == "Too many wrong access tokens from testclient: try again in 10 s."
    clock.now += 4.0
    assert c.get("/").headers["retry-after"] == "6"
    clock.now += 6.0
    assert c.get("/?token=s3cret-s3cret-16").status_code == 303  # one attempt back
    other = FailureLimiter(burst=1, every_seconds=10.0, clock=clock)
    other.failed("10.0.0.1")
    assert other.retry_after("10.0.0.1") == 10 and other.retry_after("10.0.0.2") == 0


def test_the_limiter_forgets_refilled_and_fullest_addresses_first() -> None:
    """Memory stays bounded: over `max_addresses`, refilled buckets go, then the fullest."""
    clock = FakeClock()
    limiter = FailureLimiter(burst=2, every_seconds=10.0, max_addresses=2, clock=clock)
    limiter.failed("a")
    limiter.failed("a")  # a: empty
    limiter.failed("b")  # b: one left
    limiter.failed("c")  # c: one left; over the limit, so b or c (fuller than a) goes
    assert len(limiter._buckets) == 2 and "a" in limiter._buckets
    assert limiter.retry_after("a") == 10
    clock.now += 100.0
    limiter.failed("d")  # everyone else refilled: they are forgotten
    assert set(limiter._buckets) == {"d"}
    with pytest.raises(ValueError):
        FailureLimiter(burst=0)
