"""One-shot notices ("Approved.", "Undone ...") carried by a cookie, not the URL.

In the URL (`?notice=Undone`) a reload showed the notice again, long after it was true, and
it stayed in the history and in bookmarks. The action's answer sets a short-lived signed
cookie; the next page shown reads it and clears it in the same response, so a reload shows
nothing stale. Signed with the app's secret so a cookie set by anything else (another app on
a sibling host name) cannot make the page say something; a forged or stale one is ignored.
"""

from __future__ import annotations

from urllib.parse import quote, unquote

from heaters_resources.review.security import Signer, same_secret

COOKIE = "heaters_flash"
MAX_MESSAGE = 300


def set_cookie(signer: Signer, message: str, error: bool) -> str:
    """The Set-Cookie value carrying `message` to the next page (60 s at most)."""
    text = quote(message[:MAX_MESSAGE], safe="").replace(".", "%2E")  # "." splits the value
    body = f"{int(error)}.{text}"
    return f"{COOKIE}={body}.{signer.sign(body)}; Path=/; Max-Age=60; HttpOnly; SameSite=Strict"


def clear_cookie() -> str:
    return f"{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict"


def read(signer: Signer, value: str | None) -> tuple[str, bool] | None:
    """(message, is_error) from the cookie's value, or None when absent or not ours."""
    if not value or value.count(".") != 2:
        return None
    flag, text, sig = value.split(".")
    body = f"{flag}.{text}"
    if flag not in ("0", "1") or not same_secret(sig, signer.sign(body)):
        return None
    return unquote(text)[:MAX_MESSAGE], flag == "1"
