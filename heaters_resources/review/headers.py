"""Security headers on every response of the review app.

Why each one:

* `Content-Security-Policy`: only this app's own script and stylesheet run (no inline script,
  no eval), so an injection that slipped past template escaping could not execute. Video and
  images come from this origin or, on S3, from the presigned URLs `/media/...` redirects to,
  so `media-src` / `img-src` add the object store's origin. Inline `style` attributes stay
  allowed (`style-src-attr`): the sprite scrubber sizes its sheet with one.
  `frame-ancestors 'none'` and `form-action 'self'` stop framing and form hijacking.
* `X-Frame-Options: DENY`: the same anti-framing rule for browsers without CSP level 2.
* `X-Content-Type-Options: nosniff`: a clip or keyframe is never reinterpreted as HTML/script.
* `Referrer-Policy: no-referrer`: the page URL (it may carry `?token=`) never leaks to S3.

`SecurityHeaders` is the outermost middleware, so the refusals of `SecurityMiddleware` (401,
403, 421, 429) and the router's 404/405 carry the headers too.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from heaters_resources.review.security import ASGIApp, Message, Receive, Scope, Send
from heaters_resources.store.objects import LocalObjectStore, ObjectStore


def store_origins(store: ObjectStore) -> list[str]:
    """Origins the browser fetches media from besides this app: none for a local store; for
    S3 the origin of its presigned URLs (computed locally, no request is made)."""
    if isinstance(store, LocalObjectStore):
        return []
    parts = urlsplit(store.url("csp-origin-probe", expires_in=60))
    return [f"{parts.scheme}://{parts.netloc}"] if parts.scheme and parts.netloc else []


def content_security_policy(media_origins: Iterable[str] = ()) -> str:
    """The policy of the review page (see the module doc for why each directive)."""
    media = " ".join(["'self'", *media_origins])
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "style-src-attr 'unsafe-inline'",
            f"img-src {media}",
            f"media-src {media}",
            "connect-src 'self'",
            "form-action 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
        ]
    )


def security_headers(csp: str) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-security-policy", csp.encode("latin-1")),
        (b"x-frame-options", b"DENY"),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
    ]


class SecurityHeaders:
    """ASGI middleware adding `security_headers` to every HTTP response (replacing any of the
    same name an inner layer set)."""

    def __init__(self, app: ASGIApp, *, csp: str) -> None:
        self.app = app
        self.headers = security_headers(csp)
        self.names = {name for name, _ in self.headers}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() not in self.names
                ]
                message["headers"] = [*kept, *self.headers]
            await send(message)

        await self.app(scope, receive, send_with_headers)
