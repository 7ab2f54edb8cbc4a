"""Run requests over video partitions, shared by the sensors that start clip-level runs."""

from collections.abc import Iterable

import dagster as dg

from heaters_assets.partitions import SOURCE_VIDEOS, partition_range_tags
from heaters_resources.orchestration.ranges import partition_ranges


def video_runs(
    context: dg.SensorEvaluationContext, video_ids: Iterable[int], key: str, per_run: int
) -> tuple[list[dg.RunRequest], list[dg.AddDynamicPartitionsRequest]]:
    """Requests covering ``video_ids`` in contiguous ranges of the video partitions (at most
    ``per_run`` videos a run), and the partitions to add for videos the instance does not know
    yet (registered outside the submissions sensor). Run keys name the range, so a request
    is made once per ``key``."""
    wanted = [str(v) for v in sorted(set(video_ids))]
    order = list(context.instance.get_dynamic_partitions(SOURCE_VIDEOS))
    known = set(order)
    new = [k for k in wanted if k not in known]
    requests = []
    for first, last in partition_ranges(wanted, order + new, per_run):
        if first == last:
            requests.append(dg.RunRequest(run_key=f"{key}-{first}", partition_key=first))
        else:
            requests.append(
                dg.RunRequest(
                    run_key=f"{key}-{first}-{last}", tags=partition_range_tags(first, last)
                )
            )
    adds = [dg.AddDynamicPartitionsRequest(partitions_def_name=SOURCE_VIDEOS, partition_keys=new)]
    return requests, adds if new else []
