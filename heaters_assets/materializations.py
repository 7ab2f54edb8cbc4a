"""One materialization per video partition, describing exactly that video's clips.

A run may cover a range of video partitions. Dagster records one output for the whole range (with
the same metadata on every partition), so the clip-level assets emit no output and log one
``AssetMaterialization`` per partition instead: its own counts, a table of its own clips, and
its own preview. A video whose clips failed gets no materialization (the run then fails naming
them), so the partitions page shows exactly which videos are done.
"""

from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import dagster as dg

from heaters_assets.previews import ClipFigures
from heaters_resources.steps import ClipBatchOutcome

#: Rows of the per-partition clip table (a video with more clips lists the first ones).
TABLE_ROWS = 500

_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("clip", "string"),
        dg.TableColumn("result", "string"),
        dg.TableColumn("frames", "int"),
        dg.TableColumn("duration_s", "float"),
        dg.TableColumn("image", "string", description="stored image size (sprites: and tiles)"),
        dg.TableColumn("review", "string", description="the clip on the review page"),
        dg.TableColumn("note", "string"),
    ]
)


def video_ids(context: dg.AssetExecutionContext) -> list[int]:
    """The video ids of the run's partitions (one, or a range)."""
    return [int(k) for k in context.partition_keys]


def per_video(
    context: dg.AssetExecutionContext,
    asset_key: dg.AssetKey,
    out: ClipBatchOutcome,
    clips: Sequence[tuple[int, str]],
    common: Mapping[str, Any] | None = None,
    extra: Mapping[int, Mapping[str, Any]] | None = None,
    figures: Mapping[str, ClipFigures] | None = None,
    image_kind: str = "",
) -> Iterator[dg.AssetMaterialization]:
    """One materialization per partition of the run whose clips all succeeded.

    ``clips`` are the (video id, identifier) pairs the run worked on; ``common`` is metadata
    every partition shares (e.g. the keyframe strategy), ``extra`` per-video metadata (e.g. its
    own preview); ``figures`` the clips' frames, durations and images (``image_kind``'s size
    goes in the table), from :func:`heaters_assets.previews.clip_figures`."""
    figures = figures or {}
    by_video: dict[int, list[str]] = defaultdict(list)
    for vid, ident in clips:
        by_video[vid].append(ident)
    done = set(out.done)
    for vid in video_ids(context):
        idents = by_video.get(vid, [])
        failed = {i: out.failed[i] for i in idents if i in out.failed}
        if failed:
            context.log.warning(f"video {vid}: {len(failed)} clip(s) failed; not materialized")
            continue
        rows = [
            _row(i, i in done, out.skipped.get(i, ""), figures.get(i), image_kind) for i in idents
        ]
        mine = [figures[i] for i in idents if i in figures]
        metadata: dict[str, Any] = {
            "clips_done": sum(1 for i in idents if i in done),
            "clips_skipped": sum(1 for i in idents if i in out.skipped),
            "clips": dg.MetadataValue.table(rows[:TABLE_ROWS], schema=_SCHEMA),
            "frames": sum(f.frames for f in mine),
            "duration_s": round(sum(f.duration for f in mine), 3),
            **(common or {}),
            **((extra or {}).get(vid, {})),
        }
        yield dg.AssetMaterialization(asset_key=asset_key, partition=str(vid), metadata=metadata)


def _row(
    ident: str, done: bool, note: str, fig: ClipFigures | None, image_kind: str
) -> dg.TableRecord:
    image = fig.images.get(image_kind) if fig else None
    return dg.TableRecord(
        {
            "clip": ident,
            "result": "done" if done else "skipped",
            "frames": fig.frames if fig else 0,
            "duration_s": fig.duration if fig else 0.0,
            "image": image[1] if image else "",
            "review": fig.review if fig else "",
            "note": note,
        }
    )


def check_result(
    name: str,
    problems: Sequence[str],
    checked: int,
    what: str,
    asset: dg.AssetKey | str | None = None,
) -> dg.AssetCheckResult:
    """An asset check's result with its verdict in words (shown as the check's description in
    the UI) and the first problems listed one per line, rather than a JSON blob.

    ``what`` says what a passing item has, e.g. "have every keyframe in the store"."""
    if problems:
        verdict = f"{len(problems)} problem(s) among {checked} checked: {problems[0]}"
    else:
        verdict = f"All {checked} checked {what}."
    return dg.AssetCheckResult(
        asset_key=asset,
        check_name=name,
        passed=not problems,
        description=verdict,
        metadata={
            "verdict": verdict,
            "checked": checked,
            "problems": dg.MetadataValue.md("\n".join(f"- {p}" for p in problems[:50]) or "none"),
        },
    )
