"""``python -m heaters_media <task> ...``: every media task as a command.

The result is printed as one JSON object on stdout; logs and progress go to stderr. A failure
prints ``{"status": "error", "error": {"type", "message"}}`` on stdout and exits non-zero, so the
platform (or a person debugging) can act on it without parsing a traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

from heaters_media.errors import InvalidInputError, MediaError
from heaters_media.progress import ProgressFn

app = typer.Typer(
    name="heaters_media",
    help="Heaters media tasks. Each prints one JSON object on stdout; progress goes to stderr.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
_err = Console(stderr=True)


@contextmanager
def _progress(label: str, quiet: bool) -> Iterator[ProgressFn | None]:
    """A Rich progress bar on stderr, handed to tasks as a ``(fraction, message)`` callback."""
    if quiet:
        yield None
        return
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[msg]}"),
        console=_err,
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=1.0, msg="")

        def update(fraction: float, message: str = "") -> None:
            bar.update(task, completed=max(0.0, min(1.0, fraction)), msg=message)

        yield update


def _emit(fn: Callable[[], Any]) -> None:
    """Run a task and print its result (or its typed error) as JSON."""
    try:
        try:
            result = fn()
        except OSError as exc:  # e.g. --out below a regular file: a bad argument, not a crash
            where = f": {exc.filename}" if exc.filename else ""
            raise InvalidInputError(f"{exc.strerror or exc}{where}") from exc
    except MediaError as exc:
        print(json.dumps(exc.to_dict()))
        raise typer.Exit(exc.exit_code) from None
    data = result.to_dict() if hasattr(result, "to_dict") else result
    print(json.dumps(data, default=str))


Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar on stderr.")]


@app.command("probe")
def probe_cmd(
    path: Path,
    no_verify: Annotated[
        bool, typer.Option(help="Skip the packet count that detects truncated files.")
    ] = False,
) -> None:
    """Duration, fps, frame count, size, rotation, codecs, bit rate of a video."""
    from heaters_media.probe import probe

    _emit(lambda: probe(path, verify=not no_verify))


@app.command("ingest")
def ingest_cmd(
    source: Annotated[str, typer.Argument(help="http(s) URL (via yt-dlp) or a local file path.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder.")],
    max_height: Annotated[int, typer.Option(help="Best quality up to this height.")] = 1080,
    force_normalize: Annotated[bool, typer.Option(help="Re-encode even when not needed.")] = False,
    quiet: Quiet = False,
) -> None:
    """Fetch (URL) or copy (path) a video, normalize it when needed (H.264/AAC MP4, faststart)."""
    from heaters_media.ingest import ingest

    with _progress("ingest", quiet) as progress:
        _emit(
            lambda: ingest(
                source,
                out,
                max_height=max_height,
                force_normalize=force_normalize,
                progress=progress,
            )
        )


@app.command("detect-scenes")
def detect_scenes_cmd(
    path: Path,
    detector: Annotated[
        str,
        typer.Option(
            help="adaptive (default), content, histogram (the original method), or "
            "transnetv2 (the network; needs the ml extra)."
        ),
    ] = "adaptive",
    threshold: Annotated[
        float | None,
        typer.Option(help="Detector threshold (adaptive 3.0, content 27, histogram 0.6)."),
    ] = None,
    min_scene_len: Annotated[float, typer.Option(help="Minimum scene length, seconds.")] = 1.0,
    analysis_width: Annotated[
        int | None,
        typer.Option(help="Frames are downscaled to this width (default 160; at least 16)."),
    ] = None,
    gradual: Annotated[
        bool,
        typer.Option(
            "--gradual/--hard-cuts-only",
            help="Also fades, dissolves, wipes; flash frames are no cut (adaptive, content).",
        ),
    ] = True,
    short_policy: Annotated[
        str | None,
        typer.Option(help="Scenes shorter than min-scene-len: keep (marked short), merge, drop."),
    ] = None,
    trim_transitions: Annotated[
        bool, typer.Option(help="Leave gradual transitions' frames out of both scenes.")
    ] = False,
    quiet: Quiet = False,
) -> None:
    """Scene detection (cuts and gradual transitions); prints scenes and cut frames."""
    from heaters_media.scenes import detect_scenes

    with _progress("detect", quiet) as progress:
        _emit(
            lambda: detect_scenes(
                path,
                detector=detector,
                threshold=threshold,
                min_scene_len=min_scene_len,
                analysis_width=analysis_width,
                progress=progress,
                gradual=gradual,
                short_policy=short_policy,
                trim_transitions=trim_transitions,
            )
        )


def _load_scenes(text: str) -> list[dict[str, Any]]:
    """Scenes from a JSON string, a JSON file, or '-' (stdin): a list or a detect-scenes result."""
    try:
        raw = (
            sys.stdin.read()
            if text == "-"
            else (Path(text).read_text() if not text.lstrip().startswith(("[", "{")) else text)
        )
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"--scenes cannot be read as a JSON file: {exc}") from exc
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"--scenes is not valid JSON: {exc}") from exc
    except RecursionError as exc:  # `[[[[...` nested deeper than the parser's stack
        raise InvalidInputError("--scenes is nested too deeply to be a list of scenes") from exc
    if isinstance(data, dict):
        data = data.get("scenes")
    if not isinstance(data, list):
        raise InvalidInputError("--scenes must be a list of scenes or a detect-scenes result")
    return data


@app.command("split")
def split_cmd(
    path: Path,
    scenes: Annotated[
        str,
        typer.Option(
            help="JSON list of scenes, a file holding it (or a detect-scenes result), or '-'."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Output folder for the clips.")],
    precision: Annotated[
        str,
        typer.Option(
            help="exact: every clip starts on its first frame (re-encodes where needed); "
            "keyframe: pure stream copy from the key frame at or before it (snap reported)."
        ),
    ] = "exact",
    quiet: Quiet = False,
) -> None:
    """Cut a video into one frame-accurate clip per scene (stream copy where possible)."""
    from heaters_media.split import split_video

    def task() -> Any:
        with _progress("split", quiet) as progress:
            return split_video(
                path,
                _load_scenes(scenes),
                out,
                progress=progress,
                precision=precision,  # type: ignore[arg-type]  # checked by split_video
            )

    _emit(task)


@app.command("keyframes")
def keyframes_cmd(
    clip: Path,
    strategy: Annotated[
        str, typer.Option(help="midpoint (50 %) or multi (25/50/75 %).")
    ] = "midpoint",
    out: Annotated[
        Path | None, typer.Option("--out", help="Output folder (default: beside the clip).")
    ] = None,
) -> None:
    """JPEG key frames of a clip with their frame numbers and timestamps."""
    from heaters_media.keyframes import extract_keyframes

    _emit(lambda: extract_keyframes(clip, strategy=strategy, out_dir=out or clip.parent))


@app.command("sprite")
def sprite_cmd(
    clip: Path,
    out: Annotated[
        Path | None, typer.Option("--out", help="Sprite JPEG path (default: beside the clip).")
    ] = None,
    tile_width: int = 480,
    max_fps: float = 24.0,
    cols: int = 5,
) -> None:
    """A sprite sheet for scrubbing, with the metadata a player needs to map time -> tile."""
    from heaters_media.sprite import make_sprite

    target = out or clip.with_name(f"{clip.stem}_sprite.jpg")
    _emit(lambda: make_sprite(clip, target, tile_width=tile_width, max_fps=max_fps, cols=cols))


@app.command("merge")
def merge_cmd(
    a: Path, b: Path, out: Annotated[Path, typer.Option("--out", help="Output clip file.")]
) -> None:
    """Concatenate two adjacent clips into one (frame-accurate)."""
    from heaters_media.merge import merge_clips

    _emit(lambda: merge_clips(a, b, out))


@app.command("split-at")
def split_at_cmd(
    clip: Path,
    frame: Annotated[int, typer.Option("--frame", help="First frame of the second part.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder.")],
) -> None:
    """Split one clip into two at frame N (0 < N < frame count)."""
    from heaters_media.split import split_clip_at

    _emit(lambda: split_clip_at(clip, frame, out))


def main() -> None:
    """Entry point. Usage mistakes (a missing argument, an unknown command or option) come out
    as the same JSON error as any bad input, with exit status 2, not as Click's text box: the
    platform reads one format. Help (``--help``, or no arguments) is printed as usual."""
    if len(sys.argv) <= 1:
        app()
        return
    try:
        code = app(standalone_mode=False)
    except typer.Abort:
        sys.exit(130)
    except Exception as exc:
        # Click's usage errors (Typer vendors Click, so matched by their shape: exit code 2
        # and a formatted message); anything else is a bug and keeps its traceback.
        if getattr(exc, "exit_code", None) != 2 or not hasattr(exc, "format_message"):
            raise
        print(json.dumps(InvalidInputError(exc.format_message()).to_dict()))
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)


@app.command("pipeline")
def pipeline_cmd(
    source: Annotated[
        str | None,
        typer.Argument(help="URL or path (default: the bundled Big Buck Bunny sample edit)."),
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path(
        ".heaters/media-demo"
    ),
    detector: str = "adaptive",
    clips: Annotated[
        str,
        typer.Option(
            "--clips",
            help="exact: cut every clip file at full quality now (frame-exact). proxy: a small "
            "review proxy per clip from the keyframes' decode, no clip files (cut the kept "
            "clips later with `split`).",
        ),
    ] = "exact",
    embed: Annotated[
        str | None,
        typer.Option(
            "--embed",
            help="Also embed every clip from its keyframes' frames in the same decode "
            "(no JPEG round trip): heaters/pixels-v1 (no weights), openai/clip-vit-*, "
            "facebook/dinov2-*; vectors in OUT/embeddings.npy, row i = clip i.",
        ),
    ] = None,
    embed_strategy: Annotated[
        str, typer.Option(help="keyframe_multi_avg (mean of the keyframes) or keyframe_midpoint.")
    ] = "keyframe_multi_avg",
    model_path: Annotated[
        Path | None, typer.Option(help="Folder with the --embed model's save_pretrained files.")
    ] = None,
    device: Annotated[str, typer.Option(help="--embed model's device: auto, cpu, cuda, mps.")] = (
        "auto"
    ),
    quiet: Quiet = False,
) -> None:
    """Ingest, detect scenes, cut clips (or make review proxies), keyframes and sprite for every
    clip (and, with --embed, an embedding of each); print a summary."""
    from rich.table import Table

    from heaters_media.pipeline import run_pipeline
    from heaters_media.samples import SAMPLE_VIDEO

    def task() -> Any:
        with _progress("pipeline", quiet) as progress:
            result = run_pipeline(
                source or str(SAMPLE_VIDEO),
                out,
                detector=detector,
                clips=clips,
                embed=embed,
                embed_strategy=embed_strategy,
                model_path=model_path,
                device=device,
                progress=progress,
            )
        table = Table(
            title=f"{result.title or result.source}: {result.frames} frames, "
            f"{result.duration:.1f} s -> {len(result.clips)} clips"
        )
        for col in ("clip", "frames", "start", "end", "method", "keyframes", "sprite"):
            table.add_column(col)
        for c in result.clips:
            table.add_row(
                c["clip"],
                str(c["frames"]),
                f"{c['start_time']:.2f}",
                f"{c['end_time']:.2f}",
                c["method"],
                str(len(c["keyframes"])),
                c["sprite"],
            )
        _err.print(table)
        _err.print("timings (s): " + ", ".join(f"{k} {v}" for k, v in result.timings.items()))
        if result.embedding:
            e = result.embedding
            _err.print(
                f"embeddings: {e['model']} ({e['strategy']}, {e['dimension']} dims) in "
                f"{Path(result.out_dir) / e['file']}"
                + (f"; {len(e['failed'])} clip(s) failed" if e["failed"] else "")
            )
        return result

    _emit(task)


@app.command("embed")
def embed_cmd(
    images: Annotated[list[Path], typer.Argument(help="Image files (key frames) to embed.")],
    model: Annotated[
        str,
        typer.Option(
            help="openai/clip-vit-*, facebook/dinov2-*, heaters/pixels-v1 (no weights), "
            "or a save_pretrained folder."
        ),
    ] = "openai/clip-vit-base-patch32",
    strategy: Annotated[
        str, typer.Option(help="keyframe_midpoint, keyframe_multi or keyframe_multi_avg.")
    ] = "keyframe_midpoint",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 32,
    offline: Annotated[
        bool, typer.Option("--offline", help="Never download; weights from cache/path only.")
    ] = False,
    model_path: Annotated[
        Path | None, typer.Option(help="Folder with the model's save_pretrained files.")
    ] = None,
) -> None:
    """L2-normalized image embeddings (CLIP, DINOv2 or the weights-free descriptor) as JSON."""
    from heaters_media.embed import embed_images

    _emit(
        lambda: embed_images(
            images,
            model=model,
            strategy=strategy,
            device=device,
            batch_size=batch_size,
            offline=offline,
            model_path=model_path,
        )
    )
