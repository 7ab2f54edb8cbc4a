"""Result objects shared by the media tasks: plain dataclasses that serialize to JSON."""

from __future__ import annotations

import dataclasses
from typing import Any


class Result:
    """Mixin: ``to_dict`` gives the JSON-ready form printed by the CLI."""

    def to_dict(self) -> dict[str, Any]:
        if not dataclasses.is_dataclass(self) or isinstance(self, type):
            raise TypeError("asdict() should be called on dataclass instances")
        data = dataclasses.asdict(self)
        return {"status": "success", **data}
