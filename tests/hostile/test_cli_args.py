"""Hostile arguments for `python -m heaters_media` and `heaters`: bad numbers, NaN and
infinity, zero and negative values where they mean nothing, folders and missing paths,
unicode, very long strings, ids past Postgres bigint, malformed JSON. Each case is a typed
error (see conftest), never a traceback, a hang or a silent answer.

Placeholders in the arguments: {good} a real 2 s video, {out} a fresh output folder, {dir} an
existing folder, {text} a text file, {missing} a path that does not exist, {short} a file
holding a token too short to use.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.hostile.conftest import Worker, heaters_error, media_error

LONG = "x" * 5000
NESTED = "[" * 100_000 + "]" * 100_000
BIG = "9" * 23  # past Postgres bigint (and past int64)
NUMBERS = ["nan", "inf", "-inf", "NaN", "1e309", "", "abc", "\u00b2", "1_0x"]

# (id, argv, stdin, expected error type or None for any typed error)
MEDIA: list[tuple[str, list[str], str, str | None]] = [
    *(
        (
            f"detect-threshold-{v or 'empty'}",
            ["detect-scenes", "{good}", "-q", "--threshold", v],
            "",
            "invalid_input",
        )
        for v in [*NUMBERS, "0", "-5", "-0.0", "1e-400"]
    ),
    *(
        (
            f"detect-histogram-threshold-{v}",
            ["detect-scenes", "{good}", "-q", "--detector", "histogram", "--threshold", v],
            "",
            "invalid_input",
        )
        for v in ["1.01", "2", "0", "-1"]
    ),
    (
        "detect-content-threshold-256",
        ["detect-scenes", "{good}", "-q", "--detector", "content", "--threshold", "256"],
        "",
        "invalid_input",
    ),
    *(
        (
            f"detect-width-{v or 'empty'}",
            ["detect-scenes", "{good}", "-q", "--analysis-width", v],
            "",
            "invalid_input",
        )
        for v in ["0", "-1", "15", "1.5", "nan", ""]
    ),
    *(
        (
            f"detect-min-len-{v or 'empty'}",
            ["detect-scenes", "{good}", "-q", "--min-scene-len", v],
            "",
            "invalid_input",
        )
        for v in ["nan", "inf", "-1", "-0.001", "abc", ""]
    ),
    *(
        (
            f"detect-detector-{i}",
            ["detect-scenes", "{good}", "-q", "--detector", v],
            "",
            "invalid_input",
        )
        for i, v in enumerate(["", "ADAPTIVE", "adaptive ", "\u00e9\u2603", LONG, "content;rm"])
    ),
    ("detect-folder", ["detect-scenes", "{dir}", "-q"], "", "invalid_input"),
    ("detect-long-path", ["detect-scenes", LONG, "-q"], "", "invalid_input"),
    *(
        (
            f"sprite-tile-width-{v or 'empty'}",
            ["sprite", "{good}", "--out", "{out}/s.jpg", "--tile-width", v],
            "",
            "invalid_input",
        )
        for v in ["0", "-1", "1", "nan", "", BIG, "99999"]
    ),
    *(
        (
            f"sprite-max-fps-{v or 'empty'}",
            ["sprite", "{good}", "--out", "{out}/s.jpg", "--max-fps", v],
            "",
            "invalid_input",
        )
        for v in ["nan", "0", "-1", "-inf", "", "abc"]
    ),
    *(
        (
            f"sprite-cols-{v or 'empty'}",
            ["sprite", "{good}", "--out", "{out}/s.jpg", "--cols", v],
            "",
            "invalid_input",
        )
        for v in ["0", "-3", "nan", ""]
    ),
    ("sprite-out-folder", ["sprite", "{good}", "--out", "{dir}"], "", "invalid_input"),
    ("sprite-out-png", ["sprite", "{good}", "--out", "{out}/s.png"], "", "invalid_input"),
    ("sprite-out-below-file", ["sprite", "{good}", "--out", "{text}/s.jpg"], "", "invalid_input"),
    *(
        (
            f"keyframes-strategy-{i}",
            ["keyframes", "{good}", "--out", "{out}", "--strategy", v],
            "",
            "invalid_input",
        )
        for i, v in enumerate(["", "all", "MIDPOINT", "\u2603", LONG])
    ),
    (
        "keyframes-out-below-file",
        ["keyframes", "{good}", "--out", "{text}/kf"],
        "",
        "invalid_input",
    ),
    *(
        (
            f"split-at-frame-{v or 'empty'}",
            ["split-at", "{good}", "--frame", v, "--out", "{out}"],
            "",
            "invalid_input",
        )
        for v in ["0", "-1", "24", "25", BIG, "nan", "1.5", "", "\u00b2"]
    ),
    *(
        (
            f"split-scenes-{i}",
            ["split", "{good}", "--scenes", v, "--out", "{out}", "-q"],
            "",
            "invalid_input",
        )
        for i, v in enumerate(
            [
                "[]",
                "{}",
                "null",
                "[NaN]",
                '[{"start_frame": NaN, "end_frame": 5}]',
                '[{"start_frame": 0, "end_frame": Infinity}]',
                '[{"start_frame": 0, "end_frame": 1e400}]',
                '[{"start_frame": -5, "end_frame": 5}]',
                '[{"start_frame": 5, "end_frame": 5}]',
                '[{"start_frame": 0, "end_frame": 5}, {"start_frame": 3, "end_frame": 9}]',
                f'[{{"start_frame": 0, "end_frame": {BIG}}}]',
                '[{"start_frame": "0", "end_frame": "5"}]',
                '[{"start_frame": true, "end_frame": 5}]',
                '{"scenes": "all"}',
                "[1, 2",
                NESTED,
                "{missing}",
                "{dir}",
                LONG,
            ]
        )
    ),
    (
        "split-scenes-stdin-empty",
        ["split", "{good}", "--scenes", "-", "--out", "{out}", "-q"],
        "",
        "invalid_input",
    ),
    (
        "split-scenes-stdin-binary",
        ["split", "{good}", "--scenes", "-", "--out", "{out}", "-q"],
        "\x00\xff\ufffd",
        "invalid_input",
    ),
    (
        "split-precision",
        ["split", "{good}", "--scenes", "[]", "--precision", "fast", "--out", "{out}"],
        "",
        "invalid_input",
    ),
    (
        "split-out-file",
        [
            "split",
            "{good}",
            "--scenes",
            '[{"start_frame": 0, "end_frame": 5}]',
            "--out",
            "{text}",
            "-q",
        ],
        "",
        "invalid_input",
    ),
    ("merge-out-folder", ["merge", "{good}", "{good}", "--out", "{dir}"], "", "invalid_input"),
    ("merge-out-mkv", ["merge", "{good}", "{good}", "--out", "{out}/m.mkv"], "", "invalid_input"),
    *(
        (f"ingest-source-{i}", ["ingest", v, "--out", "{out}", "-q"], "", None)
        for i, v in enumerate(
            [
                "",
                "   ",
                "ftp://example.com/v.mp4",
                "file:///etc/passwd",
                "javascript:alert(1)",
                "http://",
                "http:///path",
                "http://[::1",
                "http://[::1]:99999/x",
                "https://exa mple.com/v.mp4",
                "{missing}",
                "{dir}",
                LONG,
                "\u2603.mp4",
            ]
        )
    ),
    *(
        (
            f"ingest-max-height-{v or 'empty'}",
            ["ingest", "{good}", "--out", "{out}", "-q", "--max-height", v],
            "",
            "invalid_input",
        )
        for v in ["0", "-1", "nan", "", "1.5"]
    ),
    ("ingest-out-file", ["ingest", "{good}", "--out", "{text}", "-q"], "", "invalid_input"),
    (
        "embed-batch-0",
        ["embed", "{text}", "--model", "heaters/pixels-v1", "--batch-size", "0"],
        "",
        "invalid_input",
    ),
    (
        "embed-batch-negative",
        ["embed", "{text}", "--model", "heaters/pixels-v1", "--batch-size", "-1"],
        "",
        "invalid_input",
    ),
    (
        "embed-strategy",
        ["embed", "{text}", "--model", "heaters/pixels-v1", "--strategy", "all"],
        "",
        "invalid_input",
    ),
    (
        "embed-device",
        ["embed", "{text}", "--model", "heaters/pixels-v1", "--device", "tpu"],
        "",
        "invalid_input",
    ),
    ("embed-missing-image", ["embed", "{missing}", "--model", "heaters/pixels-v1"], "", None),
    ("embed-text-as-image", ["embed", "{text}", "--model", "heaters/pixels-v1"], "", None),
    ("embed-no-images", ["embed", "--model", "heaters/pixels-v1"], "", "invalid_input"),
    ("pipeline-missing", ["pipeline", "{missing}", "--out", "{out}", "-q"], "", "invalid_input"),
    (
        "pipeline-detector",
        ["pipeline", "{good}", "--out", "{out}", "-q", "--detector", "magic"],
        "",
        "invalid_input",
    ),
    ("unknown-command", ["transcode", "{good}"], "", "invalid_input"),
    ("unknown-option", ["probe", "{good}", "--fast"], "", "invalid_input"),
    ("missing-argument", ["probe"], "", "invalid_input"),
    ("extra-argument", ["probe", "{good}", "{good}"], "", "invalid_input"),
]

# (id, argv, expected exit status)
HEATERS: list[tuple[str, list[str], int]] = [
    *(
        (f"status-video-{v or 'empty'}", ["status", "--video", v], 2)
        for v in ["0", "-1", BIG, "abc", "1.5", "\u00b2", ""]
    ),
    *(
        (f"similar-clip-{i}", ["similar", v], 2)
        for i, v in enumerate(
            [BIG, "\u00b2", "", "0", "-1", "../../etc/passwd", "\u2603_1_2", LONG, "1 OR 1=1"]
        )
    ),
    *(
        (f"similar-k-{v or 'empty'}", ["similar", "1", "-k", v], 2)
        for v in ["0", "-1", "1001", "nan", "", BIG]
    ),
    ("similar-unknown-model", ["similar", "1", "--model", "no/such-model"], 2),
    ("similar-bad-strategy", ["similar", "1", "--strategy", "keyframe_all"], 2),
    ("search-empty", ["search", "   "], 2),
    ("search-k-0", ["search", "a cat", "-k", "0"], 2),
    ("search-descriptor-has-no-text", ["search", "a cat", "--model", "heaters/pixels-v1"], 2),
    *(
        (f"near-dup-threshold-{v or 'empty'}", ["near-duplicates", "--threshold", v], 2)
        for v in ["nan", "inf", "-inf", "0", "-0.1", "2.5", "", "abc"]
    ),
    ("near-dup-unknown-model", ["near-duplicates", "--model", "no/such-model"], 2),
    ("near-dup-unknown-strategy", ["near-duplicates", "--strategy", "keyframe_all"], 2),
    ("near-dup-per-clip-0", ["near-duplicates", "--per-clip", "0"], 2),
    ("near-dup-limit-negative", ["near-duplicates", "--limit", "-1"], 2),
    ("near-dup-engine", ["near-duplicates", "--engine", "gpu"], 2),
    ("near-dup-index", ["near-duplicates", "--index", "hnsw"], 2),
    ("near-dup-since-negative", ["near-duplicates", "--since-clip-id", "-1"], 2),
    ("near-dup-since-big", ["near-duplicates", "--since-clip-id", BIG], 2),
    ("near-dup-check-recall-negative", ["near-duplicates", "--check-recall", "-1"], 2),
    *(
        (f"export-target-{i}", ["export", v], 2)
        for i, v in enumerate(
            [
                "{dir}",
                "{dir}/",
                "x.csv",
                "x.json",
                "x.txt",
                "noext",
                "{text}/x.jsonl",
                "",
                "\u2603.csv",
                LONG + ".jsonl",
            ]
        )
    ),
    ("export-format-csv", ["export", "x.jsonl", "--format", "csv"], 2),
    ("export-format-empty", ["export", "x.jsonl", "--format", ""], 2),
    ("export-parquet-stdout", ["export", "-", "--format", "parquet"], 2),
    *(
        (f"export-video-{v}", ["export", "x.jsonl", "--video", v], 2)
        for v in ["0", "-1", BIG, "abc"]
    ),
    *(
        (f"submit-{i}", ["submit", v], 2)
        for i, v in enumerate(
            ["", "ftp://x/y.mp4", "{missing}", "{dir}", "javascript:alert(1)", LONG]
        )
    ),
    ("submit-none", ["submit"], 2),
    *(
        (f"submit-malformed-url-{i}", ["submit", v], 2)
        for i, v in enumerate(["http://[::1", "http://[::1]:99999/x", "https://exa mple.com/v"])
    ),
    *((f"review-port-{v}", ["review", "--port", v], 2) for v in ["-1", "65536", "abc", BIG]),
    ("review-short-token", ["review", "--token", "short"], 2),
    ("review-reviewer-too-long", ["review", "--reviewer", "r" * 181], 2),
    ("review-reviewer-empty", ["review", "--reviewer", ""], 2),
    ("review-token-and-file", ["review", "--token", "x" * 20, "--token-file", "{text}"], 2),
    ("review-token-file-missing", ["review", "--token-file", "{missing}"], 2),
    ("review-token-file-folder", ["review", "--token-file", "{dir}"], 2),
    ("review-token-file-short", ["review", "--token-file", "{short}", "--host", "0.0.0.0"], 2),
    (
        "review-host-unresolvable",
        ["review", "--host", "no-such-host.invalid", "--token", "y" * 20],
        2,
    ),
    ("review-host-bad-address", ["review", "--host", "999.1.1.1", "--token", "y" * 20], 2),
    *(
        (f"cleanup-age-{v}", ["cleanup", "--dry-run", "--min-age-hours", v], 2)
        for v in ["nan", "inf", "-1", "1e20", "abc"]
    ),
    ("embed-missing-batch-0", ["embed-missing", "--batch-size", "0"], 2),
    ("embed-missing-bad-strategy", ["embed-missing", "--dry-run", "--strategy", "keyframe_all"], 2),
    ("unknown-command", ["transmogrify"], 2),
    ("unknown-option", ["status", "--everything"], 2),
    ("extra-argument", ["db-url", "extra"], 2),
]


def _fill(args: list[str], good: Path, scratch: Path, case: str) -> list[str]:
    values = {
        "{good}": str(good),
        "{out}": str(scratch / "out" / case),
        "{dir}": str(scratch / "a folder"),
        "{text}": str(scratch / "notes.txt"),
        "{missing}": str(scratch / "missing" / "nothing.mp4"),
        "{short}": str(scratch / "short-token.txt"),
    }
    filled = []
    for arg in args:
        for key, value in values.items():
            arg = arg.replace(key, value)
        filled.append(arg)
    return filled


@pytest.fixture(scope="module")
def scratch(hostile_dir: Path) -> Path:
    folder = hostile_dir / "args"
    (folder / "a folder").mkdir(parents=True, exist_ok=True)
    (folder / "notes.txt").write_text("not a video, not a token\n")
    (folder / "short-token.txt").write_text("abc\n")
    return folder


@pytest.mark.parametrize(
    ("args", "stdin", "kind"), [pytest.param(a, s, k, id=i) for i, a, s, k in MEDIA]
)
def test_media_arguments(
    worker: Worker,
    bad: dict[str, Path],
    scratch: Path,
    request: pytest.FixtureRequest,
    args: list[str],
    stdin: str,
    kind: str | None,
) -> None:
    good = bad["zero_bytes.mp4"].parent / "good_faststart.mp4"
    case = request.node.callspec.id
    answer = worker.run("media", _fill(args, good, scratch, case), stdin)
    error = media_error(answer)
    if kind is not None:
        assert error["type"] == kind, error


@pytest.mark.parametrize(("args", "code"), [pytest.param(a, c, id=i) for i, a, c in HEATERS])
def test_heaters_arguments(
    worker: Worker,
    bad: dict[str, Path],
    scratch: Path,
    request: pytest.FixtureRequest,
    args: list[str],
    code: int,
) -> None:
    good = bad["zero_bytes.mp4"].parent / "good_faststart.mp4"
    case = request.node.callspec.id
    heaters_error(worker.run("heaters", _fill(args, good, scratch, case)), code)
