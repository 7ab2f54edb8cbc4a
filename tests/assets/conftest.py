"""Fixtures of the Dagster tests: a test instance, resources on the test database and a
per-test HEATERS_HOME, and the Definitions built on them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from heaters_assets.definitions import build_definitions
from heaters_resources.db.embedded_pg import EmbeddedServer
from heaters_resources.db.engine import Database
from heaters_resources.orchestration.resources import (
    DatabaseResource,
    ObjectStoreResource,
    SettingsResource,
)


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        yield inst


@pytest.fixture
def resources(db: Database, pg_server: EmbeddedServer, tmp_path: Path) -> dict[str, Any]:
    home = str(tmp_path / "home")
    return {
        "database": DatabaseResource(database_url=pg_server.url),
        "object_store": ObjectStoreResource(heaters_home=home),
        "settings": SettingsResource(heaters_home=home, database_url=pg_server.url),
    }


@pytest.fixture
def defs(resources: dict[str, Any]) -> dg.Definitions:
    return build_definitions(resources)
