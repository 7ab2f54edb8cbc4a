"""Cheap checks of the shape of the code: the Definitions load, names agree with dagster.yaml,
imports flow one way (ARCHITECTURE.md, "Layers"), and every module stays small. No database,
no ffmpeg: this file runs in a few seconds and fails first when a move breaks the wiring."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml

from heaters_resources.orchestration import names
from heaters_resources.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("heaters_media", "heaters_resources", "heaters_assets")


def test_definitions_load_with_every_named_job_and_asset() -> None:
    from heaters_assets.definitions import defs

    repo = defs.get_repository_def()
    jobs = {j.name for j in repo.get_all_jobs()}
    assert {
        names.INGEST_VIDEO_JOB,
        names.CLIP_ARTIFACTS_JOB,
        names.VIDEO_JOB,
        names.EMBED_CLIPS_JOB,
        names.REVIEW_ACTION_JOB,
    } <= jobs
    assets = {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
    assert assets == {
        names.SOURCE_VIDEO_ASSET,
        names.CLIP_SPLITS_ASSET,
        names.KEYFRAMES_ASSET,
        names.SPRITE_SHEET_ASSET,
        names.CLIP_EMBEDDING_ASSET,
    }
    partitions = {
        p.name
        for a in repo.asset_graph.asset_nodes
        if isinstance(p := a.partitions_def, dg.DynamicPartitionsDefinition)
    }
    assert partitions == {names.SOURCE_VIDEOS}  # by video only: partitions grow with videos


def test_dagster_yaml_limits_use_the_resource_tag() -> None:
    config = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    limits = config["run_coordinator"]["config"]["tag_concurrency_limits"]
    assert {(lim["key"], lim["value"]) for lim in limits} == {
        (names.RESOURCE_TAG, names.MEDIA),
        (names.RESOURCE_TAG, names.EMBEDDING),
    }


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("heaters_media", {"heaters_resources", "heaters_assets", "dagster", "sqlalchemy"}),
        ("heaters_resources", {"heaters_assets"}),
    ],
)
def test_imports_flow_one_way(package: str, forbidden: set[str]) -> None:
    bad = {
        str(p.relative_to(ROOT)): sorted(_imports(p) & forbidden)
        for p in (ROOT / package).rglob("*.py")
        if _imports(p) & forbidden
    }
    assert bad == {}


def test_no_module_over_500_lines() -> None:
    long = {
        str(p.relative_to(ROOT)): n
        for pkg in PACKAGES
        for p in (ROOT / pkg).rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 500
    }
    assert long == {}


def test_at_most_eight_modules_at_the_top_of_heaters_resources() -> None:
    top = sorted(p.name for p in (ROOT / "heaters_resources").glob("*.py"))
    assert len(top) <= 8, top


def test_only_settings_reads_heaters_variables() -> None:
    """Configuration lives in `Settings`; `heaters_media/tools.py` is the one exception (media
    code may not import heaters_resources)."""
    readers = sorted(
        str(p.relative_to(ROOT))
        for pkg in PACKAGES
        for p in (ROOT / pkg).rglob("*.py")
        if p.name != "settings.py"
        and p.relative_to(ROOT).as_posix() != "heaters_media/tools.py"
        and any(
            isinstance(n, ast.Constant)
            and isinstance(n.value, str)
            and n.value.startswith("HEATERS_")
            and _is_environ_read(p, n)
            for n in ast.walk(ast.parse(p.read_text()))
        )
    )
    assert readers == []


def _is_environ_read(path: Path, node: ast.Constant) -> bool:
    line = path.read_text().splitlines()[node.lineno - 1]
    return re.search(r"environ(\.get\(|\[)|getenv\(", line) is not None


def test_settings_read_every_variable_and_refuse_bad_numbers() -> None:
    env = {
        "HEATERS_HOME": "/tmp/h",
        "HEATERS_EMBEDDING_MODEL": "openai/clip-vit-base-patch32",
        "HEATERS_INBOX_SETTLE_SECONDS": "0.5",
        "HEATERS_INBOX_PREFIX": "inbox/",
        "HEATERS_ARCHIVE_GRACE_SECONDS": "0",
        "HEATERS_REVIEW_TOKEN": "t",
    }
    s = Settings.from_env(env)
    assert (s.embedding_model, s.inbox_settle_seconds, s.inbox_prefix) == (
        "openai/clip-vit-base-patch32",
        0.5,
        "inbox/",
    )
    assert (s.archive_grace_seconds, s.review_token, s.embedding_strategy) == (0.0, "t", None)
    assert Settings.from_env({}).archive_grace_seconds == 60.0
    for bad in ("soon", "-1", "nan", "inf"):
        with pytest.raises(ValueError, match="HEATERS_ARCHIVE_GRACE_SECONDS"):
            Settings.from_env({"HEATERS_ARCHIVE_GRACE_SECONDS": bad})


def test_descriptor_name_is_the_default_model() -> None:
    from heaters_media.descriptor import NAME
    from heaters_resources.search import space

    assert space.DESCRIPTOR_MODEL == NAME


def test_search_and_review_queries_import_without_opencv_or_torch() -> None:
    """The review page and the similarity CLI must not pay for OpenCV / torch at import."""
    code = (
        "import sys, heaters_resources.search.similarity, heaters_resources.review.queries; "
        "print(sorted(m for m in ('cv2', 'torch', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.stdout.strip() == "[]"
