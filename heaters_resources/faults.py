"""Named fault points: where the crash-safety tests kill a worker with SIGKILL.

`point("splice:before-commit")` does nothing unless the environment variable
``HEATERS_FAULT_POINT`` names that point; then the process kills itself with SIGKILL, exactly
what `kill -9`, the OOM killer or a lost node do: no ``except``, no ``finally``, no atexit.
The tests (tests/faults) set the variable for one run, then make the user's natural retry
without it and check that nothing is stuck, duplicated or left behind. One environment lookup
per call (Settings.from_env): negligible next to a step.

``HEATERS_FAULT_POINT=name`` kills at the first pass through ``name``; ``name#n`` at the n-th
(counted per process), so a kill can land between two uploads of a batch. ``name!postgres``
kills the embedded PostgreSQL server there instead (SIGKILL to its postmaster: a database
crash mid-step; the worker carries on into the outage).
"""

from __future__ import annotations

import os
import signal

from heaters_resources.settings import Settings

_passes: dict[str, int] = {}


def point(name: str) -> None:
    spec = Settings.from_env().fault_point
    if not spec:
        return
    spec, _, action = spec.partition("!")
    target, _, nth = spec.partition("#")
    if target != name:
        return
    _passes[name] = _passes.get(name, 0) + 1
    if _passes[name] != (int(nth) if nth.isdigit() else 1):
        return
    if action == "postgres":
        from heaters_resources.db.embedded_pg import running_server

        server = running_server(Settings.from_env().home)
        if server is not None:
            os.kill(server.pid, signal.SIGKILL)
        return
    os.kill(os.getpid(), signal.SIGKILL)
