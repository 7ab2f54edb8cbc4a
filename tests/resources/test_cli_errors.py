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
    def broken(**_: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(main, "app", broken)
    monkeypatch.setattr(sys, "argv", ["heaters", "status"])
    with pytest.raises(RuntimeError):
        main.run()


def _run(
    args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    """`heaters ARGS` through the console script's entry point; (exit status, stderr)."""
    monkeypatch.setattr(sys, "argv", ["heaters", *args])
    with pytest.raises(SystemExit) as exited:
        main.run()
    code = exited.value.code
    return (code if isinstance(code, int) else 0), capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nosuch"], "heaters: No such command 'nosuch'."),
        (["similar"], "heaters: Missing argument 'clip'."),
        (["status", "--video", "9" * 23], "heaters: Invalid value for '--video'"),
        (["status", "--video", "0"], "heaters: Invalid value for '--video'"),
        (["similar", "1", "-k", "0"], "heaters: Invalid value for '-k'"),
        (["near-duplicates", "--threshold", "nan"], "heaters: Invalid value for '--threshold'"),
        (["review", "--port", "-1"], "heaters: Invalid value for '--port'"),
        (["export", "--video", "-3"], "heaters: Invalid value for '--video'"),
    ],
)
def test_usage_mistakes_are_one_line_exit_2(
    args: list[str],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Click's text box (or, for an id past bigint, a driver traceback) became one line."""
    monkeypatch.setenv("HEATERS_HOME", str(tmp_path / "home"))
    code, err = _run(args, monkeypatch, capsys)
    assert code == 2 and err.startswith(message), err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "home").exists()  # refused before any database was started


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("folder.jsonl", "export target is a folder, not a file"),
        ("x.csv", "cannot tell the format of"),
        ("x.json", "cannot tell the format of"),
        ("noextension", "from its extension '(none)'"),
        ("file.txt/below.jsonl", "export target is below a file"),
    ],
)
def test_export_to_an_unusable_target_is_one_line_exit_2(
    target: str,
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`heaters export DIR` was a traceback, `export x.csv` silently wrote JSON lines."""
    (tmp_path / "folder.jsonl").mkdir()
    (tmp_path / "file.txt").write_text("a file\n")
    monkeypatch.setenv("HEATERS_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    code, err = _run(["export", target], monkeypatch, capsys)
    assert code == 2 and err.startswith("heaters: ") and message in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.csv").exists() and not (tmp_path / "home").exists()


def test_help_is_still_printed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["heaters", "export", "--help"])
    with pytest.raises(SystemExit) as exited:
        main.run()
    assert exited.value.code == 0
    assert "refused unless --format is given" in " ".join(capsys.readouterr().out.split())


def test_version_and_help_without_type_noise(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from importlib.metadata import version

    monkeypatch.setattr(sys, "argv", ["heaters", "--version"])
    with pytest.raises(SystemExit) as exited:
        main.run()
    assert (
        exited.value.code == 0
        and capsys.readouterr().out.strip() == f"heaters {version('heaters')}"
    )
    monkeypatch.setattr(sys, "argv", ["heaters", "cleanup", "--help"])
    with pytest.raises(SystemExit):
        main.run()
    out = capsys.readouterr().out
    assert "--dry-run" in out and "<bool>" not in out  # a flag takes no value: no type shown
    assert "<float range>" in out  # an option that takes one keeps it
    # the docstring's paragraph re-flowed, not cut where the source line ended
    assert "the objects that overwrites scheduled" in " ".join(out.replace("│", " ").split())
