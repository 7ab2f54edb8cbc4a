"""Status of the Dagster runs that carry out review actions, for the progress panel.

Optional by design: the review app sits on heaters_resources and must work without a Dagster
instance (ARCHITECTURE.md, "Layers"). Runs are found by the `heaters/review_event` tag that the
review-action sensor puts on them; the instance is only read.
"""

from __future__ import annotations

import os
from typing import Any

from heaters_resources.orchestration.names import REVIEW_EVENT_TAG
from heaters_resources.review.queries import RunLookup


def dagster_run_lookup(instance: Any = None) -> RunLookup | None:
    """event id -> (run id, status), reading `instance` or the one DAGSTER_HOME points at.

    Returns None (no run status on the page) when there is no instance or it cannot be opened.
    """
    try:
        import dagster as dg

        inst = instance
        if inst is None:
            if not os.environ.get("DAGSTER_HOME"):
                return None
            inst = dg.DagsterInstance.get()
    except Exception:
        return None

    def lookup(event_id: int) -> tuple[str, str] | None:
        try:
            runs = inst.get_runs(
                filters=dg.RunsFilter(tags={REVIEW_EVENT_TAG: str(event_id)}), limit=1
            )
        except Exception:
            return None
        if not runs:
            return None
        return str(runs[0].run_id), str(runs[0].status.value)

    return lookup
