"""The `heaters` console script turns expected errors into one line and exit status 2."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from heaters_resources.cli import main


def test_old_database_is_one_line_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    (home / "pgdata").mkdir(parents=True)
    (home / "pgdata" / "PG_VERSION").write_text("16\n")
    monkeypatch.setenv("HEATERS_HOME", str(home))
    monkeypatch.delenv("HEATERS_DATABASE_URL", raising=False)
    monkeypatch.setattr(sys, "argv", ["heaters", "db-status"])
    with pytest.raises(SystemExit) as exited:
        main.run()
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("heaters: ") and "PostgreSQL 16" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert (home / "pgdata" / "PG_VERSION").read_text() == "16\n"  # left untouched


def test_bugs_keep_their_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(main, "app", broken)
    with pytest.raises(RuntimeError):
        main.run()
