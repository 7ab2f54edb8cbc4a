"""Who may talk to the review app, and which requests may change anything.

The app changes the library (approve, archive, merge ...), so it must not be drivable by any web
page the reviewer happens to have open. Three layers, all in this module:

* **Bind / Host.** Without an access token the app only answers requests whose `Host` header is
  a loopback name (so a DNS-rebinding page cannot reach 127.0.0.1 under its own name), and
  `check_bind` refuses to start it on a non-loopback address at all.
* **Access token.** With a token (required for a non-local bind; at least 16 characters) a
  browser must present it once (`?token=...`); the session cookie then carries the
  authenticated flag, signed. Comparisons are constant-time, and wrong tokens are rate-limited
  per client address (`ratelimit.FailureLimiter`: 429 with `Retry-After` once spent).
* **Cross-site requests.** Every POST must carry an `Origin` (or `Referer`) of this very app and
  a CSRF token derived from the session (header `X-CSRF-Token` or form field `csrf_token`).
  The session cookie is `SameSite=Strict` and `HttpOnly` as well.

Signatures are plain HMAC-SHA256 from the standard library (no extra dependency).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from heaters_resources.review.ratelimit import FailureLimiter

COOKIE = "heaters_review"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
#: A shorter token can be guessed: a 2-character one fell in under a thousand tries.
MIN_TOKEN_LENGTH = 16

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def is_loopback(host: str) -> bool:
    name = host.strip("[]")
    if name in LOOPBACK_NAMES or name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse a non-loopback bind without an access token, and a token too short to stand
    guessing (raises ValueError)."""
    if not is_loopback(host) and not token:
        raise ValueError(
            f"binding the review app to {host} exposes it to the network: "
            "configure an access token (--token or HEATERS_REVIEW_TOKEN)"
        )
    if token:
        check_token(token)


def check_token(token: str) -> None:
    """Refuse a token shorter than MIN_TOKEN_LENGTH characters (ValueError saying how to make
    a good one)."""
    if len(token) < MIN_TOKEN_LENGTH:
        raise ValueError(
            f"the review access token must be at least {MIN_TOKEN_LENGTH} characters "
            f"(got {len(token)}); e.g. python -c 'import secrets; print(secrets.token_urlsafe())'"
        )


def same_secret(given: str, expected: str) -> bool:
    """Constant-time equality of two strings of any characters.

    `hmac.compare_digest` on `str` accepts ASCII only and raises TypeError otherwise, which a
    request could provoke (a 500); compared as UTF-8 bytes it never raises."""
    return hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


@dataclass(frozen=True)
class ReviewSession:
    """A browser session: a random id (the reviewer's undo stack and queue claims hang on it)."""

    sid: str
    authed: bool
    csrf: str

    @property
    def short(self) -> str:
        return self.sid[:8]


class Signer:
    """HMAC signatures of cookie values and CSRF tokens with one per-process secret."""

    def __init__(self, secret: bytes) -> None:
        self.secret = secret

    def sign(self, value: str) -> str:
        return hmac.new(self.secret, value.encode(), hashlib.sha256).hexdigest()[:40]

    def cookie_value(self, sid: str, authed: bool) -> str:
        body = f"{sid}.{int(authed)}"
        return f"{body}.{self.sign(body)}"

    def read_cookie(self, value: str | None) -> tuple[str, bool] | None:
        if not value or value.count(".") != 2:
            return None
        sid, authed, sig = value.split(".")
        if not same_secret(sig, self.sign(f"{sid}.{authed}")):
            return None
        return sid, authed == "1"

    def csrf(self, sid: str) -> str:
        return self.sign(f"csrf.{sid}")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _host_name(host_header: str) -> str:
    """`127.0.0.1:8765` -> `127.0.0.1`, `[::1]:8765` -> `[::1]`; "" (no loopback name) for a
    malformed header: an unclosed bracket, anything after the name but a numeric port
    (`127.0.0.1:80@evil.example` names no host of this machine)."""
    if host_header.startswith("["):
        end = host_header.find("]")
        if end < 0:
            return ""
        name, rest = host_header[: end + 1], host_header[end + 1 :]
    else:
        name, colon, port = host_header.partition(":")
        rest = colon + port
    if rest and not (rest[0] == ":" and rest[1:].isascii() and rest[1:].isdigit()):
        return ""
    return name


