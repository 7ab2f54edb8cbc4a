"""Hostile HTTP requests to the review app, served by uvicorn over a real socket: bad ids and
overflows, unicode, path traversal, wrong methods, missing or forged CSRF / Origin / cookies,
bad Host headers, huge and malformed bodies, malformed HTTP itself, and guessed tokens.

Each case must end in a 4xx (never a 500, never a hang: every socket has a timeout), and the
app's own answers carry the security headers. At the end the server still answers and no
clip changed: no case slipped an action through.
"""

from __future__ import annotations

import contextlib
import http.client
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import func, select, text

from heaters_resources import states
from heaters_resources.db.engine import Database
from heaters_resources.db.models import Clip, ReviewEvent
from heaters_resources.review import ReviewConfig, create_app
from heaters_resources.store.objects import LocalObjectStore
from tests.conftest import TABLES
from tests.review.test_review_app import make_clips

TOKEN = "hostile-corpus-token-0123456789"
BIG = "9" * 23
NESTED = "[" * 30_000 + "]" * 30_000


@dataclass
class Served:
    port: int
    token_port: int
    clips: list[int]
    cookie: str = ""
    csrf: str = ""
    version: str = ""


def _serve(app: Any) -> tuple[int, Any, threading.Thread, socket.socket]:
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="critical", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    return int(sock.getsockname()[1]), server, thread, sock


