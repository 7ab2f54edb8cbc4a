"""Turn a set of wanted partition keys into runs over contiguous partition ranges.

A run over a range of partitions pays one process start-up (and one model load) for all of
them; a range may only contain wanted keys, so ranges follow the instance's partition order.
Shared by the sensors, the CLI and the benchmarks.
"""

from __future__ import annotations

from collections.abc import Sequence

#: Videos per keyframes / sprite run: a backfill over the library is (videos / 20) runs, each
#: paying one process start-up for the clips of 20 videos.
VIDEOS_PER_MEDIA_RUN = 20
#: Embedding runs go one at a time (dagster.yaml) and pay a model load each: bigger batches.
VIDEOS_PER_EMBEDDING_RUN = 50


def partition_ranges(
    wanted: Sequence[str], order: Sequence[str], max_per_run: int
) -> list[tuple[str, str]]:
    """Group ``wanted`` partition keys into (first, last) ranges of ``order`` (the instance's
    partition order) that contain only wanted keys, at most ``max_per_run`` each. Keys missing
    from ``order`` are ignored (add them as partitions first)."""
    if max_per_run < 1:
        raise ValueError(f"max_per_run must be >= 1, got {max_per_run}")
    want = set(wanted)
    ranges: list[tuple[str, str]] = []
    run: list[str] = []
    for key in [*order, None]:
        if key is not None and key in want and len(run) < max_per_run:
            run.append(key)
            continue
        if run:
            ranges.append((run[0], run[-1]))
        run = [key] if key is not None and key in want else []
    return ranges
