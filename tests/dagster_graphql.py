"""A query to a running dagster-webserver's GraphQL endpoint, for the tests that drive one."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

#: The UI's *Launch backfill* mutation.
LAUNCH_BACKFILL = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}"""


def graphql(port: int, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``data`` of the answer; an HTTP error or a GraphQL ``errors`` list fails the test."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        method="POST",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"GraphQL {exc.code}: {exc.read().decode()[:3000]}") from exc
    assert "errors" not in body, body
    data: dict[str, Any] = body["data"]
    return data