@pytest.fixture(scope="module")
def served(session_db: Database, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """Three pending clips; the app without a token and the app with one, each on a port."""
    with session_db.engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
    store = LocalObjectStore(tmp_path_factory.mktemp("hostile_store"))
    clips = make_clips(session_db, store)
    running = [
        _serve(create_app(session_db, store)),
        _serve(create_app(session_db, store, ReviewConfig(token=TOKEN))),
    ]
    s = Served(running[0][0], running[1][0], clips)
    client = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
    client.request("GET", f"/?clip={clips[1]}")
    page = client.getresponse()
    html = page.read().decode()
    s.cookie = (page.getheader("set-cookie") or "").split(";")[0]
    s.csrf = re.search(r'name="csrf-token" content="([0-9a-f]+)"', html).group(1)  # type: ignore[union-attr]
    s.version = re.search(r'data-version="([^"]+)"', html).group(1)  # type: ignore[union-attr]
    yield s
    for _port, server, thread, sock in running:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


# --------------------------------------------------------------------------- the cases

# Each case: method, path, headers, body. In them {clip} is the second pending clip (the first
# has no neighbour to merge with), {version} its version, {csrf} and {cookie} a real session's,
# {origin} this app. SESSION stands for all the headers of a legitimate page's request.
SESSION = {"Cookie": "{cookie}", "Origin": "{origin}", "X-CSRF-Token": "{csrf}"}
JSON = {**SESSION, "Content-Type": "application/json", "Accept": "application/json"}


Case = tuple[str, str, dict[str, str], str | bytes]


def _post(path: str, body: str, **headers: str) -> Case:
    return ("POST", path, {**JSON, **headers}, body)


def _get(path: str, **headers: str) -> Case:
    return ("GET", path, {"Cookie": "{cookie}", **headers}, "")


V = '{"version": "{version}"}'


def _action(clip: str, action: str, extra: str = "") -> Case:
    return _post(f"/api/clips/{clip}/{action}", '{"version": "{version}"' + extra + "}")


OPEN: dict[str, Case] = {
    **{
        f"queue-clip-{i}": _get(f"/?clip={q}")
        for i, q in enumerate(
            [
                "%C2%B2",
                "abc",
                "-1",
                "0",
                "1.5",
                "1e3",
                "0x10",
                "%201",
                "1%20",
                BIG,
                "%00",
                "%E2%98%83",
                "9" * 5000,
                "1;DROP%20TABLE%20clips",
                "%27%20OR%201=1--",
                "%FF%FE",
                "+1",
                "%EF%BC%91",  # a full-width digit one
            ]
        )
    },
    "queue-clip-max-bigint": _get(f"/?clip={2**63 - 1}"),
    "queue-clip-missing": _get("/?clip=999999"),
    "action-clip-overflow": _action(BIG, "approve"),
    "action-clip-just-past-bigint": _action(str(2**63), "approve"),
    "action-clip-missing": _action("999999", "approve"),
    "action-clip-zero": _action("0", "skip"),
    "action-unknown": _action("{clip}", "publish"),
    "action-uppercase": _action("{clip}", "APPROVE"),
    "action-unicode": _action("{clip}", "%E2%98%83"),
    "action-traversal": _action("{clip}", "..%2F..%2Fundo"),
    "action-no-version": _post("/api/clips/{clip}/approve", "{}"),
    "action-wrong-version": _post("/api/clips/{clip}/approve", '{"version": "x"}'),
    "action-version-long": _post("/api/clips/{clip}/archive", '{"version": "%s"}' % ("v" * 60_000)),
    "action-version-number": _post("/api/clips/{clip}/approve", '{"version": 1e999}'),
    "action-version-object": _post("/api/clips/{clip}/approve", '{"version": {"$ne": null}}'),
    **{
        f"split-frame-{i}": _action("{clip}", "split", f', "frame": "{f}"')
        for i, f in enumerate(
            ["\u00b2", "1e3", "nan", "-1", "0", BIG, "1.5", " 60", "0x3c", "\u0661", "\\ud800"]
        )
    },
    "split-frame-json-number-big": _action("{clip}", "split", f', "frame": {BIG}'),
    "split-frame-outside": _action("{clip}", "split", ', "frame": "100000"'),
    "split-frame-at-start": _action("{clip}", "split", ', "frame": "50"'),
    "split-no-frame": _action("{clip}", "split"),
    "merge-first-clip": _post("/api/clips/{first}/merge", V),
    "body-json-list": _post("/api/clips/{clip}/approve", "[1, 2, 3]"),
    "body-json-string": _post("/api/clips/{clip}/approve", '"approve"'),
    "body-json-broken": _post("/api/clips/{clip}/approve", '{"version": '),
    "body-json-nested": _post("/api/clips/{clip}/approve", NESTED),
    "body-json-huge-int": _post("/api/clips/{clip}/approve", '{"version": %s}' % ("1" * 5000)),
    "body-json-nan": _post("/api/clips/{clip}/approve", '{"version": NaN}'),
    "body-form-invalid-utf8": (
        "POST",
        "/api/clips/{clip}/approve",
        {**SESSION, "Content-Type": "application/x-www-form-urlencoded"},
        b"version=\xff\xfe&csrf_token=x",
    ),
    "body-too-large-declared": _post("/api/clips/{clip}/approve", "x" * 70_000),
    "body-too-large-chunked": (
        "POST",
        "/api/clips/{clip}/approve",
        {**JSON, "Transfer-Encoding": "chunked"},
        b"CHUNKED",
    ),
    "csrf-missing": _post("/api/clips/{clip}/approve", V, **{"X-CSRF-Token": ""}),
    "csrf-wrong": _post("/api/clips/{clip}/approve", V, **{"X-CSRF-Token": "0" * 40}),
    "csrf-latin1": (
        "POST",
        "/api/clips/{clip}/approve",
        {**JSON, "X-CSRF-Token": "\u00e9t\u00e9"},
        b"{}",
    ),
    "csrf-in-form-unicode": (
        "POST",
        "/api/clips/{clip}/approve",
        {"Cookie": "{cookie}", "Origin": "{origin}"},
        b"csrf_token=%E2%98%83&version=x",
    ),
    "origin-missing": _post("/api/clips/{clip}/approve", V, Origin=""),
    "origin-evil": _post("/api/clips/{clip}/approve", V, Origin="http://evil.example"),
    "origin-null": _post("/api/clips/{clip}/approve", V, Origin="null"),
    "origin-other-port": _post("/api/clips/{clip}/approve", V, Origin="http://127.0.0.1:1"),
    "origin-evil-referer": _post(
        "/api/clips/{clip}/approve", V, Origin="", Referer="http://evil.example/x"
    ),
    "cookie-missing": _post("/api/clips/{clip}/approve", V, Cookie=""),
    "cookie-forged": _post(
        "/api/clips/{clip}/approve", V, Cookie="heaters_review=ab.1." + "0" * 40
    ),
    "cookie-garbage": _post("/api/clips/{clip}/approve", V, Cookie='heaters_review="\\x; ;=;'),
    "cookie-latin1": _post("/api/clips/{clip}/approve", V, Cookie="heaters_review=\u00e9.1.\u00e9"),
    # issue 14: the clip list, the grid, the merge page, batches, reviewer names, reopen
    **{
        f"list-{i}": _get(p)
        for i, p in enumerate(
            [
                "/queue?state=%27%20OR%201=1--",
                "/queue?after=1.2.x",
                "/queue?after=" + BIG + ".1.1",
                "/queue?video=%C2%B2",
                "/queue?short=maybe",
                "/queue?reviewer=" + "r" * 300,
                "/api/clips?limit=99999",
                "/api/clips?limit=-1",
                f"/api/clips?video={BIG}",
                "/api/clips?embedded=%00",
                "/grid?state=approved",
                "/merge?clip=%C2%B2",
                "/merge?clip=0",
                f"/merge?clip={BIG}",
                "/merge?clip=999999",
            ]
        )
    },
    "batch-no-csrf": _post(
        "/api/batch/approve", '{"clips": ["{clip}|{version}"]}', **{"X-CSRF-Token": ""}
    ),
    "batch-evil-origin": _post(
        "/api/batch/approve", '{"clips": ["{clip}|{version}"]}', Origin="http://evil.example"
    ),
    "batch-unknown-action": _post("/api/batch/publish", '{"clips": ["{clip}|{version}"]}'),
    "batch-merge": _post("/api/batch/merge", '{"clips": ["{clip}|{version}"]}'),
    "batch-no-clips": _post("/api/batch/approve", "{}"),
    "batch-not-a-list": _post("/api/batch/approve", '{"clips": {"a": 1}}'),
    "batch-bad-item": _post("/api/batch/approve", '{"clips": ["{clip}|{version}|x"]}'),
    "batch-big-id": _post("/api/batch/approve", '{"clips": ["' + BIG + '|{version}"]}'),
    "batch-stale": _post("/api/batch/skip", '{"clips": ["{clip}|pending_review@2000-01-01"]}'),
    "batch-too-many": _post(
        "/api/batch/approve", '{"clips": [' + ", ".join(['"{clip}|{version}"'] * 501) + "]}"
    ),
    "reviewer-no-csrf": _post("/api/reviewer", '{"name": "eve"}', **{"X-CSRF-Token": ""}),
    "reviewer-markup": _post("/api/reviewer", '{"name": "<script>alert(1)</script>"}'),
    "reviewer-long": _post("/api/reviewer", '{"name": "%s"}' % ("n" * 500)),
    "reviewer-control": _post("/api/reviewer", '{"name": "a\u0000b"}'),
    "reopen-pending": _action("{clip}", "reopen"),
    "reopen-return-evil": _post(
        "/api/clips/{clip}/reopen", '{"version": "{version}", "return_to": "//evil.example"}'
    ),
    "merge-bad-previous": _action("{clip}", "merge", ', "previous": "x", "previous_version": "v"'),
    "merge-wrong-previous": _action(
        "{clip}", "merge", ', "previous": "{clip}", "previous_version": "{version}"'
    ),
    "get-batch": _get("/api/batch/approve"),
    "undo-nothing": _post("/api/undo", "{}"),
    "undo-no-csrf": _post("/api/undo", "{}", **{"X-CSRF-Token": ""}),
    "get-undo": _get("/api/undo"),
    "get-action": _get("/api/clips/{clip}/approve"),
    "put-queue": ("PUT", "/", SESSION, b""),
    "delete-clip": ("DELETE", "/api/clips/{clip}/approve", SESSION, b""),
    "patch-undo": ("PATCH", "/api/undo", SESSION, b"{}"),
    "trace-queue": ("TRACE", "/", {}, ""),
    "options-undo": ("OPTIONS", "/api/undo", {}, ""),
    "post-queue": _post("/", "{}"),
    "post-healthz": _post("/healthz", "{}"),
    "post-media": _post("/media/clip/{clip}", "{}"),
    "head-undo": ("HEAD", "/api/undo", {}, ""),
    **{
        f"traversal-{i}": _get(p)
        for i, p in enumerate(
            [
                "/static/../../etc/passwd",
                "/static/%2e%2e/%2e%2e/etc/passwd",
                "/static/..%2f..%2fapp.py",
                "/static/%2e%2e%2fapp.py",
                "/static/review.js%00",
                "/static/",
                "/static//etc/passwd",
                "/static/..\\..\\app.py",
                "/media/clip/..%2f1",
                "/media/clip/1%2f..%2f2",
                "/media/clip/-1",
                "/media/clip/%C2%B2",
                f"/media/clip/{BIG}",
                f"/media/artifact/{BIG}",
                "/media/artifact/999999",
                "/..%2f..%2fetc/passwd",
                "/%2e%2e/",
                "/templates/queue.html",
            ]
        )
    },
    "range-unsatisfiable": _get("/media/clip/{first}", Range="bytes=999999999-"),
    **{
        f"host-{i}": ("GET", "/", {"Host": h}, b"")
        for i, h in enumerate(
            [
                "evil.example",
                "",
                "localhost.evil.example",
                "127.0.0.1.evil.example",
                "[::1",
                "127.0.0.1:80@evil.example",
                "0.0.0.0",
                "\u00e9vil",
                "evil.example:8765",
            ]
        )
    },
}

TOKEN_CASES: dict[str, Case] = {
    "no-token": ("GET", "/", {}, b""),
    **{
        f"token-{i}": ("GET", f"/?token={t}", {}, b"")
        for i, t in enumerate(
            [
                "wrong",
                "",
                "%C3%A9",
                "%00",
                "x" * 5000,
                TOKEN[:-1],
                TOKEN + "x",
                TOKEN.upper(),
                "%FF",
                "%E2%98%83" * 20,
            ]
        )
    },
    "token-in-header-only": ("GET", "/", {"Authorization": f"Bearer {TOKEN}"}, b""),
    "token-media": ("GET", "/media/clip/1", {}, b""),
    "token-post": ("POST", "/api/undo", {"Origin": "{origin}"}, b"{}"),
    "token-progress": ("GET", "/progress?token=wrong", {}, b""),
}


def _fill(value: str, s: Served, port: int) -> str:
    return (
        value.replace("{clip}", str(s.clips[1]))
        .replace("{first}", str(s.clips[0]))
        .replace("{version}", s.version)
        .replace("{csrf}", s.csrf)
        .replace("{cookie}", s.cookie)
        .replace("{origin}", f"http://127.0.0.1:{port}")
    )


def _send(port: int, method: str, path: str, headers: dict[str, str], body: bytes) -> Response:
    """One request exactly as given (no normalisation of the path), on a new connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.putrequest(method, path, skip_host="Host" in headers, skip_accept_encoding=True)
    if body == b"CHUNKED":
        headers = {**headers}
    elif body or method in ("POST", "PUT", "PATCH"):
        headers = {**headers, "Content-Length": str(len(body))}
    for name, value in headers.items():
        if value:
            conn.putheader(name, value.encode("utf-8"))
        elif name == "Host":
            conn.putheader(name, b"")
    conn.endheaders()
    if body == b"CHUNKED":
        for _ in range(40):  # 40 chunks of 4 KiB: 160 KiB, over the 64 KiB limit
            try:
                conn.send(b"1000\r\n" + b"a" * 4096 + b"\r\n")
            except OSError:
                break  # the server answered and closed early: fine
        else:
            conn.send(b"0\r\n\r\n")
    elif body:
        with contextlib.suppress(OSError):  # refused before the whole body was read
            conn.send(body)
    response = conn.getresponse()
    answer = Response(response.status, {k.lower(): v for k, v in response.getheaders()}, b"")
    answer.body = response.read()
    conn.close()
    return answer


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


def _check(response: Response) -> None:
    """A 4xx from the app itself: no traceback, and the security headers on it."""
    assert 400 <= response.status < 500, (response.status, response.body[:500])
    assert b"Traceback" not in response.body
    assert response.headers.get("x-frame-options") == "DENY"
    assert response.headers.get("x-content-type-options") == "nosniff"
    assert "default-src 'none'" in response.headers.get("content-security-policy", "")


def _request(served: Served, port: int, case: Case) -> Response:
    method, path, headers, body = case
    filled = {k: _fill(v, served, port) for k, v in headers.items()}
    if isinstance(body, str):
        body = _fill(body, served, port).encode("utf-8", "surrogatepass")
    return _send(port, method, _fill(path, served, port), filled, body)


@pytest.mark.parametrize("case", list(OPEN))
def test_open_app(served: Served, case: str) -> None:
    _check(_request(served, served.port, OPEN[case]))


@pytest.mark.parametrize("case", list(TOKEN_CASES))
def test_token_app(served: Served, case: str) -> None:
    """Wrong tokens are 401 until the address's attempts are spent, then 429."""
    response = _request(served, served.token_port, TOKEN_CASES[case])
    _check(response)
    assert response.status in (401, 429)


# ------------------------------------------------------------------ malformed HTTP itself

HOST = b"Host: 127.0.0.1\r\n"


def _raw(line: bytes, *headers: bytes, body: bytes = b"") -> bytes:
    """A request line, the Host header, `headers`, a blank line and `body`."""
    return line + b"\r\n" + HOST + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body


POST_UNDO = b"POST /api/undo HTTP/1.1"
RAW: dict[str, bytes] = {
    "garbage": b"GARBAGE\r\n\r\n",
    "no-version": b"GET /\r\n\r\n",
    "bad-version": _raw(b"GET / HTTP/9.9"),
    "header-without-colon": _raw(b"GET / HTTP/1.1", b"NoColonHere"),
    "header-name-space": _raw(b"GET / HTTP/1.1", b"Bad Name: x"),
    "nul-in-path": _raw(b"GET /\x00 HTTP/1.1"),
    "space-in-path": _raw(b"GET /a b HTTP/1.1"),
    "content-length-negative": _raw(POST_UNDO, b"Content-Length: -1"),
    "content-length-text": _raw(POST_UNDO, b"Content-Length: abc"),
    "content-length-twice": _raw(POST_UNDO, b"Content-Length: 1", b"Content-Length: 2", body=b"ab"),
    "bad-chunk-size": _raw(
        POST_UNDO, b"Transfer-Encoding: chunked", body=b"zz\r\nabc\r\n0\r\n\r\n"
    ),
    "tls-client-hello": bytes.fromhex("16030100a5010000a10303") + b"\x00" * 40 + b"\r\n\r\n",
    "http10-no-host": b"GET / HTTP/1.0\r\n\r\n",
    "made-up-method": _raw(b"BREW / HTTP/1.1"),
}


@pytest.mark.parametrize("case", list(RAW))
def test_malformed_http(served: Served, case: str) -> None:
    """The server's parser refuses these (400) before the app; the app refuses the rest."""
    with socket.create_connection(("127.0.0.1", served.port), timeout=30) as sock:
        with contextlib.suppress(OSError):  # the server may refuse mid-request
            sock.sendall(RAW[case])
        answer = b""
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            answer += data
    status = re.match(rb"HTTP/1\.[01] (\d{3})", answer)
    assert status, answer[:300]
    assert 400 <= int(status.group(1)) < 500, answer[:300]
    assert b"Traceback" not in answer


def test_still_serving_and_nothing_changed(served: Served, session_db: Database) -> None:
    """After the whole corpus: the app answers, every clip is still pending, no event."""
    response = _send(served.port, "GET", "/healthz", {}, b"")
    assert response.status == 200 and response.body == b"ok"
    with session_db.session() as session:
        assert session.scalar(select(func.count()).select_from(ReviewEvent)) == 0
        clip_states = set(session.scalars(select(Clip.state)))
    assert clip_states == {"pending_review"}
    assert [states.get_clip(session_db, c).state for c in served.clips] == ["pending_review"] * 3
