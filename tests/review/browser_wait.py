"""Driving the review page in Chromium under its Content-Security-Policy: waiting on page state
without `eval`, and collecting what the policy blocked (the page must never need that)."""

from __future__ import annotations

import time
from typing import Any


def wait_for_js(page: Any, expression: str, arg: Any = None, timeout: float = 30.0) -> None:
    """Poll until `expression` (or a function of `arg`) is truthy in `page`.

    Why not `page.wait_for_function`: to poll, Playwright evaluates the predicate with `eval`
    inside the page, which the review app's policy (`script-src 'self'`, no 'unsafe-eval')
    forbids, as it should. `page.evaluate` goes through the DevTools protocol, which the
    page's policy does not govern. The deadline only stops a hang, like Playwright's own.
    """
    deadline = time.monotonic() + timeout
    while not _evaluate(page, expression, arg):
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {timeout:.0f} s: {expression}")
        page.wait_for_timeout(50)


def _evaluate(page: Any, expression: str, arg: Any) -> Any:
    """`page.evaluate`, false while a navigation replaces the document (it is asked again on
    the new one, as `wait_for_function` would)."""
    from playwright.sync_api import Error

    try:
        return page.evaluate(expression, arg)
    except Error as exc:
        if "context was destroyed" in exc.message or "navigat" in exc.message:
            return False
        raise


def csp_violations(page: Any) -> list[str]:
    """A list that fills with the console reports of anything the policy blocked (scripts,
    styles, media, images: e.g. an S3 origin missing from `media-src`)."""
    found: list[str] = []

    def seen(message: Any) -> None:
        if "Content Security Policy" in message.text:
            found.append(message.text)

    page.on("console", seen)
    return found