def _local_path(path: str) -> str:
    """`path` as an ASCII Location on this app: percent-encoded (a header must be latin-1) and
    never `//host/...`, which a browser would read as another site."""
    return "/" + quote(path.lstrip("/"), safe="/:@!$&'()*+,;=-._~")


def _client_address(scope: Scope) -> str:
    """The peer's address as the server saw it ("" when the server does not say)."""
    client = scope.get("client")
    return str(client[0]) if client else ""


def _origin_of(url: str | None) -> str | None:
    if not url:
        return None
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else None


class SecurityMiddleware:
    """ASGI middleware enforcing Host, access token and same-origin POSTs for every route.

    It also issues the session cookie and puts the `ReviewSession` in `scope["state"]`;
    the CSRF token itself is checked by `verify_csrf` where the body is parsed.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        signer: Signer,
        token: str | None,
        public_prefixes: tuple[str, ...] = ("/static/", "/healthz"),
        limiter: FailureLimiter | None = None,
    ) -> None:
        self.app = app
        self.signer = signer
        self.token = token
        self.public_prefixes = public_prefixes
        self.limiter = limiter or FailureLimiter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not self.token and not is_loopback(_host_name(_header(scope, b"host") or "")):
            await _plain(send, 421, "This review app only answers on 127.0.0.1 / localhost.")
            return
        cookies = SimpleCookie(_header(scope, b"cookie") or "")
        parsed = self.signer.read_cookie(cookies[COOKIE].value if COOKIE in cookies else None)
        sid, authed = parsed if parsed else (secrets.token_hex(16), False)
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        path = scope.get("path", "/")
        public = path.startswith(self.public_prefixes)
        fresh = parsed is None
        if self.token and not authed and not public:
            address = _client_address(scope)
            wait = self.limiter.retry_after(address)
            if wait:
                await _plain(
                    send,
                    429,
                    f"Too many wrong access tokens from {address}: try again in {wait} s.",
                    [(b"retry-after", str(wait).encode())],
                )
                return
            given = query.get("token")
            if given is None or not same_secret(given, self.token):
                if given is not None:
                    self.limiter.failed(address)
                await _plain(
                    send,
                    401,
                    "Access token required: open the URL printed by "
                    "`heaters review` (it ends with ?token=...).",
                )
                return
            # Token accepted once: remember it in the signed cookie and drop it from the URL.
            authed, fresh = True, True
            rest = urlencode([(k, v) for k, v in query.items() if k != "token"])
            await _redirect(
                send,
                _local_path(path) + (f"?{rest}" if rest else ""),
                self._set_cookie(sid, authed),
            )
            return
        if scope["method"] not in ("GET", "HEAD", "OPTIONS"):
            origin = _header(scope, b"origin") or _origin_of(_header(scope, b"referer"))
            own = {f"{scheme}://{_header(scope, b'host')}" for scheme in ("http", "https")}
            if origin not in own:
                await _plain(
                    send,
                    403,
                    "Cross-site request refused (Origin/Referer missing or not this app).",
                )
                return
            if fresh:
                await _plain(send, 403, "No review session: reload the page.")
                return
        session = ReviewSession(sid, authed or not self.token, self.signer.csrf(sid))
        scope.setdefault("state", {})["review_session"] = session
        if not fresh:
            await self.app(scope, receive, send)
            return
        cookie = self._set_cookie(sid, authed)

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"set-cookie", cookie)]
            await send(message)

        await self.app(scope, receive, send_with_cookie)

    def _set_cookie(self, sid: str, authed: bool) -> bytes:
        value = self.signer.cookie_value(sid, authed)
        return f"{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict".encode("latin-1")


def verify_csrf(session: ReviewSession, header: str | None, form_value: str | None) -> bool:
    given = header or form_value or ""
    return bool(given) and same_secret(given, session.csrf)


async def _plain(
    send: Send, status: int, text: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = text.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                *(extra or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _redirect(send: Send, location: str, cookie: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 303,
            "headers": [
                (b"location", location.encode("latin-1")),
                (b"set-cookie", cookie),
                (b"content-length", b"0"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b""})
