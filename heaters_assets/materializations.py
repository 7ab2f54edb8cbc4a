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

from heaters_resources.steps import ClipBatchOutcome

#: Rows of the per-partition clip table (a video with more clips lists the first ones).
TABLE_ROWS = 500

_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("clip", "string"),
        dg.TableColumn("result", "string"),
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
) -> Iterator[dg.AssetMaterialization]:
    """One materialization per partition of the run whose clips all succeeded.

    ``clips`` are the (video id, identifier) pairs the run worked on; ``common`` is metadata
    every partition shares (e.g. the keyframe strategy), ``extra`` per-video metadata (e.g. its
    own preview)."""
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
            dg.TableRecord(
                {
                    "clip": i,
                    "result": "done" if i in done else "skipped",
                    "note": out.skipped.get(i, ""),
                }
            )
            for i in idents[:TABLE_ROWS]
        ]
        metadata: dict[str, Any] = {
            "clips_done": sum(1 for i in idents if i in done),
            "clips_skipped": sum(1 for i in idents if i in out.skipped),
            "clips": dg.MetadataValue.table(rows, schema=_SCHEMA),
            **(common or {}),
            **((extra or {}).get(vid, {})),
        }
        yield dg.AssetMaterialization(asset_key=asset_key, partition=str(vid), metadata=metadata)
