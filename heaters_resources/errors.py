"""Typed errors of the state layer: callers (assets, CLI, review app) branch on the type."""

from __future__ import annotations


class HeatersStateError(Exception):
    """Base class: the requested change was refused and nothing was written."""


class NotFoundError(HeatersStateError):
    """The row does not exist."""


class InvalidTransitionError(HeatersStateError):
    """The row is not in a state from which this transition is allowed."""

    def __init__(
        self,
        entity: str,
        entity_id: object,
        action: str,
        state: str,
        allowed: frozenset[str] | tuple[str, ...] = (),
        reason: str = "",
    ) -> None:
        self.entity, self.entity_id, self.action, self.state = entity, entity_id, action, state
        self.allowed = tuple(sorted(allowed))
        self.reason = reason
        super().__init__(
            f"{entity} {entity_id}: cannot {action} from state {state!r}"
            + (f" (allowed from {', '.join(self.allowed)})" if self.allowed else "")
            + (f": {reason}" if reason else "")
        )


class ConflictError(HeatersStateError):
    """Another transaction holds the row (a concurrent transition): retry later or give up."""


class InvalidClipsError(HeatersStateError):
    """Clips overlap each other or an existing clip, or fall outside the video."""


class AlreadyExistsError(HeatersStateError):
    """Rows from an earlier run exist and `overwrite` was not requested."""


class MissingObjectError(HeatersStateError):
    """A row would point at an object that is not in the store."""


class DatabaseVersionError(HeatersStateError):
    """The embedded database in HEATERS_HOME was made by another PostgreSQL major version.

    PostgreSQL cannot open a data directory of another major version; starting it anyway would
    fail (or, with mismatched binaries, risk the data), so the folder is left untouched and the
    message says how to carry it over or set it aside.
    """


class RunFailedError(HeatersStateError):
    """A Dagster run that a command started (``heaters demo``) failed or its worker died; the
    message names the run's log. Its rows are left retryable (leases), so running the same
    command again resumes it."""


class ConfigError(HeatersStateError):
    """The settings do not fit together (e.g. Ray mode without shared state); nothing ran."""
