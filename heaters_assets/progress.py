"""Progress from long media work into the Dagster run log, throttled to every 10 %."""

from collections.abc import Callable

import dagster as dg


def run_log_progress(
    context: dg.OpExecutionContext | dg.AssetExecutionContext, label: str, step: float = 0.1
) -> Callable[[float, str], None]:
    last = [-1.0]

    def report(fraction: float, message: str = "") -> None:
        if fraction >= 1.0 or fraction - last[0] >= step:
            last[0] = fraction
            context.log.info(f"{label}: {fraction:.0%} {message}".rstrip())

    return report
