"""The progress callback every long-running media task accepts."""

from __future__ import annotations

from collections.abc import Callable

#: ``progress(fraction, message)``: ``fraction`` in 0..1 of the task, ``message`` a short note.
ProgressFn = Callable[[float, str], None]
